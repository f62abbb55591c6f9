"""Figures show their uncertainty: accuracy vs epoch and the confidence sweep carry 95%
bootstrap bands computed from the attack folders' stored neighbours (real tiny attacks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.report.collect import collect
from dejavu.report.plots import make_figures

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint


def test_accuracy_and_sweep_bands_from_stored_arrays(synth_small, partition_small, tmp_path):
    index = scan_imagefolder(synth_small / "train")
    root = tmp_path / "run"
    for ep in (1, 2):
        a = make_checkpoint(tmp_path / f"a{ep}.pth", index, "A", 10, seed=ep, epoch=ep)
        b = make_checkpoint(tmp_path / f"b{ep}.pth", index, "B", 10, seed=10 + ep, epoch=ep)
        argv = ["attack", "--model-a", str(a), "--model-b", str(b), "--partition", str(partition_small)]
        argv += ["--data", str(synth_small), "--out", str(root / "attack" / f"ep{ep}"), "--control", "none"]
        assert main([*argv, "--set", "k=20", "--set", "npc=10", "--set", "n_boot=20"]) == 0
    make_figures(collect([root]), tmp_path / "plots", formats=["png"])
    acc = json.loads((tmp_path / "plots" / "accuracy_vs_epoch_top1.json").read_text())
    (s,) = acc["series"]
    for role in ("target", "reference"):
        for p in ("5", "20", "100"):
            band = np.array(s["band95"][role][p])  # one [lo, hi] per epoch
            assert band.shape == (2, 2) and (band[:, 0] <= band[:, 1]).all()
            assert (band[:, 0] >= 0).all() and (band[:, 1] <= 1).all()
            if p == "100":  # the mean's percentile interval holds the point value
                assert (band[:, 0] <= np.array(s[role][p]) + 1e-9).all()
                assert (np.array(s[role][p]) <= band[:, 1] + 1e-9).all()
        assert (np.diff(np.array(s["band95"][role]["5"]), axis=1) > 0).any()  # a real spread, not a line
    sweep = json.loads((tmp_path / "plots" / "sweep_top1.json").read_text())
    c = sweep["curves"][0]
    lo, hi = np.array(c["band95"]["target"])
    assert len(lo) == len(c["p"]) and (lo <= hi).all() and lo[-1] <= c["target"][-1] <= hi[-1]
    quad = json.loads((tmp_path / "plots" / "quadrants_vs_epoch.json").read_text())["series"][0]
    assert len(quad["ci95"]["memorized"]) == 2  # the stored CI of each share, drawn as error bars
    idx = json.loads((tmp_path / "plots" / "figures.json").read_text())
    assert all("95% bootstrap" in f["caption"] for f in idx["figures"] if f["kind"] != "probe")


def test_probe_bands_are_wilson_intervals_over_the_validation_images(tmp_path):
    from report_data import write_probe_result

    from dejavu.io import atomic_write_json, read_json
    from dejavu.report.plots import wilson

    root = tmp_path / "run"
    for ep in (50, 100):
        d = root / "probe" / f"ep{ep}"
        write_probe_result(d, epoch=ep)
        res = read_json(d / "results.json")
        res["counts"] = {"val": 500}
        atomic_write_json(d / "results.json", res)
    make_figures(collect([root]), tmp_path / "plots", formats=["png"])
    (s,) = json.loads((tmp_path / "plots" / "probe_vs_epoch.json").read_text())["series"]
    for t in ("top1", "top5"):
        assert s["band95"][t] == [wilson(a, 500) for a in s[t]]
        assert all(lo < a < hi for (lo, hi), a in zip(s["band95"][t], s[t]))
    lo, hi = wilson(0.5, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3  # the textbook value
