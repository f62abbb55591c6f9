"""The attack and the audit write the same ``metrics`` keys (one scoring engine): a real small
two-model attack and a real small audit on the same partition, their key paths compared; and
every reader of those files gives the same output without the old alias keys."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dejavu.analysis.metrics import FRACTIONS, SCORE_ALIASES, fraction_key
from dejavu.analysis.significance import control_summary_text, verdict_line
from dejavu.analysis.tables import summary_text
from dejavu.attack.cli import epoch_line
from dejavu.audit.run import summary_text as audit_summary_text
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.demo import _epoch_row
from dejavu.io import read_json
from dejavu.monitor.core import summarize
from dejavu.partition import partition
from dejavu.report.collect import collect

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
def folders(synth_small, tmp_path_factory) -> Path:
    """A real small attack (``attack/``) and audit (``audit/``), both with a held-out control."""
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
    return d


@pytest.fixture(scope="module")
def both(folders):
    return (json.loads((folders / x / "results.json").read_text()) for x in ("attack", "audit"))


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


def _without_aliases(d):
    """``d`` less every old alias key (``dejavu_score``, ``dejavu_score_100``), at any depth."""
    if isinstance(d, dict):
        return {k: _without_aliases(v) for k, v in d.items() if k not in SCORE_ALIASES.values()}
    return [_without_aliases(v) for v in d] if isinstance(d, list) else d


def _reader_outputs(run: Path, synth: Path, capsys) -> dict[str, str]:
    """What every reader of results.json makes of the run folder ``run`` (attack/x, audit/x):
    the report, its figures' data, the printed summaries, the monitor's and the demo's numbers."""
    attack, audit = (read_json(run / x / "x" / "results.json") for x in ("attack", "audit"))
    assert main(["report", str(run), "--data", str(synth), "--force"]) == 0
    assert main(["analyze", str(run / "attack" / "x"), "--bootstrap", "20", "--out", str(run / "analysis.json")]) == 0
    out = {f.name: f.read_text() for f in sorted((run / "plots").glob("*.json"))}
    out["report.html"] = (run / "report.html").read_text()
    out["analysis.json"] = (run / "analysis.json").read_text()
    out["printed"] = capsys.readouterr().out
    out["attack"] = "\n".join(
        [summary_text(attack), control_summary_text(attack), epoch_line(Path("x"), attack), verdict_line(attack)]
    )
    out["audit"] = audit_summary_text(audit) + verdict_line(audit)
    out["monitor"] = json.dumps(summarize(audit["metrics"], audit["classifier"], 1, 1))
    out["demo"] = json.dumps(_epoch_row(SimpleNamespace(results=attack)), default=str)
    out["collect"] = json.dumps([(r.score(), r.ci()) for r in collect([run]).attacks + collect([run]).audits])
    return {k: v.replace(str(run), "RUN") for k, v in out.items()}


def test_readers_do_not_need_the_alias_keys(folders, synth_small, tmp_path, capsys):
    """The same real results read with and without the alias keys: every reader (report,
    figures, analyze, summaries, verdict, monitor, demo) gives byte-identical output."""
    outputs = []
    for variant, strip in (("with", False), ("without", True)):
        run = tmp_path / variant / "run"
        for x in ("attack", "audit"):
            shutil.copytree(folders / x, run / x / "x")
            res = read_json(run / x / "x" / "results.json")
            assert "dejavu_score" in res["metrics"]["top1"] and "dejavu_score" in res["control"]["metrics"]["top1"]
            (run / x / "x" / "results.json").write_text(json.dumps(_without_aliases(res) if strip else res))
        outputs.append(_reader_outputs(run, synth_small, capsys))
    with_aliases, without = outputs
    assert "deja vu score" in with_aliases["attack"] and "One-model test" in with_aliases["report.html"]
    assert with_aliases.keys() == without.keys() and len(with_aliases) > 8
    for k in with_aliases:
        assert with_aliases[k] == without[k], k


def test_attack_and_audit_share_the_public_embedding(folders):
    """One public-embedding path: the audit of model A finds the embedding the attack cached
    for model A (same key, same file), and its neighbours are the attack's A_attk_A ones."""
    attack, audit = (read_json(folders / x / "results.json") for x in ("attack", "audit"))
    assert attack["embed_cache"]["hit"] == {"A": False, "B": False} and audit["embed_cache"]["hit"] is True
    assert len(list((folders / ".embed_cache").glob("*.npy"))) == 2
    a_idx, a_nb = (np.load(folders / "attack" / f"A_attk_A_{n}.npy") for n in ("attk_idxs", "neighb_idxs"))
    u_idx, u_nb = (np.load(folders / "audit" / f"{n}.npy") for n in ("attk_idxs", "model_neighb_idxs"))
    assert np.array_equal(a_idx, u_idx) and np.array_equal(a_nb[:, : u_nb.shape[1]], u_nb)
