"""Results that would be wrong without any error (issue 25): two writers in one attack
folder, NaN box coordinates, models of another partition, non-finite weights and
embeddings, a dataset walk that lists an image twice, 16-bit images. Each is refused
with one line naming the file and the problem, or decoded correctly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from robustness_cli import CHILD, assert_one_line_error, attack_args, child_env, run_cli

from dejavu.io import LOCK_NAME

# ------------------------------------------------------------------ 1. one writer per attack folder


def _wait_for(path, proc, timeout=120.0):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the first attack ended before the pause point: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            pytest.fail("the first attack never reached the pause point")
        time.sleep(0.05)


def test_two_attacks_into_one_folder_at_once(corpus, tmp_path):
    """The first attack is paused in the middle of writing its arrays; a second attack into
    the same --out (with and without --force) is refused, naming the first; the first then
    ends normally and leaves no lock behind."""
    out, flag = tmp_path / "att", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, str(CHILD), *attack_args(corpus, out)],
        env=child_env(DEJAVU_TEST_HOLD_AT=f"crops_A.npy:{flag}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(tmp_path / "go.reached", first)
        assert (out / LOCK_NAME).exists()
        for extra in ([], ["--force"]):
            second = run_cli(*attack_args(corpus, out), *extra)
            assert_one_line_error(second, str(out), "in use by another dejavu process", f"pid {first.pid}", "attack")
        assert not (out / "results.json").exists()
    finally:
        flag.touch()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["counts"]["public"] > 0 and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ 2. non-finite numbers in annotations

BOX_XML = (
    "<annotation><size><width>{w}</width><height>32</height></size><object><name>n0</name><bndbox>"
    "<xmin>8</xmin><ymin>0</ymin><xmax>{x1}</xmax><ymax>32</ymax></bndbox></object></annotation>"
)


@pytest.mark.parametrize("x1", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_non_finite_box_coordinate_is_an_annotation_error(tmp_path, x1):
    """A NaN xmax passed every box test and the 'background' crop held the object."""
    from test_inputs import _crop_setup

    from dejavu.attack.run import AttackConfig, compute_crops

    index, ann = _crop_setup(tmp_path, {0: BOX_XML.format(w=32, x1=x1), 1: [(8, 0, 24, 32)]})
    sc = compute_crops(index, ann, np.arange(2), AttackConfig(), min_crop_px=4)
    assert list(sc.indices) == [1] and sc.counts["annotation_errors"] == 1
    assert sc.errors == [f"{ann / 'n0' / 'n0_0.xml'}: <xmax> is not a finite number: {x1!r}"]


@pytest.mark.parametrize("w", ["nan", "inf", "-3", "1e999", "12.5"])
def test_bad_image_size_in_annotation(tmp_path, w):
    from dejavu.data.annotations import AnnotationError, read_voc_xml

    p = tmp_path / "a.xml"
    p.write_text(BOX_XML.format(w=w, x1=20))
    with pytest.raises(AnnotationError, match=rf"^{p}: <size><width> is not a whole number >= 0"):
        read_voc_xml(p)
