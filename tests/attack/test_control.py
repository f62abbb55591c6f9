"""The held-out control of an attack: the partition's control and annotated
validation images, attacked with the same models; results.json "control" block and files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dejavu.analysis.metrics import ARRAYS, scores_from_neighbours
from dejavu.analysis.significance import excess
from dejavu.analysis.summary import compute_all
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import partition

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint


@pytest.fixture(scope="module")
def setup(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("ctrl")
    idx = scan_imagefolder(synth_small / "train")
    partition(DataPaths.resolve(data=synth_small), [10], d / "part", control=4)
    a = make_checkpoint(d / "a.pth", idx, "A", 10, seed=1)
    b = make_checkpoint(d / "b.pth", idx, "B", 10, seed=2)
    return d, a, b


def _args(synth_small, d, a, b, out, *extra):
    return [
        "attack",
        "--model-a",
        str(a),
        "--model-b",
        str(b),
        "--partition",
        str(d / "part"),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(out),
        "--k",
        "20",
        "--k-attk",
        "10",
        "--bootstrap",
        "100",
        *extra,
    ]


def _control_pairs(out: Path, k: int = 10):
    pairs = {}
    for name in ARRAYS:
        ld = {key: np.load(out / f"control_{name}_{key}.npy") for key in ("attk_idxs", "labels", "neighb_labels")}
        pairs[name] = scores_from_neighbours(ld["neighb_labels"], ld["labels"][:, 0], ld["attk_idxs"], k, 10)
    return pairs


def test_partition_control_by_default(synth_small, setup, capsys):
    d, a, b = setup
    out = d / "att"
    assert main(_args(synth_small, d, a, b, out)) == 0  # --control auto: the partition has one
    printed = capsys.readouterr().out
    assert "held-out control (partition)" in printed and "verdict (top-1, 20%)" in printed
    res = json.loads((out / "results.json").read_text())
    c = res["control"]
    assert c["source"]["kind"] == "partition"
    ctrl_a, ctrl_b = np.load(d / "part" / "control_A.npy"), np.load(d / "part" / "control_B.npy")
    public = np.load(out / "public_idxs.npy")
    assert not set(public) & (set(ctrl_a) | set(ctrl_b))
    # files: the control halves attacked by both models, rows aligned between the models
    for y, half in (("A", ctrl_a), ("B", ctrl_b)):
        ia, ib = (np.load(out / f"control_{x}_attk_{y}_attk_idxs.npy") for x in "AB")
        assert np.array_equal(ia, ib) and set(ia) <= set(half)
        assert c["counts"][y]["bbox"] == len(half) and c["counts"][y]["attacked"] == len(ia)
        nb = np.load(out / f"control_A_attk_{y}_neighb_idxs.npy")  # dataset indices, as dejavu-attack/2
        nl = np.load(out / f"control_A_attk_{y}_neighb_labels.npy")
        idx = scan_imagefolder(synth_small / "train")
        assert nb.shape == (len(ia), 20) and set(nb.ravel()) <= set(public)
        assert np.array_equal(nl, idx.targets[nb])
        assert np.load(out / f"control_A_attk_{y}_labels.npy").shape == (len(ia), 1)
    # the stored block is recomputed from the stored arrays
    cp = _control_pairs(out)
    m = compute_all(cp, 10, n_boot=0)
    assert c["metrics"]["top1"]["dejavu_score"] == pytest.approx(m["top1"]["dejavu_score"])
    e = c["excess"]["top1"]["20"]
    assert e["score"] == pytest.approx(res["metrics"]["top1"]["dejavu_score"])
    assert e["control"] == pytest.approx(m["top1"]["dejavu_score"])
    assert e["excess"] == pytest.approx(e["score"] - e["control"]) and e["ci95"][0] <= e["excess"] <= e["ci95"][1]
    main_scores = {}
    for name in ARRAYS:
        ld = {key: np.load(out / f"{name}_{key}.npy") for key in ("attk_idxs", "labels", "neighb_labels")}
        main_scores[name] = scores_from_neighbours(
            ld["neighb_labels"], ld["labels"].reshape(-1), ld["attk_idxs"], 10, 10
        )
    again = excess(main_scores, cp, n_boot=100, seed=0)["top1"]["20"]
    assert again["ci95"] == pytest.approx(e["ci95"])


def test_validation_control_and_none(synth_small, setup, capsys):
    d, a, b = setup
    out = d / "att_val"
    assert (
        main(
            _args(
                synth_small,
                d,
                a,
                b,
                out,
                "--control",
                str(synth_small / "val"),
                "--control-bboxes",
                str(synth_small / "val_bboxes"),
            )
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["control"]["source"]["kind"] == "val" and res["control"]["source"]["layout"] == "sorted"
    n_val = len(list((synth_small / "val_bboxes").rglob("*.xml")))
    assert res["control"]["counts"]["A"]["bbox"] + res["control"]["counts"]["B"]["bbox"] == n_val
    labels = np.load(out / "control_A_attk_A_labels.npy")
    assert set(labels.ravel().tolist()) <= set(range(10))
    capsys.readouterr()
    assert main(_args(synth_small, d, a, b, d / "att_none", "--control", "none")) == 0
    assert "control" not in json.loads((d / "att_none" / "results.json").read_text())
    assert "held-out control: none" in capsys.readouterr().out


def test_control_errors(synth_small, partition_small, setup, tmp_path, capsys):
    _, a, b = setup
    args = [
        "attack",
        "--model-a",
        str(a),
        "--model-b",
        str(b),
        "--partition",
        str(partition_small),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(tmp_path / "x"),
        "--bootstrap",
        "0",
    ]
    assert main([*args, "--control", "partition"]) == 1
    assert "has no control" in capsys.readouterr().err
    assert main([*args, "--control", str(tmp_path / "missing")]) == 1
    assert "validation image folder not found" in capsys.readouterr().err


def test_analyze_rescores_the_control(synth_small, setup):
    """dejavu analyze recomputes the control block from the stored control_* arrays."""
    d, a, b = setup
    out = d / "att_an"
    assert main(_args(synth_small, d, a, b, out)) == 0
    assert main(["analyze", str(out), "--k-attk", "5", "--bootstrap", "50"]) == 0
    an = json.loads((out / "analysis_k5.json").read_text())
    cp = _control_pairs(out, k=5)
    want = compute_all(cp, 10, n_boot=0)["top1"]["dejavu_score"]
    assert an["control"]["metrics"]["top1"]["dejavu_score"] == pytest.approx(want)
    e = an["control"]["excess"]["top1"]["20"]
    assert e["score"] == pytest.approx(an["metrics"]["top1"]["dejavu_score"]) and e["control"] == pytest.approx(want)


def test_control_overlapping_training_set_refused(synth_small, setup, tmp_path, capsys):
    d, a, b = setup
    import shutil

    part = tmp_path / "part"
    shutil.copytree(d / "part", part)
    ctrl = np.load(part / "control_A.npy")
    np.save(part / "control_A.npy", np.append(ctrl, np.load(part / "10_per_class" / "train_B.npy")[0]))
    args = [
        "attack",
        "--model-a",
        str(a),
        "--model-b",
        str(b),
        "--partition",
        str(part),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(tmp_path / "x"),
        "--bootstrap",
        "0",
    ]
    assert main(args) == 1
    assert "10_per_class/train_B.npy" in capsys.readouterr().err


def test_shared_variance_from_attack_folders(synth_small, setup):
    """Two model pairs attacking the same examples: the report's interval over pairs uses the
    joint bootstrap of their stored arrays."""
    from dejavu.analysis.significance import shared_variance_from_folders
    from dejavu.report.collect import collect
    from dejavu.report.plots import significance_table

    d, a, b = setup
    idx = scan_imagefolder(synth_small / "train")
    outs = []
    for s, (ma, mb) in enumerate(
        (
            (a, b),
            (make_checkpoint(d / "a2.pth", idx, "A", 10, seed=3), make_checkpoint(d / "b2.pth", idx, "B", 10, seed=4)),
        )
    ):
        out = d / "pairs" / f"seed{s}"
        assert main(_args(synth_small, d, ma, mb, out)) == 0
        res = json.loads((out / "results.json").read_text())
        res["models"]["A"]["config"]["seed"] = s  # pairs that differ only in the training seed
        (out / "results.json").write_text(json.dumps(res))
        outs.append(out)
    sv = shared_variance_from_folders(outs, n_boot=200)
    assert sv is not None and np.isfinite(sv[("top1", "20")])
    assert shared_variance_from_folders([outs[0]]) is None
    rows = significance_table(collect([d / "pairs"]).attacks)
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]
    assert "joint bootstrap" in rows[0]["pair_level"]["example_term"]
