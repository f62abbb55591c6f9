"""The report's one-model section shows each audit's held-out control: the control's score,
the excess with its paired bootstrap CI and the verdict, from a real audit's results.json;
an audit without a control says so."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pytest

from dejavu.audit.control import verdict_text
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import partition
from dejavu.report.html import build_report

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint

FAST = ["--set", "k=20", "--set", "clf_epochs=2", "--set", "n_boot=50", "--set", "clf_batch_size=16"]


@pytest.fixture(scope="module")
def audited(synth_small, tmp_path_factory):
    """A partition with a held-out control, one checkpoint, and a run folder with its audit
    (``--control auto``: the partition's control)."""
    d = tmp_path_factory.mktemp("report_audit_ctrl")
    partition(DataPaths.resolve(data=synth_small), [10], d / "part", control=4)
    ckpt = make_checkpoint(d / "a.pth", scan_imagefolder(synth_small / "train"), "A", 10, seed=3)
    common = ["--model", str(ckpt), "--partition", str(d / "part"), "--npc", "10", "--data", str(synth_small)]
    run = d / "run"
    assert main(["audit", *common, "--out", str(run / "audit" / "ctrl"), *FAST]) == 0
    return d, run, common


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def test_report_shows_audit_control_and_excess(audited):
    _, run, _ = audited
    res = json.loads((run / "audit" / "ctrl" / "results.json").read_text())
    page = build_report(run, force=True).read_text()
    sec = page[page.index("Score against the held-out control: audit/ctrl") :]
    for at in ("20", "100"):
        e = res["control"]["excess"]["top1"][at]
        assert f"at {at}%: score / held-out control / excess</th><td>{_pct(e['score'])} / " in sec
        assert f"{_pct(e['control'])} / <b>{_pct(e['excess'])}</b>" in sec
        assert f"(95% CI over examples {_pct(e['ci95'][0])} to {_pct(e['ci95'][1])})" in sec
    ex = res["control"]["excess"]["top1"]["20"]
    verdict = verdict_text(ex)
    assert "excess over the control" in verdict and "95% CI" in verdict  # n_boot 50: an interval
    assert f"<tr><th>verdict (top-1, 20%)</th><td>{html.escape(verdict)}</td></tr>" in sec
    n = res["control"]["counts"]["control"]
    assert f"partition images, {n['attacked']} of {n['bbox']} attacked" in sec
    assert "No held-out control" not in page


def test_report_audit_without_control(audited, tmp_path):
    _, run, common = audited
    run2 = tmp_path / "run"
    clf = run / "audit" / "ctrl" / "classifier" / "classifier.pth"  # reuse the trained classifier: fast
    out = run2 / "audit" / "noctrl"
    assert main(["audit", *common, "--out", str(out), *FAST, "--reference-model", str(clf), "--control", "none"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert "control" not in res and res["control_skipped"] == "none (--control none)"
    page = build_report(run2, force=True).read_text()
    sec = page[page.index("Score against the held-out control: audit/noctrl") :]
    assert "No held-out control in this audit (none (--control none))" in sec
    assert "score / held-out control / excess" not in page and "verdict (top-1, 20%)" not in page
    assert f"<b>{_pct(res['metrics']['top1']['dejavu_score'])}</b>" in page  # the score itself still shown
