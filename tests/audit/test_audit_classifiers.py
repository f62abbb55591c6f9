"""``--classifiers N``: N differently seeded crop classifiers; the sample test counts a crop as
classifier-right (correlation) only when all of them are right, as DejaVuOSS's correlation set."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.analysis.metrics import scores_from_neighbours
from dejavu.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_audit import _args, ckpt  # noqa: F401  (the module-scoped fixture)


def test_two_classifiers_all_right_is_correlation(ckpt, synth_small, partition_small, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "two"
    assert main(_args(ckpt, synth_small, partition_small, out, "--classifiers", "2", "--control", "none")) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    a, b = (torch.load(out / d / "classifier.pth", weights_only=True) for d in ("classifier", "classifier_2"))
    assert a["config"]["seed"] == 0 and b["config"]["seed"] == 1
    assert not torch.equal(a["model"]["classifier.2.weight"], b["model"]["classifier.2.weight"])
    lab = np.load(out / "labels.npy").reshape(-1)
    right = [np.load(out / f).argmax(1) == lab for f in ("classifier_logits.npy", "classifier2_logits.npy")]
    both = right[0] & right[1]
    assert 0 < both.sum() < right[0].sum()  # the rule matters on this data
    m = res["metrics"]
    assert m["sample_rule"].startswith("classifier right = all 2 crop classifiers")
    assert m["correlation_set"]["n"] == int(both.sum()) and "correlation set" in printed
    t = scores_from_neighbours(np.load(out / "model_neighb_labels.npy"), lab, np.load(out / "attk_idxs.npy"), 20, 10)
    assert m["quadrants"]["correlated"] == pytest.approx(np.mean(t.correct1 * both))
    assert m["quadrants"]["memorized"] == pytest.approx(np.mean(t.correct1 * ~both))
    # the population test stays the first classifier's
    assert m["top1"]["reference"]["100"] == pytest.approx(np.mean(right[0]))
    rows = list(csv.DictReader((out / "examples.csv").open()))
    assert [float(r["correct_reference"]) for r in rows] == both.astype(float).tolist()


def test_classifiers_do_not_go_with_a_reference(ckpt, synth_small, partition_small, tmp_path, capsys):  # noqa: F811
    args = _args(ckpt, synth_small, partition_small, tmp_path / "x", "--classifiers", "2")
    assert main([*args, "--reference-model", str(ckpt)]) == 2
    assert "--classifiers 2" in capsys.readouterr().err
