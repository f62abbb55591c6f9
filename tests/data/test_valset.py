"""Validation-folder layouts for the held-out control (dejavu.data.valset), built from the
synthetic generator's val split (class folders + Annotation/<wnid>/ boxes)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dejavu import DejavuError
from dejavu.data.annotations import read_voc_xml
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.data.valset import alternate_halves, scan_valset


def _expected(synth_small):
    """(relative image name, wnid) of every annotated val image, from the generator's files."""
    out = []
    for xml in sorted((synth_small / "val_bboxes" / "Annotation").rglob("*.xml")):
        out.append((xml.stem, xml.parent.name))
    return out


def test_sorted_layout_with_annotation_tree(synth_small):
    classes = scan_imagefolder(synth_small / "train").classes
    vs = scan_valset(synth_small / "val", synth_small / "val_bboxes", classes)
    exp = _expected(synth_small)
    assert vs.layout == "sorted" and len(vs.index.relpaths) == len(exp)
    got = {(r.rsplit("/", 1)[-1].rsplit(".", 1)[0], classes[t]) for r, t in zip(vs.index.relpaths, vs.index.targets)}
    assert got == set(exp)
    assert np.all(np.diff(vs.index.targets) >= 0)  # class-contiguous
    for i in (0, len(exp) - 1):
        assert vs.index.path(i).is_file() and vs.ann_path(i).stem == vs.index.stems[i]
    h = vs.halves()
    assert not set(h["A"]) & set(h["B"]) and len(h["A"]) + len(h["B"]) == len(exp)
    for c in range(10):  # alternate within each class: sizes differ by at most one
        na, nb = (int((vs.index.targets[h[y]] == c).sum()) for y in "AB")
        assert 0 <= na - nb <= 1


def test_flat_ilsvrc_layout(synth_small, tmp_path):
    """ILSVRC2012 val as extracted: flat images, flat <stem>.xml in the same folder; the class
    comes from <object><name>. Unannotated images are left out."""
    classes = scan_imagefolder(synth_small / "train").classes
    flat = tmp_path / "val"
    flat.mkdir()
    names = {}
    for k, img in enumerate(sorted((synth_small / "val").rglob("*.JPEG"))):
        stem = f"ILSVRC2012_val_{k:08d}"
        shutil.copy(img, flat / f"{stem}.JPEG")
        xml = synth_small / "val_bboxes" / "Annotation" / img.parent.name / f"{img.stem}.xml"
        if xml.is_file():
            shutil.copy(xml, flat / f"{stem}.xml")
            names[stem] = img.parent.name
    vs = scan_valset(flat, None, classes)
    assert vs.layout == "flat" and len(vs.index.relpaths) == len(names)
    for rel, t, ap in zip(vs.index.relpaths, vs.index.targets, vs.ann_paths):
        stem = rel.rsplit(".", 1)[0]
        assert classes[t] == names[stem] == read_voc_xml(ap).names[0]
    # boxes in a separate flat folder work too
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    for x in flat.glob("*.xml"):
        shutil.move(x, boxes / x.name)
    assert scan_valset(flat, boxes, classes).index.relpaths == vs.index.relpaths
    with pytest.raises(DejavuError, match="no validation image has a box file"):
        scan_valset(flat, None, classes)


def test_layout_errors(synth_small, tmp_path):
    classes = scan_imagefolder(synth_small / "train").classes
    with pytest.raises(DejavuError, match="validation image folder not found"):
        scan_valset(tmp_path / "nope", None, classes)
    with pytest.raises(DejavuError, match="not a class of the training set"):
        scan_valset(synth_small / "val", synth_small / "val_bboxes", classes[:5])
    # a box file naming another class than its folder
    bad = tmp_path / "val"
    shutil.copytree(synth_small / "val", bad)
    shutil.copytree(synth_small / "val_bboxes", tmp_path / "vb")
    xml = min((tmp_path / "vb" / "Annotation" / classes[0]).glob("*.xml"))
    xml.write_text(xml.read_text().replace(f"<name>{classes[0]}</name>", f"<name>{classes[1]}</name>"))
    with pytest.raises(DejavuError, match=f"names class {classes[1]} but the image is in folder {classes[0]}"):
        scan_valset(bad, tmp_path / "vb", classes)


def test_alternate_halves():
    targets = np.array([0, 0, 0, 1, 1, 2])
    h = alternate_halves(np.arange(6), targets)
    assert h["A"].tolist() == [0, 2, 3, 5] and h["B"].tolist() == [1, 4]
