"""`dejavu train --monitor --tensorboard`: the monitor's numbers in metrics.jsonl equal
`dejavu audit` on that epoch's snapshot; --resume keeps the monitor's subsample and
classifier; TensorBoard holds the rows' scalars."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.monitor.plot import monitor_lines, monitor_summary

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint

MONITORED = ("score", "score_ci95", "score_100", "score_100_ci95", "memorized", "memorized_ci95")


def _argv(synth_small, partition_small, run, audit_yaml, *extra):
    sets = ["projector=64-64", "warmup_epochs=0", "snapshot_every=1", "knn_every=1", "batch_size=50"]
    sets += ["monitor_public_per_class=15", f"monitor_audit={audit_yaml}", "monitor_audit_set=n_boot=40", "epochs=3"]
    argv = ["train", "--method", "vicreg", "--data", str(synth_small), "--out", str(run), "--device", "cpu"]
    argv += ["--index", str(partition_small / "10_per_class" / "train_B.npy")]
    argv += ["--monitor", "--monitor-every", "2", "--monitor-crops", "40", "--tensorboard"]
    return argv + [a for s in sets for a in ("--set", s)] + list(extra)


def _rows(run):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_monitor_audit_resume_tensorboard(synth_small, partition_small, audit_yaml, tmp_path, monkeypatch):
    import dejavu.ssl.train as T

    run = tmp_path / "run"
    orig = T.atomic_torch_save

    def stop_after_2(path, obj):
        orig(path, obj)
        if path.name == "last.pth" and obj["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "atomic_torch_save", stop_after_2)
    assert main(_argv(synth_small, partition_small, run, audit_yaml)) == 130  # killed after epoch 2
    monkeypatch.setattr(T, "atomic_torch_save", orig)
    rows = _rows(run)
    assert [("monitor_score" in r) for r in rows] == [False, True]  # every 2 epochs
    state = json.loads((run / "monitor" / "monitor.json").read_text())
    assert state["audit_set"] == "bbox_B" and state["train_set"] == "bbox_A"  # trained on B: B audited
    sub = np.load(run / "monitor" / "audit_set.npy")
    clf = run / "monitor" / "classifier" / "classifier.pth"
    stamp = clf.stat().st_mtime_ns

    # the epoch-2 numbers equal `dejavu audit` of model_ep2.pth with the recorded subsample and classifier
    args = ["audit", "--model", str(run / "model_ep2.pth"), "--partition", str(partition_small), "--npc", "10"]
    args += ["--data", str(synth_small), "--out", str(tmp_path / "audit2")]
    assert main(args + state["audit_args"]) == 0
    res = json.loads((tmp_path / "audit2" / "results.json").read_text())
    assert res["sets"]["audit"].endswith("audit_set.npy") and res["counts"]["public"] == 150
    m = res["metrics"]["top1"]
    assert rows[1]["monitor_score"] == m["dejavu_score"] and rows[1]["monitor_score_100"] == m["dejavu_score_100"]
    assert rows[1]["monitor_score_ci95"] == m["ci95"]["dejavu_score"]
    assert rows[1]["monitor_memorized"] == res["metrics"]["quadrants"]["memorized"]
    assert rows[1]["monitor_classifier_heldout_acc"] == res["classifier"]["heldout_acc"]
    assert rows[1]["monitor_seconds"] > 0

    # resumed: same subsample, the cached classifier, the last epoch scored
    assert main(_argv(synth_small, partition_small, run, audit_yaml, "--resume")) == 0
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and "monitor_score" in rows[2]
    assert np.array_equal(np.load(run / "monitor" / "audit_set.npy"), sub) and clf.stat().st_mtime_ns == stamp
    # other monitor settings on resume are refused, by name
    assert main(_argv(synth_small, partition_small, run, audit_yaml, "--resume", "--set", "monitor_seed=5")) == 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    loss = {e.step: e.value for e in ea.Scalars("train/loss")}
    assert loss == pytest.approx({r["epoch"]: r["loss"] for r in rows}, rel=1e-6)
    assert {e.step for e in ea.Scalars("eval/knn_top1")} == {1, 2, 3}
    assert {e.step for e in ea.Scalars("train/lr")} == {1, 2, 3}
    got = {e.step: e.value for e in ea.Scalars("monitor/score")}
    assert got == pytest.approx({2: rows[1]["monitor_score"], 3: rows[2]["monitor_score"]}, rel=1e-6)

    # `dejavu plot` draws the monitor's curve beside the attack of a snapshot (the run is its model B)
    ref = make_checkpoint(
        tmp_path / "a.pth", scan_imagefolder(synth_small / "train"), "A", 10, seed=3, epoch=2, projector="64-64"
    )
    attack = ["attack", "--model-a", str(ref), "--model-b", str(run / "model_ep2.pth"), "--npc", "10"]
    attack += ["--partition", str(partition_small), "--data", str(synth_small), "--out", str(tmp_path / "atk")]
    assert main([*attack, "--set", "k=20", "--control", "none"]) == 0
    assert main(["plot", str(tmp_path / "atk"), "--out", str(tmp_path / "plots"), "--format", "png"]) == 0
    fig = json.loads((tmp_path / "plots" / "monitor_vs_attack.json").read_text())
    (drawn,) = fig["runs"]
    assert drawn["monitor"]["epoch"] == [2, 3] and drawn["monitor"]["score"] == [r["monitor_score"] for r in rows[1:]]
    atk = json.loads((tmp_path / "atk" / "results.json").read_text())
    assert drawn["attack"]["epoch"] == [2] and drawn["attack"]["score"] == [atk["metrics"]["top1"]["dejavu_score"]]
    assert (tmp_path / "plots" / "monitor_vs_attack.png").is_file()
    # the demo's summary and lines of the curve (dejavu demo --monitor)
    summary = monitor_summary({"A": ref.parent, "B": run})
    assert list(summary) == ["B"] and [r["score"] for r in summary["B"]] == drawn["monitor"]["score"]
    assert monitor_lines(summary)[0].startswith("  monitor of model B") and "ep3 " in monitor_lines(summary)[0]


def test_monitor_needs_a_partition_set(synth_small, partition_small, tmp_path, capsys):
    np.save(tmp_path / "mine.npy", np.load(partition_small / "10_per_class" / "train_A.npy"))
    argv = ["train", "--data", str(synth_small), "--index", str(tmp_path / "mine.npy"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--monitor", "--set", "epochs=1", "--set", "warmup_epochs=0", "--device", "cpu"]) == 1
    assert "--monitor needs a partition's training set" in capsys.readouterr().err


def test_tensorboard_missing_says_how_to_install(synth_small, partition_small, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    argv = ["train", "--data", str(synth_small), "--index", str(partition_small / "10_per_class" / "train_A.npy")]
    assert main([*argv, "--out", str(tmp_path / "r"), "--tensorboard"]) == 2
    assert "pip install 'dejavu-ssl[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_demo_monitor_flag_monitors_both_models_with_the_demos_audit_settings(tmp_path):
    from dejavu.demo import DemoConfig

    cfg = DemoConfig(out=str(tmp_path / "demo"), monitor=True).train_config(0)
    assert cfg.monitor and cfg.monitor_audit_set == [
        "k=20",
        f"train_set={tmp_path.resolve() / 'demo' / 'partition' / 'control_B.npy'}",
    ]
    assert not DemoConfig(out=str(tmp_path / "demo")).train_config(0).monitor
