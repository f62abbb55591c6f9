"""How an audit's "memorized" may be read: an upper bound without a control;
warnings for a control too small to judge by, or an excess significant only because the
control came out negative."""

from __future__ import annotations

from dejavu.analysis.significance import control_summary_lines
from dejavu.audit.control import MIN_CONTROL_CROPS, memorization_reading
from dejavu.audit.run import summary_text


def _res(score_ci, control=None):
    q = {"memorized": 0.22, "correlated": 0.3, "forgotten": 0.1, "unassociated": 0.38}
    acc = {"5": 0.5, "20": 0.5, "100": 0.3}
    top = {"target": acc, "reference": acc, "dejavu_score": 0.2, "ci95": {"dejavu_score": score_ci}}
    res = {
        "metrics": {"top1": top, "top5": top, "quadrants": q},
        "counts": {"audit": {"attacked": 40, "bbox": 50}},
        "sets": {"audit": "bbox_A", "classifier_train": "bbox_B"},
        "classifier": {"trained": True},
    }
    if control is not None:
        res["control"] = control
    return res


def _control(n, score, c, ci):
    ex = {"score": score, "control": c, "excess": score - c, "ci95": ci, "excludes_zero": ci[0] > 0 or ci[1] < 0}
    return {
        "source": {"kind": "partition"},
        "counts": {"control": {"attacked": n, "bbox": n}},
        "excess": {t: {p: ex for p in ("5", "20", "100")} for t in ("top1", "top5")},
    }


def test_without_control_memorized_is_an_upper_bound():
    res = _res([-0.3, 0.6])  # the random-init network of the issue: +0.200 CI [-0.300, +0.600]
    r = memorization_reading(res)
    assert r["reading"] == "upper bound (no control)" and "UPPER BOUNDS" in r["notes"][0]
    text = summary_text(res)
    assert "memorized <= 22.0%" in text and "(an upper bound on memorization: no control)" in text
    assert "memorized 0.220" not in text and "--control partition" in text


def test_small_control_and_negative_control_warned():
    res = _res([-0.3, 0.6], _control(MIN_CONTROL_CROPS - 1, 0.2, -0.4, [0.1, 1.0]))
    notes = memorization_reading(res)["notes"]
    assert any(f"only {MIN_CONTROL_CROPS - 1} crops" in n for n in notes)
    assert any("only because the control came out negative (-0.400)" in n for n in notes)
    assert "note: the control has only" in summary_text(res) and control_summary_lines(res)


def test_a_sound_control_reads_plainly():
    res = _res([0.1, 0.4], _control(200, 0.25, 0.02, [0.05, 0.4]))
    r = memorization_reading(res)
    assert r == {"reading": "excess over the held-out control", "notes": []}
    assert "upper bound" not in summary_text(res)
    # a negative control with a score significant on its own is no reason to warn
    res = _res([0.1, 0.4], _control(200, 0.25, -0.1, [0.05, 0.6]))
    assert memorization_reading(res)["notes"] == []
