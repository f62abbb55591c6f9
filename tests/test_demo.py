"""The demo end to end: ``--quick`` (every stage, every artifact consistent) and, marked
slow, the default recipe with a real deja vu gap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dejavu.cli import main
from dejavu.demo import DemoConfig, run_demo


def _check_artifacts(out, summary):
    tag = f"{summary['config']['method']}_{summary['config']['npc']}pc"
    for s in "AB":
        run = out / "train" / f"{tag}_{s}"
        assert (run / "last.pth").is_file() and (run / "metrics.jsonl").is_file()
    epochs = [e["epoch"] for e in summary["epochs"]]
    assert epochs == sorted(epochs) and len(epochs) >= 2
    for ep in epochs:
        for sub in ("attack", "attack_control"):
            d = out / sub / tag / f"ep{ep}"
            res = json.loads((d / "results.json").read_text())
            assert res["epoch"] == ep and res["format"] == "dejavu-attack/2"
            for pair in ("A_attk_A", "A_attk_B", "B_attk_A", "B_attk_B"):
                idx = np.load(d / f"{pair}_neighb_idxs.npy")
                assert idx.shape[1] == summary["config"]["k"]
            # the control attacks held-out images, the main attack the private sets
            attacked = np.load(d / "A_attk_A_attk_idxs.npy")
            bbox_a = np.load(out / "partition" / f"{summary['config']['npc']}_per_class" / "bbox_A.npy")
            ctrl_a = np.load(out / "partition" / "control" / "ctrl_A.npy")
            assert set(attacked) <= set(ctrl_a if sub == "attack_control" else bbox_a)
            public = np.load(d / "public_idxs.npy")
            assert not set(public) & set(ctrl_a)
    assert (out / "probe" / f"{tag}_A" / "results.json").is_file()
    assert json.loads((out / "plots" / "figures.json").read_text())["attacks"]
    assert (out / "plots" / "accuracy_vs_epoch_top1.png").is_file()
    html = (out / "report.html").read_text()
    assert "deja vu" in html.lower() or "déjà vu" in html.lower()
    assert json.loads((out / "summary.json").read_text())["final"]["epoch"] == epochs[-1]


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "deja vu score" in printed and "held-out control" in printed and "report.html" in printed
    summary = json.loads((out / "summary.json").read_text())
    _check_artifacts(out, summary)
    assert 0.1 < summary["probe_top1"] <= 1.0
    # a second run refuses to overwrite without --force
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_default_demo_shows_dejavu(tmp_path, seed):
    """At the demo's defaults the gap is real on two seeds: the 95% CIs of the deja vu score
    (top 20%) and of the all-example gap lie above 0, the gap and the memorized share grow
    with epochs, and the held-out control shows no gap."""
    res = run_demo(DemoConfig(out=str(tmp_path / "demo"), seed=seed))
    s = res.summary
    _check_artifacts(res.out, s)
    f = s["final"]
    assert f["dejavu_score_ci95"][0] > 0, f
    assert f["gap_100_ci95"][0] > 0, f
    first, last = s["epochs"][0], s["epochs"][-1]
    assert last["gap_100"] > first["gap_100"] and last["memorized"] > first["memorized"], s["epochs"]
    lo, hi = f["control_gap_100_ci95"]
    assert lo < 0.02 and abs(f["control_gap_100"]) < 0.05, f  # no significant gap on held-out images
