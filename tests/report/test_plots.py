"""Figures from a folder of generated results: assert on the data behind each figure."""

from __future__ import annotations

import json

import pytest
from report_data import fake_accs

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.report.collect import collect, varying_hyperparams
from dejavu.report.plots import build_series, make_figures


def _load(out, name):
    return json.loads((out / f"{name}.json").read_text())


def test_collect_types_and_skips(sweep_dir):
    res = collect([sweep_dir])
    assert len(res.attacks) == 10 and len(res.probes) == 6
    assert [p.name for p, _ in [(p.parent, w) for p, w in res.skipped]] == ["broken"]  # rcdm file ignored silently
    r = next(a for a in res.attacks if a.crop == "corner")
    assert (r.epoch, r.npc, r.variant, r.method) == (200, 300, "corner/projector", "vicreg")
    assert r.param("lr") == 0.2 and r.param("k") == 100  # model config first, then the attack's config
    assert varying_hyperparams(res.attacks) == ["lr"]
    with pytest.raises(DejavuError, match="broken"):
        collect([sweep_dir], strict=True)


def test_series_rule(sweep_dir):
    res = collect([sweep_dir])
    by_epoch = build_series(res.attacks, "epoch")
    assert len(by_epoch) == 1  # single-point variants and lr points do not make lines
    assert by_epoch[0]["x"] == [50, 100, 150, 200]
    assert by_epoch[0]["key"] == {"method": "vicreg", "variant": "periphery/projector", "npc": 300, "lr": 0.2}
    by_lr = build_series(res.attacks, "lr", ["lr"])
    assert [s["x"] for s in by_lr] == [[0.1, 0.2, 0.4]]


def test_figures_from_generated_results(sweep_dir, tmp_path):
    out = tmp_path / "plots"
    assert main(["plot", str(sweep_dir), "--out", str(out), "--param", "lr", "--top", "top1", "--top", "top5"]) == 0
    index = json.loads((out / "figures.json").read_text())
    names = {f["name"] for f in index["figures"]}
    assert {
        "accuracy_vs_epoch_top1",
        "accuracy_vs_epoch_top5",
        "accuracy_vs_npc_top1",
        "accuracy_vs_lr_top1",
        "quadrants_vs_epoch",
        "quadrants_vs_npc",
        "quadrants_vs_lr",
        "probe_vs_epoch",
        "probe_vs_npc",
        "sweep_top1",
        "variants_top1",
    } <= names
    assert "probe_vs_lr" not in names  # probes have no lr sweep
    for f in index["figures"]:
        for x in f["files"] + [f["data"]]:
            assert (out / x).is_file() and (out / x).stat().st_size > 500, x
    assert index["attacks"] == 10 and len(index["skipped"]) == 1

    # accuracy vs epochs: exactly the numbers stored in the results
    d = _load(out, "accuracy_vs_epoch_top1")
    (s,) = d["series"]
    assert s["x"] == [50, 100, 150, 200]
    for i, ep in enumerate(s["x"]):
        tgt, ref = fake_accs(ep, 300)
        for p in ("5", "20", "100"):
            assert s["target"][p][i] == pytest.approx(tgt[p])
            assert s["reference"][p][i] == pytest.approx(ref[p])
    assert s["target"]["20"] == sorted(s["target"]["20"])  # memorization grows with training here
    d5 = _load(out, "accuracy_vs_epoch_top5")
    assert d5["series"][0]["target"]["20"][0] == pytest.approx(s["target"]["20"][0] + 0.3)

    # dataset size: gap shrinks with npc; hyper-parameter: grows with lr
    (s,) = _load(out, "accuracy_vs_npc_top1")["series"]
    assert s["x"] == [100, 300, 500]
    gaps = [t - r for t, r in zip(s["target"]["20"], s["reference"]["20"])]
    assert gaps == sorted(gaps, reverse=True)
    (s,) = _load(out, "accuracy_vs_lr_top1")["series"]
    assert s["x"] == [0.1, 0.2, 0.4] and s["key"]["epoch"] == 200 and s["key"]["npc"] == 300

    # quadrants: the stored shares, stacked correlated/forgotten/memorized
    (q,) = _load(out, "quadrants_vs_epoch")["series"]
    for i, ep in enumerate(q["x"]):
        tgt, ref = fake_accs(ep, 300)
        assert q["memorized"][i] == pytest.approx(tgt["100"] - ref["100"] + 0.05)
        assert q["correlated"][i] == 0.15 and q["forgotten"][i] == 0.05

    # probe
    (p,) = _load(out, "probe_vs_epoch")["series"]
    assert p["x"] == [50, 100, 150, 200]
    assert p["top1"] == pytest.approx([0.3 + e / 5000 + 0.03 for e in p["x"]])
    (p,) = _load(out, "probe_vs_npc")["series"]
    assert p["x"] == [100, 300, 500]

    # confidence sweep: latest epoch per (variant, npc, lr), the stored curves
    curves = _load(out, "sweep_top1")["curves"]
    main_curve = next(
        c for c in curves if c["variant"] == "periphery/projector" and c["npc"] == 300 and "lr=0.2" in c["label"]
    )
    assert main_curve["epoch"] == 200 and len(main_curve["p"]) == 100
    assert main_curve["target"][0] == pytest.approx(fake_accs(200, 300)[0]["20"] + 0.1 * 0.9)

    # variants: corner, backbone and default at (300pc, epoch 200, lr 0.2), separately
    groups = _load(out, "variants_top1")["groups"]
    g = next(g for g in groups if g["npc"] == 300 and g["epoch"] == 200 and len(g["variants"]) == 3)
    assert g["variants"] == ["corner/projector", "periphery/backbone", "periphery/projector"]
    base = fake_accs(200, 300)[0]["20"]
    assert g["target_20"] == pytest.approx([base - 0.05, base - 0.02, base])

    # no silent overwrite
    assert main(["plot", str(sweep_dir), "--out", str(out)]) == 1
    assert main(["plot", str(sweep_dir), "--out", str(out), "--force", "--format", "png"]) == 0


def test_plot_errors(tmp_path):
    with pytest.raises(DejavuError, match="no attack or probe"):
        make_figures(collect([tmp_path]), tmp_path / "o")
    assert main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
