"""The one scoring engine on generated scores: a list of comparisons, averaged over; one
comparison (an audit) against direct computation; two comparisons (the two-model test)
against the swap average of each alone; the bootstrap against explicit resamples."""

from __future__ import annotations

import numpy as np
import pytest

from dejavu.analysis.bootstrap import bootstrap_replicates, resample_blocks
from dejavu.analysis.metrics import (
    FRACTIONS,
    QUADRANTS,
    Comparison,
    Scores,
    acc_at,
    fraction_key,
    quadrant_masks,
    score_at,
    scores_from_neighbours,
    two_model,
)
from dejavu.analysis.significance import excess
from dejavu.analysis.summary import compute_all


def _scores(rng, n: int, labels: np.ndarray, p_right: float, offset: int = 0, C: int = 8, k: int = 12) -> Scores:
    nl = np.where(rng.random((n, k)) < p_right, labels[:, None], rng.integers(0, C, (n, k)))
    return scores_from_neighbours(nl, labels, np.arange(offset, offset + n), k, C)


def _comparison(rng, name: str, n: int, offset: int = 0) -> Comparison:
    labels = rng.integers(0, 8, n)
    return Comparison(name, _scores(rng, n, labels, 0.5, offset), _scores(rng, n, labels, 0.35, offset))


def test_one_comparison_is_the_direct_computation():
    rng = np.random.default_rng(0)
    c = _comparison(rng, "A", 200)
    m = compute_all([c], 8, n_boot=0)
    for k in (1, 5):
        t, r = acc_at(c.target, FRACTIONS, k), acc_at(c.reference, FRACTIONS, k)
        for j, p in enumerate(FRACTIONS):
            key = fraction_key(p)
            assert m[f"top{k}"]["target"][key] == t[j] and m[f"top{k}"]["reference"][key] == r[j]
            assert m[f"top{k}"]["score"][key] == t[j] - r[j] == score_at(m[f"top{k}"], key)
    masks = quadrant_masks(c.target, c.reference, 1)
    assert m["quadrants"] == {q: float(np.mean(masks[q])) for q in QUADRANTS}
    assert m["n_attacked"] == {"A": 200} and sum(m["per_class"]["n"]) == 200
    assert {e["set"] for e in m["rankings"]["most_memorized"]} <= {"A"}


def test_two_comparisons_are_the_swap_average():
    rng = np.random.default_rng(1)
    a, b = _comparison(rng, "A", 150), _comparison(rng, "B", 90, offset=1000)
    both = compute_all([a, b], 8, n_boot=0)
    alone = [compute_all([c], 8, n_boot=0) for c in (a, b)]
    for top in ("top1", "top5"):
        for role in ("target", "reference", "score"):
            for p, v in both[top][role].items():
                assert v == pytest.approx(0.5 * (alone[0][top][role][p] + alone[1][top][role][p]), abs=1e-15)
    for q in QUADRANTS:
        assert both["quadrants"][q] == pytest.approx(0.5 * (alone[0]["quadrants"][q] + alone[1]["quadrants"][q]))
    assert both["n_attacked"] == {"A": 150, "B": 90}
    # the four X_attk_Y arrays are the same two comparisons
    arrays = {"A_attk_A": a.target, "B_attk_A": a.reference, "B_attk_B": b.target, "A_attk_B": b.reference}
    assert [c.name for c in two_model(arrays)] == ["A", "B"]
    again = compute_all(arrays, 8, n_boot=0)
    assert again["top1"]["score"] == both["top1"]["score"]
    assert set(again["top1"]["pairs"]) == set(arrays) and "pairs" not in both["top1"]


def test_sample_reference_changes_the_sample_test_only():
    rng = np.random.default_rng(2)
    c = _comparison(rng, "A", 120)
    never = Scores(
        c.reference.index,
        c.reference.labels,
        c.reference.pred,
        c.reference.conf,
        0 * c.reference.correct1,
        0 * c.reference.correct5,
    )
    m = compute_all([Comparison("A", c.target, c.reference, never)], 8, n_boot=0)
    plain = compute_all([c], 8, n_boot=0)
    assert m["top1"]["score"] == plain["top1"]["score"]  # the population test: the reference
    assert m["quadrants"]["correlated"] == 0 and m["quadrants"]["memorized"] == pytest.approx(c.target.correct1.mean())


def test_replicates_equal_explicit_resamples_of_each_comparison():
    rng = np.random.default_rng(3)
    cs = [_comparison(rng, "A", 40), _comparison(rng, "B", 30, offset=100)]
    reps = bootstrap_replicates(cs, n_boot=20, seed=4)
    draws = next(resample_blocks([40, 30], 20, 4))
    for r in range(20):
        for p in FRACTIONS:
            per = []
            for c, d in zip(cs, draws):
                sub = [
                    Scores(*(np.asarray(getattr(s, f))[d[r]] for f in Scores.__dataclass_fields__))
                    for s in (c.target, c.reference)
                ]
                per.append(acc_at(sub[0], [p], 1)[0] - acc_at(sub[1], [p], 1)[0])
            assert reps[(1, p)][r] == pytest.approx(np.mean(per), abs=1e-12)


def test_excess_of_one_comparison():
    rng = np.random.default_rng(5)
    c, ctrl = _comparison(rng, "A", 200), _comparison(rng, "control", 150, offset=500)
    ex = excess([c], [ctrl], n_boot=200, seed=0)
    for p in FRACTIONS:
        e = ex["top1"][fraction_key(p)]
        s = acc_at(c.target, [p])[0] - acc_at(c.reference, [p])[0]
        k = acc_at(ctrl.target, [p])[0] - acc_at(ctrl.reference, [p])[0]
        assert e["score"] == s and e["control"] == k and e["excess"] == s - k
        assert e["ci95"][0] <= e["excess"] <= e["ci95"][1]
    same = excess([c], [c], n_boot=200, seed=0)["top1"]["20"]
    assert same["excess"] == 0 and same["ci95"][0] < 0 < same["ci95"][1]


def test_score_at_reads_new_and_old_results():
    assert score_at({"score": {"5": 0.1, "20": 0.2}, "dejavu_score": 0.2}, "5") == 0.1
    assert score_at({"dejavu_score": 0.3, "dejavu_score_100": 0.1}, "20") == 0.3
    assert score_at({"dejavu_score": 0.3, "dejavu_score_100": 0.1}, 100) == 0.1
    assert score_at({"dejavu_score": 0.3}, "5") is None
