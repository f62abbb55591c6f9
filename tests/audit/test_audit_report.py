"""The report's one-model section and `collect` reading audit folders."""

from __future__ import annotations

import sys
from pathlib import Path

from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.report.collect import collect

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint


def test_report_has_one_model_section(synth_small, partition_small, tmp_path):
    idx = scan_imagefolder(synth_small / "train")
    a = make_checkpoint(tmp_path / "a.pth", idx, "A", 10, seed=5)
    b = make_checkpoint(tmp_path / "b.pth", idx, "B", 10, seed=6)
    run = tmp_path / "run"
    common = ["--partition", str(partition_small), "--npc", "10", "--data", str(synth_small)]
    assert (
        main(
            [
                "attack",
                "--model-a",
                str(a),
                "--model-b",
                str(b),
                *common,
                "--out",
                str(run / "attack" / "x"),
                "--k",
                "20",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "audit",
                "--model",
                str(a),
                *common,
                "--out",
                str(run / "audit" / "x"),
                "--set",
                "k=20",
                "--set",
                "clf_epochs=2",
                "--set",
                "n_boot=20",
            ]
        )
        == 0
    )
    res = collect([run])
    assert len(res.attacks) == 1 and len(res.audits) == 1
    rec = res.audits[0]
    assert rec.score() == rec.acc("target", 20) - rec.acc("reference", 20) and rec.ci() is not None
    from dejavu.audit.compare import memorized_overlap

    o = memorized_overlap(run / "attack" / "x", run / "audit" / "x", "A")
    assert o["n_common"] == rec.counts["audit"]["attacked"] and o["both"] <= o["memorized_two_model"]
    from dejavu.report.html import build_report

    html = build_report(run, data=DataPaths.resolve(data=synth_small), force=True).read_text()
    assert "One-model test" in html and f"{o['both']} of {o['memorized_two_model']}" in html
