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
        d = out / "attack" / tag / f"ep{ep}"
        res = json.loads((d / "results.json").read_text())
        assert res["epoch"] == ep and res["format"] == "dejavu-attack/2"
        assert res["control"]["source"]["kind"] == "partition"
        for prefix in ("", "control_"):
            for pair in ("A_attk_A", "A_attk_B", "B_attk_A", "B_attk_B"):
                idx = np.load(d / f"{prefix}{pair}_neighb_idxs.npy")
                assert idx.shape[1] == summary["config"]["k"]
            # the control attacks held-out images, the main attack the private sets
            attacked = np.load(d / f"{prefix}A_attk_A_attk_idxs.npy")
            bbox_a = np.load(out / "partition" / f"{summary['config']['npc']}_per_class" / "bbox_A.npy")
            ctrl_a = np.load(out / "partition" / "control_A.npy")
            assert set(attacked) <= set(ctrl_a if prefix else bbox_a)
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
    assert "excess over the control" in printed and "training randomness is not covered" in printed
    assert "held-out control (control_A)" in printed  # the audit's own control
    last = printed.rstrip("\n").splitlines()[-1]  # the output ends on its last result line
    assert last == f"  report: {out / 'report.html'}", last
    assert not any(line.lstrip().startswith("{") for line in printed.splitlines())  # no stray JSON dump
    assert "Score against the held-out control" in (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    _check_artifacts(out, summary)
    assert 0.1 < summary["probe_top1"] <= 1.0
    assert summary["design"] == "independent" and "independent models" in printed  # the default
    # a second run refuses to overwrite without --force
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err


def test_demo_settings_follow_the_one_config_path(tmp_path, capsys):
    """``dejavu demo`` builds DemoConfig as every stage does: --quick is the preset under
    --config < flags < --set; training settings are checked by TrainConfig before anything runs."""
    from dejavu.cli import build_parser
    from dejavu.config import config_from_args
    from dejavu.demo import DEMO_FLAGS, QUICK

    def cfg(*argv):
        args = build_parser().parse_args(["demo", *argv])
        return config_from_args(DemoConfig, args, flags=DEMO_FLAGS, base=dict(QUICK) if args.quick else None)

    c = cfg("--quick", "--epochs", "90", "--set", "k=5", "--set", "train.augment=paper", "--set", "train.vicreg.sim=30")
    assert (c.epochs, c.k, c.per_class, c.snapshot_period) == (90, 5, QUICK["per_class"], 30)
    t = c.train_config(c.seed)
    assert (t.augment, t.epochs, t.snapshot_every, t.image_size) == ("paper", 90, 30, c.size)
    assert t.vicreg.sim == 30
    f = tmp_path / "demo.yaml"
    f.write_text("k: 7\nepochs: 12\n")
    c = cfg("--config", str(f), "--epochs", "15")
    assert (c.k, c.epochs, c.snapshot_period, c.per_class) == (7, 15, 5, 320)
    out = tmp_path / "never"
    for bad, msg in (
        (["--set", "train.augmnt=paper"], "unknown key(s) augmnt"),
        (["--pairs", "0"], "pairs: expected a number >= 1"),
        (["--set", "kk=3"], "--set: unknown key(s) kk"),
    ):
        assert main(["demo", "--out", str(out), *bad]) == 2
        assert msg in capsys.readouterr().err
    assert not out.exists()  # refused before any stage ran


def test_partition_per_pair_gives_each_pair_its_own_split(tmp_path):
    """With pairs > 1 and partition_per_pair, pair S is cut by partition seed S
    (partition/seed<S>); by default one partition, seeded by the demo's seed, serves all."""
    from dejavu.demo import _make_data, _make_partition, _open_run
    from dejavu.partition import Partition

    small = dict(classes=3, per_class=40, annotated_fraction=0.5, control_per_class=4, npc=3, pairs=2, seed=5)
    run = _open_run(DemoConfig(out=str(tmp_path / "d"), partition_per_pair=True, **small), force=False)
    _make_data(run)
    _make_partition(run)
    assert run.seeds == [5, 6] and run.pdirs == {s: tmp_path / "d" / "partition" / f"seed{s}" for s in (5, 6)}
    a = {s: Partition.load(run.pdirs[s]) for s in (5, 6)}
    assert a[5].split["seed"] == 5 and a[6].split["seed"] == 6
    assert not np.array_equal(a[5].load_set(3, "train_A"), a[6].load_set(3, "train_A"))
    shared = _open_run(DemoConfig(out=str(tmp_path / "e"), **small), force=False)
    _make_data(shared)
    _make_partition(shared)
    assert set(shared.pdirs.values()) == {tmp_path / "e" / "partition"}
    assert Partition.load(tmp_path / "e" / "partition").split["seed"] == 5


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
    lo, _hi = f["control_gap_100_ci95"]
    assert lo < 0.02 and abs(f["control_gap_100"]) < 0.05, f  # no significant gap on held-out images


class _Res:
    def __init__(self, epoch, score, control, se=0.03):
        e = {
            "score": score,
            "control": control,
            "excess": score - control,
            "se": se,
            "ci95": [score - control - 2 * se, score - control + 2 * se],
            "excludes_zero": True,
        }
        m = {
            "top1": {
                "dejavu_score": score,
                "dejavu_score_100": score / 2,
                "target": {"20": 0.5, "100": 0.4},
                "reference": {"20": 0.5 - score, "100": 0.4 - score / 2},
                "ci95": {"dejavu_score": [score - 0.1, score + 0.1], "dejavu_score_100": [0, score]},
            },
            "quadrants": {"memorized": 0.2, "correlated": 0.3},
            "quadrants_ci95": {"memorized": [0.1, 0.3]},
        }
        mc = {
            "top1": {
                "dejavu_score": control,
                "dejavu_score_100": control,
                "ci95": {"dejavu_score": [control - 0.1, control + 0.1], "dejavu_score_100": [-0.1, 0.1]},
            }
        }
        self.results = {
            "epoch": epoch,
            "metrics": m,
            "control": {"metrics": mc, "excess": {"top1": {"20": e, "100": e}}},
        }


def test_summary_of_several_pairs():
    """--pairs N: per-pair values and the interval over pairs in the summary and its text."""
    from dejavu.demo import format_summary, summarize

    by_pair = {
        3: [_Res(30, 0.10, 0.0), _Res(60, 0.30, 0.02)],
        4: [_Res(30, 0.05, 0.01), _Res(60, 0.25, -0.03)],
        5: [_Res(30, 0.0, 0.0), _Res(60, 0.35, 0.05)],
    }
    s = summarize(by_pair, None, None, 12.0, DemoConfig.quick(pairs=3, seed=3))
    assert s["seeds"] == [3, 4, 5] and [p["final"]["excess"] for p in s["pairs"]] == pytest.approx([0.28, 0.28, 0.30])
    pl = s["pair_level"]["20"]
    assert pl["n_pairs"] == 3 and pl["mean"] == pytest.approx(0.86 / 3) and pl["distinguishable"]
    text = format_summary(s)
    assert "pair 1 of 3 (seed 3)" in text and "3: +30.0/+2.0/+28.0" in text
    assert "mean of 3 model pairs" in text and "distinguishable from zero" in text
    one = summarize({0: by_pair[3]}, None, None, 1.0, DemoConfig.quick())
    assert "training randomness is not covered" in format_summary(one)


def test_demo_defaults_to_one_torch_thread(tmp_path, monkeypatch):
    """Without DEJAVU_THREADS or --threads the demo's attack, audit and probe run on
    one torch thread, whatever the core count: the same numbers on a 2-core laptop and a
    16-core server, and no oversubscription (the audit's crop classifier ran ~5x slower with
    2 threads on a loaded 2-core CPU); --threads still chooses."""
    import torch

    from dejavu.demo import _open_run

    monkeypatch.delenv("DEJAVU_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert _open_run(DemoConfig(out=str(tmp_path / "a")), force=False).threads == 1
        assert torch.get_num_threads() == 1
        assert _open_run(DemoConfig(out=str(tmp_path / "b"), threads=2), force=False).threads == 2
    finally:
        torch.set_num_threads(before)
