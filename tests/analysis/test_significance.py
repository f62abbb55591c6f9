"""Calibrated significance: Student t, the excess over the control with its
paired bootstrap over both example sets, and the interval over model pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dejavu.analysis.metrics import population, scores_from_neighbours
from dejavu.analysis.significance import (
    PRIMARY,
    control_summary_text,
    example_df,
    excess,
    pair_level,
    pairs_from_results,
    primary_endpoint,
    t_quantile,
    verdict_text,
    welch_satterthwaite,
)


def test_t_quantile_matches_tables():
    # two-sided 95% critical values from standard tables
    for df, want in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert abs(t_quantile(0.975, df) - want) < 1e-3, df
    assert abs(t_quantile(0.95, 10) - 1.8125) < 1e-3
    assert abs(t_quantile(0.975, 2000) - 1.9612) < 1e-3  # tends to the normal quantile
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)
    assert 2.7764 < t_quantile(0.975, 3.5) < 3.1824  # fractional df (Welch-Satterthwaite), between 3 and 4
    assert abs(t_quantile(0.975, math.inf) - 1.95996) < 1e-4


def test_welch_satterthwaite_degrees_of_freedom():
    """Hand-worked: (a + b)^2 / (a^2/da + b^2/db)."""
    a, b = 0.0004, 0.0002
    assert math.isclose(welch_satterthwaite([(a, 4), (b, 99)]), (a + b) ** 2 / (a * a / 4 + b * b / 99))
    assert welch_satterthwaite([(a, 4), (0.0, 99)]) == 4  # one part: its own df
    assert welch_satterthwaite([(a, 4), (b, math.inf)]) == (a + b) ** 2 / (a * a / 4)  # a known part adds none
    # the pair-level interval: df from both estimated parts, between N-1 and N-1 + example df
    e, se = [0.10, 0.05, 0.12, 0.08], [0.02, 0.03, 0.02, 0.01]
    ws = pair_level(e, se, example_df=180)
    v1, v2 = float(np.var(e, ddof=1)) / 4, float(np.mean(np.square(se)))
    assert math.isclose(ws["df"], (v1 + v2) ** 2 / (v1 * v1 / 3 + v2 * v2 / 180))
    assert 3 < ws["df"] < 183 and "Welch-Satterthwaite" in ws["df_rule"]
    assert math.isclose(ws["t"], t_quantile(0.975, ws["df"]))
    assert ws["ci95"][1] - ws["ci95"][0] < pair_level(e, se)["ci95"][1] - pair_level(e, se)["ci95"][0]
    assert pair_level(e, se)["df"] == 3 and "unknown" in pair_level(e, se)["df_rule"]


def test_primary_endpoint_named_in_results_and_verdict():
    r = _result(0.30, 0.05)
    r["counts"] = {"A": {"attacked": 90}, "B": {"attacked": 95}}
    r["control"]["excess"]["n_boot"] = 1000
    pe = primary_endpoint(r)
    assert pe["top"] == "top1" and pe["p"] == "20" and pe["epoch"] == "final" and pe["quantity"] == "excess"
    assert math.isclose(pe["value"], 0.25) and "secondary" in pe and pe["name"] == PRIMARY["name"]
    assert example_df([r, r]) == 89 and example_df([{"metrics": {}}]) is None
    assert (
        primary_endpoint({"metrics": {"top1": {"dejavu_score": 0.1, "ci95": {"dejavu_score": [0, 0.2]}}}})["quantity"]
        == "dejavu_score"
    )
    assert "primary endpoint -- verdict (top-1, 20%)" in control_summary_text(r)


def _pairs(rng, n, acc_target, acc_ref, classes=12, k=10):
    """Four X_attk_Y scores with the given per-example chance of a correct majority vote."""
    out = {}
    for y in "AB":
        labels = rng.integers(0, classes, n)
        index = np.arange(n) + (0 if y == "A" else n)
        for x in "AB":
            acc = acc_target if x == y else acc_ref
            right = rng.random(n) < acc
            nl = rng.integers(0, classes, (n, k))
            agree = rng.integers(k // 2 + 1, k + 1, n)  # how many neighbours vote for the answer
            wrong = (labels + 1 + rng.integers(0, classes - 1, n)) % classes
            answer = np.where(right, labels, wrong)
            for i in range(n):
                nl[i, : agree[i]] = answer[i]
            out[f"{x}_attk_{y}"] = scores_from_neighbours(nl, labels, index, k, classes)
    return out


def test_excess_is_score_minus_control_and_covers_zero_under_null():
    rng = np.random.default_rng(0)
    pairs = _pairs(rng, 300, 0.5, 0.5)
    ctrl = _pairs(rng, 300, 0.5, 0.5)
    ex = excess(pairs, ctrl, n_boot=400, seed=1)
    for top in ("top1", "top5"):
        for p, f in (("20", 0.2), ("100", 1.0)):
            s = population(pairs, int(top[-1]), fractions=(f,))
            c = population(ctrl, int(top[-1]), fractions=(f,))
            want_s = s["target"][p] - s["reference"][p]
            want_c = c["target"][p] - c["reference"][p]
            got = ex[top][p]
            assert math.isclose(got["score"], want_s) and math.isclose(got["control"], want_c)
            assert math.isclose(got["excess"], want_s - want_c)
            assert got["ci95"][0] <= got["excess"] <= got["ci95"][1] and got["se"] > 0
    assert "not training randomness" in ex["covers"]
    # a strong effect on the private sets only: the excess and its CI exclude 0
    mem = _pairs(rng, 300, 0.9, 0.3)
    ex2 = excess(mem, ctrl, n_boot=400, seed=1)
    assert ex2["top1"]["100"]["excess"] > 0.4 and ex2["top1"]["100"]["excludes_zero"]
    assert ex2["top1"]["100"]["ci95"][0] > 0.3
    # the interval over both sets is wider than the one over the private sets alone
    from dejavu.analysis.bootstrap import bootstrap_cis

    only = bootstrap_cis(mem, n_boot=400, seed=1)["top1"]["dejavu_score_100"]
    both = ex2["top1"]["100"]["ci95"]
    assert both[1] - both[0] > only[1] - only[0]


def test_excess_bootstrap_calibrated_on_fixed_models():
    """Over repeated null draws, the 95% CI of the excess excludes 0 about 5% of the time."""
    rng = np.random.default_rng(3)
    hits = 0
    for rep in range(40):
        ex = excess(_pairs(rng, 150, 0.5, 0.5), _pairs(rng, 150, 0.5, 0.5), n_boot=200, seed=rep)
        hits += ex["top1"]["100"]["excludes_zero"]
    assert hits <= 6  # 40 draws at 5%: P(> 6) < 2%


def test_pair_level_interval():
    e, se = [0.10, 0.05, 0.12, 0.08], [0.02, 0.03, 0.02, 0.01]
    pl = pair_level(e, se)
    sd = float(np.std(e, ddof=1))
    want_se = math.sqrt(sd**2 / 4 + np.mean(np.square(se)))
    t = 3.182446305284263
    assert math.isclose(pl["mean"], np.mean(e)) and math.isclose(pl["se"], want_se)
    assert np.allclose(pl["ci95"], [np.mean(e) - t * want_se, np.mean(e) + t * want_se], atol=1e-6)
    assert pl["distinguishable"] and pl["n_pairs"] == 4 and pl["df"] == 3
    # spread over pairs alone (no example standard errors): narrower, and said so
    alone = pair_level(e)
    assert alone["ci95"][1] - alone["ci95"][0] < pl["ci95"][1] - pl["ci95"][0]
    assert "training randomness only" in alone["covers"]
    # centred values: not distinguishable; one pair: no interval at all
    assert pair_level([0.1, -0.08, 0.02], [0.05] * 3)["distinguishable"] is False
    one = pair_level([0.3], [0.01])
    assert one["distinguishable"] is None and "does not cover training randomness" in one["covers"]


def _result(score, control, se=0.02, lo=None, hi=None):
    e = score - control
    x = {
        "score": score,
        "control": control,
        "excess": e,
        "se": se,
        "ci95": [lo if lo is not None else e - 2 * se, hi if hi is not None else e + 2 * se],
    }
    x["excludes_zero"] = x["ci95"][0] > 0 or x["ci95"][1] < 0
    block = {t: {p: dict(x) for p in ("20", "100")} for t in ("top1", "top5")}
    return {
        "metrics": {"top1": {"dejavu_score": score, "dejavu_score_100": score}},
        "control": {
            "source": {"kind": "partition"},
            "excess": block,
            "counts": {"A": {"attacked": 90, "bbox": 100}, "B": {"attacked": 95, "bbox": 100}},
        },
    }


def test_pairs_from_results_and_verdicts():
    res = [_result(0.30, 0.05), _result(0.25, -0.02), _result(0.35, 0.04)]
    pl = pairs_from_results(res)
    assert pl["n_pairs"] == 3 and pl["scores"] == [0.30, 0.25, 0.35] and pl["controls"] == [0.05, -0.02, 0.04]
    assert math.isclose(pl["mean"], np.mean([0.25, 0.27, 0.31]))
    text = verdict_text(res[0]["control"]["excess"]["top1"]["20"], pl)
    assert "mean of 3 model pairs" in text and "distinguishable from zero" in text and "NOT" not in text
    one = verdict_text(res[0]["control"]["excess"]["top1"]["20"])
    assert "training randomness is not covered" in one and "excludes 0" in one
    null = pairs_from_results([_result(0.05, 0.02, se=0.05), _result(-0.03, 0.01, se=0.05)])
    assert "NOT distinguishable" in verdict_text(res[0]["control"]["excess"]["top1"]["20"], null)
    # without a control: aggregated on the score and said so
    plain = pairs_from_results([{"metrics": r["metrics"]} for r in res])
    assert plain["controls"] is None and "no held-out control" in plain["statistic"]
    txt = control_summary_text(res[0])
    assert "score  control   excess" in txt and "verdict (top-1, 20%)" in txt
    assert "held-out control: none" in control_summary_text({"metrics": {}})


def test_shared_example_variance():
    """Identical pairs share all their example noise (shared = per-pair bootstrap variance);
    pairs with independent luck on the same examples share little; misaligned pairs refused."""
    from dejavu.analysis.significance import shared_example_variance

    rng = np.random.default_rng(5)
    pairs, ctrl = _pairs(rng, 200, 0.5, 0.5), _pairs(rng, 200, 0.5, 0.5)
    same = shared_example_variance([(pairs, ctrl)] * 3, n_boot=300, seed=2)[("top1", "100")]
    se = excess(pairs, ctrl, n_boot=300, seed=9)["top1"]["100"]["se"]
    assert 0.6 < same / se**2 < 1.6
    others = []
    for _ in range(3):  # same examples and labels, independent model luck
        p, c = _pairs(np.random.default_rng(11), 200, 0.5, 0.5), _pairs(np.random.default_rng(12), 200, 0.5, 0.5)
        r = np.random.default_rng(int(rng.integers(1 << 20)))
        for d in (p, c):
            for name, s in d.items():
                flip = r.random(len(s.index)) < 0.5
                d[name] = type(s)(
                    s.index, s.labels, s.pred, s.conf, np.where(flip, 1.0 - s.correct1, s.correct1), s.correct5
                )
        others.append((p, c))
    indep = shared_example_variance(others, n_boot=300, seed=2)[("top1", "100")]
    assert abs(indep) < 0.3 * same
    shifted = {k: type(v)(v.index + 1000, v.labels, v.pred, v.conf, v.correct1, v.correct5) for k, v in pairs.items()}
    with pytest.raises(ValueError, match="different examples"):
        shared_example_variance([(pairs, ctrl), (shifted, ctrl)], n_boot=10)
    pl = pair_level([0.1, 0.2, 0.15], [0.05] * 3, shared_var=0.0004)
    assert pl["example_var"] == 0.0004 and "joint bootstrap" in pl["example_term"]


def test_pairs_on_their_own_partitions_get_a_plain_student_t():
    """Pairs attacked on different partitions are independent replicates: the
    interval is mean +- t(0.975, N-1) s / sqrt(N) (no example term), and said so."""
    res = [_result(0.30, 0.05), _result(0.25, -0.02), _result(0.35, 0.04)]
    for i, r in enumerate(res):
        r["partition"] = f"runs/x/partition/seed{i}"
    pl = pairs_from_results(res)
    e = [0.25, 0.27, 0.31]
    half = t_quantile(0.975, 2) * float(np.std(e, ddof=1)) / math.sqrt(3)
    assert np.allclose(pl["ci95"], [np.mean(e) - half, np.mean(e) + half])
    assert pl["df"] == 2 and pl["partitions"] == "one per pair" and "independent replicates" in pl["covers"]
    for r in res:
        r["partition"] = "runs/x/partition"
    shared = pairs_from_results(res)
    assert shared["partitions"] == "shared by the pairs" and shared["ci95"][1] - shared["ci95"][0] > 2 * half
