"""The attack and the audit write the same ``metrics`` keys (one scoring engine): a real small
two-model attack and a real small audit on the same partition, their key paths compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dejavu.analysis.metrics import FRACTIONS, fraction_key
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import partition

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint

# what only one of the two tests has: the attack's per-array accuracies (X_attk_Y) and set
# names of the swap; the audit's classifier rule (several classifiers: the correlation set)
ATTACK_ONLY = ("top1/pairs", "top1/pair_sweeps", "top5/pairs", "top5/pair_sweeps", "n_attacked/")
AUDIT_ONLY = ("sample_rule", "correlation_set", "n_attacked/")


def key_paths(d: dict, prefix: str = "") -> set[str]:
    """Every key path of nested dicts (lists are leaves; rows of a list of dicts: their keys)."""
    out = set()
    for k, v in d.items():
        p = f"{prefix}{k}"
        out.add(p)
        if isinstance(v, dict):
            out |= key_paths(v, p + "/")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out |= key_paths(v[0], p + "[]/")
    return out


def _shared(paths: set[str], only: tuple[str, ...]) -> set[str]:
    return {p for p in paths if not p.startswith(only)}


@pytest.fixture(scope="module")
def both(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    idx = scan_imagefolder(synth_small / "train")
    partition(DataPaths.resolve(data=synth_small), [10], d / "part", control=4)
    a = make_checkpoint(d / "a.pth", idx, "A", 10, seed=1)
    b = make_checkpoint(d / "b.pth", idx, "B", 10, seed=2)
    common = ["--partition", str(d / "part"), "--npc", "10", "--data", str(synth_small)]
    attack = ["attack", "--model-a", str(a), "--model-b", str(b), "--out", str(d / "attack"), *common]
    assert main([*attack, "--k", "20", "--k-attk", "10", "--bootstrap", "50"]) == 0
    audit = ["audit", "--model", str(a), "--out", str(d / "audit"), *common, "--set", "k=20", "--set", "n_boot=50"]
    assert main([*audit, "--set", "clf_epochs=2", "--set", "clf_batch_size=16", "--control", "partition"]) == 0
    return (json.loads((d / x / "results.json").read_text()) for x in ("attack", "audit"))


def test_attack_and_audit_write_the_same_metric_keys(both):
    attack, audit = both
    assert "control" in attack and "control" in audit
    for pick in (lambda r: r["metrics"], lambda r: r["control"]["metrics"], lambda r: r["control"]["excess"]):
        ka, ku = key_paths(pick(attack)), key_paths(pick(audit))
        assert _shared(ka, ATTACK_ONLY) == _shared(ku, AUDIT_ONLY)
    for res in (attack, audit):
        for m in (res["metrics"], res["control"]["metrics"]):
            for top in ("top1", "top5"):
                t = m[top]
                assert (
                    set(t["score"])
                    == set(t["target"])
                    == set(t["ci95"]["score"])
                    == {fraction_key(p) for p in FRACTIONS}
                )
                assert t["dejavu_score"] == t["score"]["20"] and t["dejavu_score_100"] == t["score"]["100"]
                assert t["ci95"]["dejavu_score"] == t["ci95"]["score"]["20"]
                for p, s in t["score"].items():
                    assert s == pytest.approx(t["target"][p] - t["reference"][p])
        assert set(res["control"]["excess"]["top1"]) == {fraction_key(p) for p in FRACTIONS}
