"""The report's one-model section shows each audit's held-out control: the control's score,
the excess with its paired bootstrap CI and the verdict, from a real audit's results.json;
an audit without a control says so."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pytest

from dejavu.analysis.significance import verdict_text
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.partition import partition
from dejavu.report.html import build_report
from dejavu.units import pts, pts_ci

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


def test_report_shows_audit_control_and_excess(audited):
    _, run, _ = audited
    res = json.loads((run / "audit" / "ctrl" / "results.json").read_text())
    page = build_report(run, force=True).read_text()
    sec = page[page.index("Score against the held-out control: audit/ctrl") :]
    for at in ("20", "100"):
        e = res["control"]["excess"]["top1"][at]
        assert f"at {at}%: score / held-out control / excess</th><td>{pts(e['score'])} / " in sec
        assert f"{pts(e['control'])} / <b>{pts(e['excess'])}</b>" in sec  # differences in points
        assert f"(95% CI over examples {pts_ci(e['ci95'])})" in sec
    ex = res["control"]["excess"]["top1"]["20"]
    verdict = verdict_text(ex, one_model=True)
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
    assert f"<b>{pts(res['metrics']['top1']['dejavu_score'])}</b>" in page  # the score itself still shown


def test_report_of_audits_only_has_verdict_headline_figures_galleries_provenance(audited, tmp_path):
    """A run folder holding nothing but an audit: a verdict from it, a headline (no "No results
    yet", no method "?"), figures, galleries with class names, and where the page came from."""
    d, run, _ = audited
    only = tmp_path / "only"
    only.mkdir()
    (only / "audit").symlink_to(run / "audit", target_is_directory=True)
    (only / "partition").symlink_to(d / "part", target_is_directory=True)
    assert main(["report", str(only)]) == 0
    page = (only / "report.html").read_text()
    res = json.loads((run / "audit" / "ctrl" / "results.json").read_text())
    assert page.index("Verdict: ") < page.index("<h2>Headline</h2>")
    assert "by the one-model test" in page and f"scores {pts(res['metrics']['top1']['dejavu_score'])}" in page
    assert "No results yet" not in page and "method ?" not in page
    assert "one-model déjà vu score (model − crop classifier" in page
    assert "From the one-model tests" in page and page.count('<figure class="fig">') >= 1
    assert "Most memorized examples (model right, classifier wrong" in page
    assert "crop classifier (reference): predicts" in page and "spread over" in page
    import re

    shown = re.findall(r"\(set A\), class ([^<]+)<br>", page)  # the synthetic classes.txt names, not wnids
    assert shown and not any(c.startswith("n9") for c in shown) and all(re.fullmatch(r"[a-z]+_\d+", c) for c in shown)
    assert "dejavu 0." in page and f"dejavu report {only}" in page and " UTC " in page
