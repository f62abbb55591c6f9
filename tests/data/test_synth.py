import numpy as np
import pytest
from PIL import Image

from dejavu import DejavuError
from dejavu.data.annotations import read_voc_xml
from dejavu.data.imagefolder import DataPaths, annotated_mask, scan_imagefolder
from dejavu.data.synth import SynthConfig, generate, render, wnid


def test_layout(synth_small):
    assert (synth_small / "classes.txt").read_text().splitlines()[0].startswith(wnid(0) + " ")
    idx = scan_imagefolder(synth_small / "train")
    assert len(idx.classes) == 10 and len(idx) == 600
    assert idx.relpaths[0].startswith(f"{wnid(0)}/{wnid(0)}_") and idx.relpaths[0].endswith(".JPEG")
    assert (synth_small / "val" / wnid(3)).is_dir()
    assert len(list((synth_small / "val_bboxes" / "Annotation" / wnid(3)).glob("*.xml"))) == 4
    with Image.open(idx.path(0)) as im:
        assert im.size == (32, 32) and im.format == "JPEG"


def test_annotated_fraction(synth_small):
    paths = DataPaths.resolve(data=synth_small)
    idx = scan_imagefolder(paths.images)
    m = annotated_mask(idx, paths.annotation_dir)
    per_class = np.bincount(idx.targets[m], minlength=10)
    assert (per_class == 24).all()
    # annotated images are spread through the class, not its first files
    first = idx.class_slices[0]
    assert 0 < m[first][:30].sum() < 24


@pytest.mark.parametrize("c", range(10))
def test_box_is_tight(c):
    """The box is exactly the bounding box of the pixels the object changes."""
    cfg = SynthConfig(size=48, noise=0.0)
    for i in range(5):
        img, (x0, y0, x1, y1) = render(cfg, c, np.random.default_rng([7, c, i]))
        bg, box2 = render(cfg, c, np.random.default_rng([7, c, i]), draw_object=False)
        assert box2 == (x0, y0, x1, y1)
        ys, xs = np.nonzero((img != bg).any(axis=2))
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        area = (x1 - x0) * (y1 - y0) / 48**2
        assert 0.2 < area < 0.45
        assert x0 == 0 or y0 == 0 or x1 == 48 or y1 == 48  # flush with one side


def test_xml_matches_render(synth_small):
    paths = DataPaths.resolve(data=synth_small)
    idx = scan_imagefolder(paths.images)
    m = annotated_mask(idx, paths.annotation_dir)
    i = int(np.nonzero(m)[0][3])
    a = read_voc_xml(paths.annotation_dir / idx.classes[idx.targets[i]] / f"{idx.stems[i]}.xml")
    assert a.boxes.shape == (1, 4) and (a.width, a.height) == (32, 32)
    n = int(idx.stems[i].rsplit("_", 1)[1])
    c = int(idx.targets[i])
    _, box = render(
        SynthConfig(classes=10, per_class=60, size=32, val_per_class=10), c, np.random.default_rng([0, 0, c, n])
    )
    np.testing.assert_array_equal(a.boxes[0], box)


def test_deterministic_and_worker_independent(tmp_path):
    cfg = SynthConfig(classes=3, per_class=6, size=24, seed=5)
    a = generate(tmp_path / "a", cfg)
    b = generate(tmp_path / "b", cfg, workers=2)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for rel in fa:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    c = generate(tmp_path / "c", SynthConfig(classes=3, per_class=6, size=24, seed=6))
    assert (c / fa[0]).read_bytes() != (a / fa[0]).read_bytes() or fa[0].suffix != ".JPEG"


def test_refuses_overwrite(tmp_path):
    cfg = SynthConfig(classes=2, per_class=2, size=16)
    generate(tmp_path / "d", cfg)
    with pytest.raises(DejavuError, match="--force"):
        generate(tmp_path / "d", cfg)
    generate(tmp_path / "d", cfg, force=True)
    with pytest.raises(DejavuError, match="classes"):
        generate(tmp_path / "e", SynthConfig(classes=1))
