"""The held-out control of `dejavu audit`: a partition's control or validation
images audited by the same model and classifier, the excess over it, and the control's
images kept out of the classifier's training set and the audited set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dejavu.analysis.metrics import Comparison, Scores, scores_from_neighbours
from dejavu.analysis.significance import excess
from dejavu.analysis.summary import compute_all
from dejavu.audit.classifier import classifier_scores
from dejavu.audit.control import AUDIT_EXCESS
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import partition

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint

FAST = ["--set", "k=20", "--set", "clf_epochs=2", "--set", "n_boot=100", "--set", "clf_batch_size=16"]


@pytest.fixture(scope="module")
def setup(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit_ctrl")
    idx = scan_imagefolder(synth_small / "train")
    partition(DataPaths.resolve(data=synth_small), [10], d / "part", control=4)
    return d, make_checkpoint(d / "a.pth", idx, "A", 10, seed=3)


def _args(synth_small, d, ckpt, out, *extra):
    return [
        "audit",
        "--model",
        str(ckpt),
        "--partition",
        str(d / "part"),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def _scores(out: Path, prefix: str, res: dict):
    lab, idx = np.load(out / f"{prefix}labels.npy").reshape(-1), np.load(out / f"{prefix}attk_idxs.npy")
    t = scores_from_neighbours(
        np.load(out / f"{prefix}model_neighb_labels.npy"), lab, idx, res["config"]["k_attk"], res["num_classes"]
    )
    r = classifier_scores(np.load(out / f"{prefix}classifier_logits.npy"), lab, idx, res["config"]["confidence"])
    return t, r


def test_partition_control_audited_and_reported(synth_small, setup, capsys):
    d, ckpt = setup
    out = d / "audit"
    assert main(_args(synth_small, d, ckpt, out)) == 0  # --control auto: the partition has one
    printed = capsys.readouterr().out
    assert "held-out control (partition)" in printed and "verdict (top-1, 20%): excess over the control" in printed
    res = json.loads((out / "results.json").read_text())
    c = res["control"]
    assert c["source"]["kind"] == "partition" and c["source"]["excluded"] == {"audited": 0, "classifier_train": 0}
    control = np.load(d / "part" / "control.npy")
    cidx = np.load(out / "control_attk_idxs.npy")
    assert set(cidx) <= set(control) and c["counts"]["control"]["bbox"] == len(control) == c["source"]["images"]
    assert c["counts"]["control"]["attacked"] == len(cidx) > 20
    assert not set(cidx) & set(np.load(out / "public_idxs.npy"))
    nb = np.load(out / "control_model_neighb_idxs.npy")
    idx = scan_imagefolder(synth_small / "train")
    assert set(nb.ravel()) <= set(np.load(out / "public_idxs.npy"))
    assert np.array_equal(np.load(out / "control_model_neighb_labels.npy"), idx.targets[nb])
    assert np.array_equal(np.load(out / "control_labels.npy"), idx.targets[cidx][:, None])
    assert np.load(out / "control_classifier_logits.npy").shape == (len(cidx), 10)
    assert np.load(out / "control_crops.npy").shape == (len(cidx), 4)
    # the stored block re-scores from the stored arrays; excess = score - control
    t, r = _scores(out, "", res)
    ct, cr = _scores(out, "control_", res)
    m = compute_all([Comparison("control", ct, cr)], 10, n_boot=0)
    assert c["metrics"]["top1"]["dejavu_score"] == pytest.approx(m["top1"]["dejavu_score"])
    for top in ("top1", "top5"):
        e = c["excess"][top]["20"]
        assert e["score"] == pytest.approx(res["metrics"][top]["dejavu_score"])
        assert e["control"] == pytest.approx(c["metrics"][top]["dejavu_score"])
        assert e["excess"] == pytest.approx(e["score"] - e["control"])
    e100 = c["excess"]["top1"]["100"]
    assert e100["score"] == pytest.approx(res["metrics"]["top1"]["dejavu_score_100"])
    again = excess([Comparison("A", t, r)], [Comparison("control", ct, cr)], wording=AUDIT_EXCESS, n_boot=100, seed=0)
    assert again["top1"]["20"]["ci95"] == pytest.approx(c["excess"]["top1"]["20"]["ci95"])
    # the report reads the audit with its control block
    from dejavu.report.collect import collect

    rec = collect([d]).audits
    assert len(rec) == 1 and rec[0].excess()["excess"] == pytest.approx(c["excess"]["top1"]["20"]["excess"])


def test_classifier_on_the_control(synth_small, setup, capsys):
    """The classifier trained on control_B: control_A is the control. Trained on all of it:
    auto skips the control with a note, --control partition refuses."""
    d, ckpt = setup
    part = d / "part"
    out = d / "on_b"
    assert main(_args(synth_small, d, ckpt, out, "--train-set", str(part / "control_B.npy"))) == 0
    res = json.loads((out / "results.json").read_text())
    cb = np.load(part / "control_B.npy")
    assert res["control"]["source"]["excluded"]["classifier_train"] == len(cb)
    assert set(np.load(out / "control_attk_idxs.npy")) <= set(np.load(part / "control_A.npy"))
    assert res["control"]["counts"]["control"]["bbox"] == len(np.load(part / "control_A.npy"))
    capsys.readouterr()
    out = d / "on_all"
    assert main(_args(synth_small, d, ckpt, out, "--train-set", str(part / "control.npy"))) == 0
    res = json.loads((out / "results.json").read_text())
    assert "control" not in res and "classifier's training set" in res["control_skipped"]
    assert "held-out control: none" in capsys.readouterr().out
    assert not list(out.glob("control_*.npy"))
    assert (
        main(
            _args(
                synth_small, d, ckpt, d / "on_all_p", "--train-set", str(part / "control.npy"), "--control", "partition"
            )
        )
        == 1
    )
    assert "control_B.npy" in capsys.readouterr().err
    assert not (d / "on_all_p" / "results.json").exists()


def test_audited_control_images_excluded(synth_small, setup):
    """Auditing control_A: the audited images leave the control (control_B remains)."""
    d, ckpt = setup
    part = d / "part"
    out = d / "audit_ca"
    assert main(_args(synth_small, d, ckpt, out, "--audit-set", str(part / "control_A.npy"))) == 0
    res = json.loads((out / "results.json").read_text())
    ca = np.load(part / "control_A.npy")
    assert res["control"]["source"]["excluded"]["audited"] == len(ca)
    assert not set(np.load(out / "control_attk_idxs.npy")) & set(np.load(out / "attk_idxs.npy"))


def test_validation_control_and_released_checkpoint(synth_small, setup):
    d, _ = setup
    idx = scan_imagefolder(synth_small / "train")
    released = make_checkpoint(d / "released.pth", idx, None, 10, seed=4)  # records no training set
    out = d / "rel"
    assert main(_args(synth_small, d, released, out)) == 0
    res = json.loads((out / "results.json").read_text())
    assert "control" not in res and "--control VAL_DIR" in res["control_skipped"]
    out = d / "rel_val"
    assert (
        main(
            _args(
                synth_small,
                d,
                released,
                out,
                "--control",
                str(synth_small / "val"),
                "--control-bboxes",
                str(synth_small / "val_bboxes"),
            )
        )
        == 0
    )
    c = json.loads((out / "results.json").read_text())["control"]
    n_val = len(list((synth_small / "val_bboxes").rglob("*.xml")))
    assert c["source"]["kind"] == "val" and c["counts"]["control"]["bbox"] == n_val
    assert set(np.load(out / "control_labels.npy").ravel().tolist()) <= set(range(10))
    assert c["excess"]["top1"]["20"]["excess"] == pytest.approx(
        c["excess"]["top1"]["20"]["score"] - c["excess"]["top1"]["20"]["control"]
    )


def _scores_of(correct: np.ndarray, conf: np.ndarray, offset: int = 0) -> Scores:
    n = len(correct)
    labels = np.zeros(n, np.int64)
    pred = np.where(correct > 0, 0, 1)
    return Scores(
        index=np.arange(offset, offset + n),
        labels=labels,
        pred=pred,
        conf=conf,
        correct1=correct.astype(np.float64),
        correct5=correct.astype(np.float64),
    )


def test_one_model_excess_statistics():
    """No difference between the sets: excess 0 and an interval around it; a model right on
    every audited crop where the classifier is wrong: an excess excluded from 0."""
    rng = np.random.default_rng(0)
    n = 400
    t = _scores_of(rng.random(n) < 0.5, rng.random(n))
    r = _scores_of(rng.random(n) < 0.4, rng.random(n))
    same = excess([Comparison("A", t, r)], [Comparison("control", t, r)], wording=AUDIT_EXCESS, n_boot=300, seed=1)
    e = same["top1"]["20"]
    assert e["excess"] == 0 and e["ci95"][0] < 0 < e["ci95"][1] and not e["excludes_zero"]
    hit = Comparison("A", _scores_of(np.ones(n), rng.random(n)), _scores_of(np.zeros(n), rng.random(n)))
    mem = excess([hit], [Comparison("control", t, r)], n_boot=300, seed=1, wording=AUDIT_EXCESS)
    e = mem["top1"]["20"]
    s_c = (1.0 - 0.0) - e["control"]
    assert e["score"] == 1.0 and e["excess"] == pytest.approx(s_c) and e["excludes_zero"] and e["ci95"][0] > 0
    none = excess([Comparison("A", t, r)], [Comparison("control", t, r)], wording=AUDIT_EXCESS, n_boot=0)["top1"]["20"]
    assert np.isnan(none["ci95"]).all() and not none["excludes_zero"]


def test_demo_call_on_a_trained_checkpoint(synth_small, setup):
    """The demo's audit call (classifier on control_B) on a checkpoint of this tool's
    training: its recorded set and partition make ``auto`` use control_A as the control."""
    from dejavu.audit.config import AuditConfig
    from dejavu.audit.run import audit
    from dejavu.ssl.config import load_train_config
    from dejavu.ssl.train import train

    d, _ = setup
    part = d / "part"
    paths = DataPaths.resolve(data=synth_small)
    sets = ["projector=64-64", "knn_every=0", "warmup_epochs=0", "epochs=1", "batch_size=25"]
    train(
        load_train_config(None, sets, method="vicreg"),
        paths,
        part / "10_per_class" / "train_A.npy",
        d / "run",
        device="cpu",
    )
    acfg = AuditConfig(npc=10, k=20, device="cpu", clf_epochs=2, n_boot=50, train_set=str(part / "control_B.npy"))
    r = audit(d / "run" / "model_ep1.pth", part, paths, d / "demo_audit", acfg, force=True)
    c = r.results["control"]
    assert c["source"]["kind"] == "partition" and c["counts"]["control"]["bbox"] == len(np.load(part / "control_A.npy"))
    assert set(np.load(d / "demo_audit" / "control_attk_idxs.npy")) <= set(np.load(part / "control_A.npy"))
