"""Reconstruction on a real small run (trained SSL pair -> attack -> tiny RCDMs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dejavu import DejavuError


def test_reconstruct_writes_grids_and_tensors(rcdm_run, tmp_path):
    from dejavu.io import load_npy
    from dejavu.rcdm.reconstruct import load_examples, reconstruct

    att = rcdm_run["attack"]
    ex = load_examples(att)
    pick = [next(r for r in ex if r["set"] == "A"), next(r for r in ex if r["set"] == "B")]
    sel = f"{pick[0]['index']},{pick[1]['index']}"
    res = reconstruct(att, rcdm_run["rcdm"]["A"], rcdm_run["rcdm"]["B"], sel, tmp_path / "out", samples=3, ddim_steps=4)
    assert [it.index for it in res.items] == [pick[0]["index"], pick[1]["index"]]
    public = np.load(att / "public_idxs.npy")
    for it, row in zip(res.items, pick):
        y, other = row["set"], "B" if row["set"] == "A" else "A"
        with Image.open(it.png) as im:
            assert im.format == "PNG" and im.size[0] > 300
        sub = tmp_path / "out" / f"{y}_{it.index}"
        t, c = load_npy(sub / "samples_target.npy"), load_npy(sub / "samples_control.npy")
        assert t.shape == c.shape == (3, 32, 32, 3) and t.dtype == np.uint8
        assert not np.array_equal(t, c)  # same noise, different model and representation
        # neighbours are the attack's: first 5 of X_attk_Y for the target (X = Y) and the control
        for role, x in (("target", y), ("control", other)):
            attk = np.load(att / f"{x}_attk_{y}_attk_idxs.npy")
            nb = np.load(att / f"{x}_attk_{y}_neighb_idxs.npy")[np.nonzero(attk == it.index)[0][0], :5]
            assert it.neighbours[role] == nb.tolist() and set(nb) <= set(public)  # dataset indices
        # the crop is the attack's crop
        crops = np.load(att / f"crops_{y}.npy")
        attk_y = np.load(att / f"{y}_attk_{y}_attk_idxs.npy")
        assert list(it.crop_box) == crops[np.nonzero(attk_y == it.index)[0][0]].tolist()
    assert (tmp_path / "out" / "summary.png").is_file()
    man = json.loads((tmp_path / "out" / "reconstruct.json").read_text())
    assert [r["index"] for r in man["items"]] == [it.index for it in res.items]
    # same seed -> same images; refuses to overwrite without force
    with pytest.raises(DejavuError, match="already exists"):
        reconstruct(att, rcdm_run["rcdm"]["A"], rcdm_run["rcdm"]["B"], sel, tmp_path / "out", samples=3, ddim_steps=4)
    again = reconstruct(
        att, rcdm_run["rcdm"]["A"], rcdm_run["rcdm"]["B"], sel, tmp_path / "out", samples=3, ddim_steps=4, force=True
    )
    assert np.array_equal(again.items[0].samples_target, res.items[0].samples_target)


def test_swapped_rcdms_and_unknown_index_are_clear_errors(rcdm_run, tmp_path):
    from dejavu.rcdm.reconstruct import reconstruct

    att = rcdm_run["attack"]
    with pytest.raises(DejavuError, match="sha256 differs"):
        reconstruct(att, rcdm_run["rcdm"]["B"], rcdm_run["rcdm"]["A"], "most-confident:1", tmp_path / "o")
    with pytest.raises(DejavuError, match="not an attacked example"):
        reconstruct(att, rcdm_run["rcdm"]["A"], rcdm_run["rcdm"]["B"], "999999", tmp_path / "o")


def test_cli_reconstruct(rcdm_run, tmp_path):
    from dejavu.cli import main

    out = tmp_path / "cli"
    rc = main(
        [
            "rcdm",
            "reconstruct",
            "--attack",
            str(rcdm_run["attack"]),
            "--rcdm-a",
            str(rcdm_run["rcdm"]["A"]),
            "--rcdm-b",
            str(rcdm_run["rcdm"]["B"]),
            "--select",
            "most-confident:2",
            "--samples",
            "2",
            "--ddim-steps",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and len(list(out.glob("*_*.png"))) == 2
    assert (
        main(
            [
                "rcdm",
                "reconstruct",
                "--attack",
                str(rcdm_run["attack"]),
                "--rcdm-a",
                "x",
                "--rcdm-b",
                "y",
                "--select",
                "bogus:3",
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )


def test_selection_helpers():
    from dejavu.rcdm.reconstruct import class_summary, parse_select, select_examples

    rows = [
        {
            "set": "A",
            "index": 1,
            "label": 0,
            "quadrant": "memorized",
            "conf_target": -0.1,
            "conf_reference": -2.0,
            "correct_target": True,
            "correct_reference": False,
        },
        {
            "set": "A",
            "index": 2,
            "label": 0,
            "quadrant": "memorized",
            "conf_target": -0.5,
            "conf_reference": -0.6,
            "correct_target": True,
            "correct_reference": False,
        },
        {
            "set": "B",
            "index": 3,
            "label": 0,
            "quadrant": "correlated",
            "conf_target": -0.2,
            "conf_reference": -0.3,
            "correct_target": True,
            "correct_reference": True,
        },
        {
            "set": "B",
            "index": 4,
            "label": 1,
            "quadrant": "correlated",
            "conf_target": -0.1,
            "conf_reference": -1.0,
            "correct_target": True,
            "correct_reference": True,
        },
        {
            "set": "B",
            "index": 5,
            "label": 1,
            "quadrant": "unassociated",
            "conf_target": 0.0,
            "conf_reference": 0.0,
            "correct_target": False,
            "correct_reference": False,
        },
    ]
    assert [r["index"] for r in select_examples(rows, "most-memorized", 5)] == [1, 2]
    assert [r["index"] for r in select_examples(rows, "most-correlated", 5)] == [3, 4]  # by min(conf)
    assert [r["index"] for r in select_examples(rows, "most-confident", 2)] == [1, 4]  # tie by index
    assert [r["index"] for r in select_examples(rows, "most-correlated", 5, label=1)] == [4]
    assert parse_select("most-memorized:10") == ("most-memorized", 10)
    assert parse_select("3, 7") == [3, 7]
    for bad in ("most-memorized:0", "best:3", "a,b", ","):
        with pytest.raises(DejavuError):
            parse_select(bad)
    summ = class_summary(rows)
    assert summ[0]["label"] == 0 and summ[0]["memorized"] == pytest.approx(2 / 3)
    assert summ[0]["both"] == pytest.approx(1 / 3) and summ[1]["both"] == 0.0
