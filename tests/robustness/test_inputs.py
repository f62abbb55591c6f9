"""Bad inputs: odd or broken images, hostile or broken XML, bad boxes, odd folders, foreign
or out-of-range index files. Each either works (odd but valid), is counted and reported
(the protocol skips it), or stops with one line naming the file and the problem."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from robustness_cli import assert_one_line_error, attack_args, attack_inprocess, run_cli

from dejavu import DejavuError
from dejavu.attack.run import AttackConfig, compute_crops
from dejavu.data.annotations import AnnotationError, read_voc_xml, voc_xml_string
from dejavu.data.dataset import load_rgb
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import load_index_file, partition


def _first_image(data: Path) -> Path:
    return min((data / "train").rglob("*.JPEG"))


# ------------------------------------------------------------------ images


def test_cmyk_grayscale_and_png_named_jpeg_decode_to_rgb(tmp_path):
    rgb = Image.new("RGB", (40, 30), (200, 30, 60))
    cases = {
        "cmyk.JPEG": ("CMYK", "JPEG"),
        "gray.JPEG": ("L", "JPEG"),
        "png.JPEG": ("RGBA", "PNG"),
        "pal.JPEG": ("P", "PNG"),
    }
    for name, (mode, fmt) in cases.items():
        rgb.convert(mode).save(tmp_path / name, format=fmt)
        im = load_rgb(tmp_path / name)
        assert im.mode == "RGB" and im.size == (40, 30), name
    assert Image.open(tmp_path / "cmyk.JPEG").mode == "CMYK"  # really a CMYK file
    r, g, b = np.asarray(load_rgb(tmp_path / "cmyk.JPEG")).reshape(-1, 3).mean(0)
    assert r > 150 and g < 90 and b < 110  # colours survive the conversion
    g1 = np.asarray(load_rgb(tmp_path / "gray.JPEG"))
    assert np.array_equal(g1[..., 0], g1[..., 1])


def test_odd_images_work_through_the_attack(corpus, data_copy, tmp_path):
    """A CMYK, a grayscale and a PNG-named-.JPEG image in the public set: the attack runs."""
    from dejavu.partition import Partition

    index = scan_imagefolder(data_copy / "train")
    pub = Partition.load(corpus / "part").attack_public()[:3]
    for g, mode in zip(pub, ("CMYK", "L", "PNG")):
        p = index.path(int(g))
        im = Image.open(p).convert("RGB")
        if mode == "PNG":
            im.save(p, format="PNG")
        else:
            im.convert(mode).save(p, format="JPEG")
    res = attack_inprocess(corpus, tmp_path / "att", data_copy)
    assert res.counts["public"] == len(Partition.load(corpus / "part").attack_public())


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty"])
def test_broken_image_is_named(tmp_path, damage):
    src = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(src, format="JPEG")
    data = src.getvalue()
    p = tmp_path / "n0_1.JPEG"
    p.write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "corrupt": data[:20] + os.urandom(len(data) - 20)}[damage]
    )
    with pytest.raises(DejavuError, match=rf"{p}: cannot decode image"):
        load_rgb(p)


def test_truncated_image_stops_the_attack_with_one_line(corpus, data_copy, tmp_path):
    from dejavu.partition import Partition

    index = scan_imagefolder(data_copy / "train")
    p = index.path(int(Partition.load(corpus / "part").attack_public()[0]))
    p.write_bytes(p.read_bytes()[:200])
    proc = run_cli(*attack_args(corpus, tmp_path / "att", data=data_copy))
    assert_one_line_error(proc, str(p), "cannot decode image")
    assert not (tmp_path / "att" / "results.json").exists()


def test_corrupt_image_stops_training_naming_it(corpus, data_copy, tmp_path):
    from dejavu.ssl.config import load_train_config
    from dejavu.ssl.train import train

    index = scan_imagefolder(data_copy / "train")
    tr = np.load(corpus / "part" / "4_per_class" / "train_A.npy")
    p = index.path(int(tr[2]))
    p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cfg = load_train_config(None, ["epochs=1", "projector=16-16", "knn_every=0", "warmup_epochs=0"], method="vicreg")
    with pytest.raises(DejavuError, match=rf"{p}: cannot decode image"):
        train(
            cfg,
            DataPaths.resolve(data=data_copy),
            corpus / "part" / "4_per_class" / "train_A.npy",
            tmp_path / "run",
            device="cpu",
        )


# ------------------------------------------------------------------ XML


@pytest.mark.parametrize(
    "content,what",
    [
        (None, "annotation file not found"),
        ("", "malformed XML"),
        ("<annotation><object>", "malformed XML"),
        ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "without <ymin>"),
        (
            (
                "<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
                "</bndbox></object></annotation>"
            ),
            "not a number",
        ),
    ],
)
def test_missing_empty_malformed_xml(tmp_path, content, what):
    p = tmp_path / "a.xml"
    if content is not None:
        p.write_text(content)
    with pytest.raises(AnnotationError, match=rf"^{p}: .*{what}") as e:
        read_voc_xml(p)
    assert "\n" not in str(e.value)


BILLION_LAUGHS = (
    """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">"""
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + """]>
<annotation><filename>&lol9;</filename></annotation>"""
)


def test_billion_laughs_refused_quickly(tmp_path):
    p = tmp_path / "bomb.xml"
    p.write_text(BILLION_LAUGHS)
    t0 = time.perf_counter()
    with pytest.raises(AnnotationError, match=rf"{p}: refused unsafe XML"):
        read_voc_xml(p)
    assert time.perf_counter() - t0 < 1.0


def test_external_entity_refused_without_reading_the_target(tmp_path):
    """The entity points to a FIFO: opening it would block, so a parse that returns at once
    proves the target was never opened."""
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    p = tmp_path / "xxe.xml"
    p.write_text(
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{fifo}">]>'
        "<annotation><filename>&x;</filename></annotation>"
    )
    box: dict = {}

    def parse():
        try:
            read_voc_xml(p)
        except AnnotationError as e:
            box["err"] = str(e)

    t = threading.Thread(target=parse, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # unblock the reader before failing
        with open(fifo, "w"):
            pass
        pytest.fail("the parser opened the external entity's target")
    assert box["err"].startswith(f"{p}: refused unsafe XML")


def _crop_setup(tmp_path, boxes_by_image: dict[int, str | list[tuple[int, int, int, int]]]):
    """One class of 32x32 images; annotation text or boxes per image."""
    root = tmp_path / "d"
    (root / "train" / "n0").mkdir(parents=True)
    (root / "bboxes" / "n0").mkdir(parents=True)
    for i, spec in boxes_by_image.items():
        Image.new("RGB", (32, 32), (i * 20, 50, 50)).save(root / "train" / "n0" / f"n0_{i}.JPEG")
        xml = spec if isinstance(spec, str) else voc_xml_string(f"n0_{i}", "n0", 32, 32, spec, "n0")
        (root / "bboxes" / "n0" / f"n0_{i}.xml").write_text(xml)
    index = scan_imagefolder(root / "train")
    return index, root / "bboxes"


def test_bad_boxes_and_unattackable_images_are_counted(tmp_path):
    inverted = voc_xml_string("n0_2", "n0", 32, 32, [(20, 0, 10, 10)], "n0")
    index, ann = _crop_setup(
        tmp_path,
        {
            0: [(0, 0, 16, 32)],  # fine: right half is free
            1: [(40, 40, 60, 60)],  # entirely outside the image
            2: inverted,  # xmin > xmax
            3: [(0, 0, 32, 32)],  # covers everything: no attackable crop
            4: [(-10, 0, 16, 40)],  # partly outside: clipped, still attackable
            5: "<annotation><object>",  # malformed
        },
    )
    sc = compute_crops(index, ann, np.arange(6), AttackConfig(), min_crop_px=8)
    c = sc.counts
    assert list(sc.indices) == [0, 4]
    assert c["attacked"] == 2 and c["unattackable"] == 4
    assert c["boxes_outside_image"] == 1 and c["boxes_clipped"] == 1
    assert c["too_small"] == 1 and c["no_boxes"] == 1 and c["annotation_errors"] == 3
    text = "\n".join(sc.errors)
    assert "n0_1.xml: 1 box(es) outside the 32x32 image" in text
    assert "n0_2.xml: inverted box" in text and "n0_5.xml: malformed XML" in text


def test_attack_reports_skips_in_results(corpus, data_copy, tmp_path):
    """Damaged annotations of attacked images are counted in results.json, not fatal."""
    import json

    index = scan_imagefolder(data_copy / "train")
    bbox_a = np.load(corpus / "part" / "4_per_class" / "bbox_A.npy")
    from dejavu.data.imagefolder import annotation_path

    ann_dir = DataPaths.resolve(data=data_copy).annotation_dir
    annotation_path(index, ann_dir, int(bbox_a[0])).write_text(BILLION_LAUGHS)
    annotation_path(index, ann_dir, int(bbox_a[1])).write_text("<annotation>")
    attack_inprocess(corpus, tmp_path / "att", data_copy)
    res = json.loads((tmp_path / "att" / "results.json").read_text())
    assert res["counts"]["A"]["annotation_errors"] == 2
    assert res["counts"]["A"]["attacked"] == len(bbox_a) - 2
    assert any("refused unsafe XML" in e for e in res["annotation_error_examples"]["A"])


# ------------------------------------------------------------------ folders and index files


def test_empty_class_directory_refused(data_copy):
    (data_copy / "train" / "n99999999").mkdir()
    proc = run_cli("partition", "--data", data_copy, "--per-class", "4", "--out", data_copy.parent / "p")
    assert_one_line_error(proc, str(data_copy / "train" / "n99999999"), "holds no image")
    assert not (data_copy.parent / "p").exists()


def test_class_without_annotations_is_reported(data_copy, tmp_path):
    import shutil

    ann = DataPaths.resolve(data=data_copy).annotation_dir
    first = min(ann.iterdir())
    shutil.rmtree(first)
    res = partition(DataPaths.resolve(data=data_copy), [4], tmp_path / "p")
    c = scan_imagefolder(data_copy / "train").classes.index(first.name)
    sp = res.splits[4]
    assert sp.bbox_limited == 1
    targets = scan_imagefolder(data_copy / "train").targets
    assert not np.any(targets[sp.sets["bbox_A"]] == c)
    assert np.sum(targets[sp.sets["train_A"]] == c) == 4  # all shared, unannotated
    assert res.manifest["bbox_limited_classes"]["4"] == 1


def test_index_file_of_another_dataset(corpus, tmp_path):
    from dejavu.data.synth import SynthConfig, generate

    generate(
        tmp_path / "other", SynthConfig(classes=3, per_class=8, size=32, annotated_fraction=0.5, seed=1), force=True
    )
    partition(DataPaths.resolve(data=tmp_path / "other"), [2], tmp_path / "p", force=True)
    f = tmp_path / "p" / "2_per_class" / "train_A.npy"
    index = scan_imagefolder(corpus / "data" / "train")
    with pytest.raises(DejavuError, match=rf"index file {f} was made on dataset \w+ .* this dataset is \w+"):
        load_index_file(f, index)


def test_index_out_of_range(corpus, tmp_path):
    from dejavu.io import atomic_save_npy

    f = tmp_path / "idx.npy"
    atomic_save_npy(f, np.array([0, 5, 10_000]))
    index = scan_imagefolder(corpus / "data" / "train")
    with pytest.raises(DejavuError, match=rf"{f}: index 10000 out of range for a dataset of 64 images"):
        load_index_file(f, index)
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DejavuError, match=rf"{f}: not a plain numpy array"):
        load_index_file(f, index)
