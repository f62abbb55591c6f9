import numpy as np
import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS as TV_EXT
from torchvision.datasets.folder import make_dataset

from dejavu import DejavuError
from dejavu.data.imagefolder import IMG_EXTENSIONS, DataPaths, annotated_mask, scan_imagefolder


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")


def test_order_matches_torchvision(tmp_path):
    root = tmp_path / "train"
    names = ["b_10.JPEG", "b_2.JPEG", "b_1.jpeg", "x.txt", "b_3.PNG", "sub/z_1.jpg", "a_9.webp"]
    for c in ["n2", "n10", "n1"]:
        for n in names:
            _touch(root / c / n)
    idx = scan_imagefolder(root)
    classes = sorted(["n2", "n10", "n1"])
    ref = make_dataset(str(root), {c: i for i, c in enumerate(classes)}, extensions=TV_EXT)
    assert idx.classes == classes
    assert [str(idx.path(i)) for i in range(len(idx))] == [p for p, _ in ref]
    assert idx.targets.tolist() == [t for _, t in ref]
    assert set(IMG_EXTENSIONS) == set(TV_EXT)


def test_fingerprint_changes_with_files(tmp_path):
    root = tmp_path / "train"
    _touch(root / "a" / "a_1.JPEG")
    _touch(root / "b" / "b_1.JPEG")
    f1 = scan_imagefolder(root).fingerprint
    assert scan_imagefolder(root).fingerprint == f1  # stable
    _touch(root / "b" / "b_2.JPEG")
    f2 = scan_imagefolder(root).fingerprint
    assert f2.id != f1.id
    with pytest.raises(DejavuError, match=f1.id):
        f2.check(f1.to_dict())


def test_empty_and_missing(tmp_path):
    with pytest.raises(DejavuError, match="not found"):
        scan_imagefolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DejavuError, match="no class folders"):
        scan_imagefolder(tmp_path / "empty")


def test_annotated_mask_and_paths(synth_small):
    paths = DataPaths.resolve(data=synth_small)
    idx = scan_imagefolder(paths.images)
    m = annotated_mask(idx, paths.annotation_dir)
    for i in np.nonzero(m)[0][:5]:
        assert (paths.annotation_dir / idx.classes[idx.targets[i]] / f"{idx.stems[i]}.xml").is_file()
    assert m.sum() == 10 * 24
    with pytest.raises(DejavuError, match="bounding boxes needed"):
        DataPaths.resolve(images=paths.images, need_bboxes=True)
