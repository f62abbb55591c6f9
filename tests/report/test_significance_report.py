"""Score against the held-out control in `dejavu plot` and `dejavu report`:
per-pair score/control/excess and the interval over pairs differing only in the seed."""

from __future__ import annotations

import json

import numpy as np
from report_data import write_attack_result

from dejavu.cli import main
from dejavu.io import atomic_write_json, read_json
from dejavu.report.collect import collect, seed_groups
from dejavu.report.plots import significance_table


def _add_control(path, control: float, se: float = 0.01):
    res = read_json(path / "results.json")
    block = {}
    for top in ("top1", "top5"):
        block[top] = {}
        for p, key in (("20", "dejavu_score"), ("100", "dejavu_score_100")):
            s = res["metrics"][top][key]
            e = s - control
            ci = [e - 2 * se, e + 2 * se]
            block[top][p] = {
                "score": s,
                "control": control,
                "excess": e,
                "ci95": ci,
                "se": se,
                "excludes_zero": ci[0] > 0 or ci[1] < 0,
            }
    res["control"] = {
        "source": {"kind": "partition"},
        "metrics": {},
        "excess": block,
        "counts": {"A": {"attacked": 90, "bbox": 100}, "B": {"attacked": 88, "bbox": 100}},
    }
    atomic_write_json(path / "results.json", res)


CONTROLS = {0: 0.02, 1: -0.01, 2: 0.04}


def _seed_sweep(root):
    for seed, c in CONTROLS.items():
        for ep in (500, 1000):
            d = root / "attack" / f"vicreg_300pc_seed{seed}" / f"ep{ep}"
            write_attack_result(d, epoch=ep, model_cfg={"seed": seed})
            _add_control(d, c)
    return root


def test_seed_groups_and_table(tmp_path):
    res = collect([_seed_sweep(tmp_path / "run")])
    groups = seed_groups(res.attacks)
    assert len(groups) == 2 and all([r.seed for r in g] == [0, 1, 2] for g in groups.values())
    rows = significance_table(res.attacks)
    last = next(r for r in rows if r["epoch"] == 1000)
    score = res.attacks[-1].score()
    assert last["seeds"] == [0, 1, 2] and last["controls"] == [CONTROLS[s] for s in (0, 1, 2)]
    assert np.allclose(last["excesses"], [score - CONTROLS[s] for s in (0, 1, 2)])
    pl = last["pair_level"]
    assert pl["n_pairs"] == 3 and np.isclose(pl["mean"], score - np.mean(list(CONTROLS.values())))
    assert pl["distinguishable"] and "mean of 3 model pairs" in last["verdict"]


def test_plot_figure_and_text(tmp_path, capsys):
    root = _seed_sweep(tmp_path / "run")
    assert main(["plot", str(root), "--out", str(tmp_path / "plots"), "--format", "png"]) == 0
    out = capsys.readouterr().out
    assert "deja vu score against the held-out control" in out and "mean of 3 model pairs" in out
    assert "seed 1: " in out
    fig = json.loads((tmp_path / "plots" / "significance_top1.json").read_text())
    pts = fig["settings"][0]["points"]
    assert [p["epoch"] for p in pts] == [500, 1000] and len(pts[0]["excesses"]) == 3
    idx = json.loads((tmp_path / "plots" / "figures.json").read_text())
    assert idx["significance"] and (tmp_path / "plots" / "significance_top1.png").is_file()


def test_report_control_section(tmp_path):
    root = _seed_sweep(tmp_path / "run")
    assert main(["report", str(root)]) == 0
    html = (root / "report.html").read_text()
    assert "Score against the held-out control" in html and "mean of 3 model pairs" in html
    assert "<th>seed</th>" in html and "distinguishable from zero" in html
    # one pair, no seed sweep: the example-level CI, said not to cover training randomness
    one = tmp_path / "one"
    write_attack_result(one / "attack" / "vicreg_300pc" / "ep100", epoch=100)
    _add_control(one / "attack" / "vicreg_300pc" / "ep100", 0.0)
    assert main(["report", str(one)]) == 0
    assert "training randomness is not covered" in (one / "report.html").read_text()
    # no control at all: said plainly
    none = tmp_path / "none"
    write_attack_result(none / "attack" / "vicreg_300pc" / "ep100", epoch=100)
    assert main(["report", str(none)]) == 0
    assert "No held-out control in this attack" in (none / "report.html").read_text()
