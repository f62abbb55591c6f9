"""Metrics vs hand-worked examples and a slow, obviously-correct reference."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from dejavu.analysis.bootstrap import bootstrap_cis
from dejavu.analysis.metrics import (PAIRS, acc_at, compute_all, n_top, quadrants, rankings,
                                     scores_from_logits, scores_from_neighbours)


def test_hand_worked_prediction_and_confidence():
    nl = np.array([[2, 2, 1, 0],   # counts 0:1 1:1 2:2 -> top1 2
                   [1, 0, 0, 1],   # tie 0/1 -> smaller class 0
                   [3, 3, 3, 3]])  # unanimous -> conf 0
    s = scores_from_neighbours(nl, np.array([1, 1, 3]), np.array([10, 11, 12]), k_attk=4, num_classes=5)
    assert s.pred.tolist() == [2, 0, 3]
    assert s.correct1.tolist() == [False, False, True]
    assert s.correct5.tolist() == [True, True, True]
    h0 = 2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)
    np.testing.assert_allclose(s.conf, [h0, 2 * 0.5 * math.log(0.5), 0.0])
    # k_attk=2 uses only the first two neighbours
    s2 = scores_from_neighbours(nl, np.array([1, 1, 3]), np.array([10, 11, 12]), k_attk=2, num_classes=5)
    assert s2.pred.tolist() == [2, 0, 3] and s2.correct1.tolist() == [False, False, True]


def test_zero_count_class_is_never_a_top5_prediction():
    s = scores_from_neighbours(np.array([[0, 0, 1]]), np.array([4]), np.array([0]), num_classes=6)
    assert not s.correct5[0]


def test_population_ranking_ties_by_index():
    # conf: equal for all; ranking falls back to dataset index ascending
    nl = np.array([[0, 1], [0, 1], [0, 1], [0, 1]])
    s = scores_from_neighbours(nl, np.array([0, 1, 0, 1]), np.array([7, 3, 5, 1]), num_classes=2)
    # order by index: 1 (label 1 -> pred 0 wrong), 3 (wrong), 5 (right), 7 (right)
    assert acc_at(s, [0.25, 0.5, 0.75, 1.0]).tolist() == [0.0, 0.0, 1 / 3, 0.5]
    assert n_top(0.2, 2900) == 580 and n_top(0.05, 10) == 1 and n_top(0.01, 10) == 1


def slow_scores(nl, labels, index, k):
    out = []
    for row, lab, g in zip(nl, labels, index):
        cnt = Counter(int(v) for v in row[:k])
        ranked = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))
        top = [c for c, _ in ranked]
        conf = sum((v / k) * math.log(v / k) for v in cnt.values())
        out.append({"pred": top[0], "c1": top[0] == lab, "c5": lab in top[:5], "conf": conf, "index": g})
    return out


def slow_acc(rows, p, key):
    ranked = sorted(rows, key=lambda r: (-r["conf"], r["index"]))
    m = max(1, int(math.floor(p * len(rows) + 1e-9)))
    return sum(r[key] for r in ranked[:m]) / m


def random_pairs(rng, n=(120, 90), C=7, k=15):
    arrays, pairs = {}, {}
    for y, ny in zip("AB", n):
        idx = np.sort(rng.choice(10_000, ny, replace=False))
        lab = rng.integers(0, C, ny)
        for x in "AB":
            p_right = 0.45 if x == y else 0.25
            nl = np.where(rng.random((ny, k)) < p_right, lab[:, None], rng.integers(0, C, (ny, k)))
            arrays[f"{x}_attk_{y}"] = (nl, lab, idx)
            pairs[f"{x}_attk_{y}"] = scores_from_neighbours(nl, lab, idx, k_attk=10, num_classes=C)
    return arrays, pairs


def test_compute_all_matches_slow_reference():
    rng = np.random.default_rng(3)
    arrays, pairs = random_pairs(rng)
    m = compute_all(pairs, 7, n_boot=50)
    slow = {name: slow_scores(*arrays[name], 10) for name in PAIRS}
    for name in PAIRS:
        s = pairs[name]
        assert s.pred.tolist() == [r["pred"] for r in slow[name]]
        np.testing.assert_allclose(s.conf, [r["conf"] for r in slow[name]], atol=1e-12)
    for t, key in (("top1", "c1"), ("top5", "c5")):
        for p in (0.05, 0.2, 1.0):
            pk = str(int(round(p * 100)))
            tgt = 0.5 * (slow_acc(slow["A_attk_A"], p, key) + slow_acc(slow["B_attk_B"], p, key))
            ref = 0.5 * (slow_acc(slow["B_attk_A"], p, key) + slow_acc(slow["A_attk_B"], p, key))
            assert m[t]["target"][pk] == pytest.approx(tgt)
            assert m[t]["reference"][pk] == pytest.approx(ref)
            for name in PAIRS:
                assert m[t]["pairs"][name][pk] == pytest.approx(slow_acc(slow[name], p, key))
        assert m[t]["dejavu_score"] == pytest.approx(m[t]["target"]["20"] - m[t]["reference"]["20"])
        sw = m[t]["sweep"]
        assert len(sw["p"]) == 100 and sw["p"][0] == pytest.approx(0.1) and sw["p"][-1] == pytest.approx(1.0)
        p37 = sw["p"][30]
        assert sw["target"][30] == pytest.approx(
            0.5 * (slow_acc(slow["A_attk_A"], p37, key) + slow_acc(slow["B_attk_B"], p37, key)))
    # quadrants, swap-averaged
    share = {}
    for y, t, r in (("A", "A_attk_A", "B_attk_A"), ("B", "B_attk_B", "A_attk_B")):
        c = Counter()
        for rt, rr in zip(slow[t], slow[r]):
            c[{(1, 0): "memorized", (1, 1): "correlated", (0, 1): "forgotten", (0, 0): "unassociated"}[
                (int(rt["c1"]), int(rr["c1"]))]] += 1
        share[y] = {q: c[q] / len(slow[t]) for q in ("memorized", "correlated", "forgotten", "unassociated")}
    for q, v in m["quadrants"].items():
        assert v == pytest.approx(0.5 * (share["A"][q] + share["B"][q]))
    assert sum(m["quadrants"].values()) == pytest.approx(1.0)
    # per class: target accuracy of class 0, swap-averaged
    a0 = []
    for t in ("A_attk_A", "B_attk_B"):
        lab = arrays[t][1]
        a0.append(np.mean([r["c1"] for r, l in zip(slow[t], lab) if l == 0]))
    assert m["per_class"]["target"][0] == pytest.approx(np.mean(a0))


def test_rankings_order():
    rng = np.random.default_rng(4)
    _, pairs = random_pairs(rng)
    r = rankings(pairs, 1, top=1000)
    mem = r["most_memorized"]
    assert all(e["pred_target"] == e["label"] != e["pred_reference"] for e in mem)
    keys = [e["conf_target"] - e["conf_reference"] for e in mem]
    assert keys == sorted(keys, reverse=True)
    cor = r["most_correlated"]
    assert all(e["pred_target"] == e["label"] == e["pred_reference"] for e in cor)
    assert [e["score"] for e in cor] == sorted([e["score"] for e in cor], reverse=True)
    q = quadrants(pairs)
    nA, nB = len(pairs["A_attk_A"].index), len(pairs["B_attk_B"].index)
    nmemA = sum(e["set"] == "A" for e in mem)
    nmemB = sum(e["set"] == "B" for e in mem)
    assert q["memorized"] == pytest.approx(0.5 * (nmemA / nA + nmemB / nB))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(5)
    _, pairs = random_pairs(rng, n=(300, 300))
    a = bootstrap_cis(pairs, n_boot=300, seed=1)
    b = bootstrap_cis(pairs, n_boot=300, seed=1)
    assert a == b
    m = compute_all(pairs, 7, n_boot=300, seed=1)
    lo, hi = m["top1"]["ci95"]["dejavu_score_100"]
    assert lo < m["top1"]["dejavu_score_100"] < hi
    lo, hi = m["quadrants_ci95"]["memorized"]
    assert lo < m["quadrants"]["memorized"] < hi


def test_bootstrap_weighted_top_fraction_matches_explicit_resample():
    from dejavu.analysis.bootstrap import weighted_top_acc

    rng = np.random.default_rng(6)
    _, pairs = random_pairs(rng, n=(40, 40))
    s = pairs["A_attk_A"]
    w = rng.multinomial(40, np.full(40, 1 / 40), size=5)
    got = weighted_top_acc(w, s, 0.2, 1)
    for r in range(5):
        rep = np.repeat(np.arange(40), w[r])
        order = np.lexsort((s.index[rep], -s.conf[rep]))
        m = n_top(0.2, 40)
        assert got[r] == pytest.approx(s.correct1[rep][order][:m].mean())


def test_logits_variant():
    lg = np.array([[0.1, 2.0, 0.3], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    s = scores_from_logits(lg, np.array([1, 1, 0]), np.array([0, 1, 2]))
    assert s.pred.tolist() == [1, 0, 2]
    assert s.correct1.tolist() == [True, False, False]
    np.testing.assert_allclose(s.conf, [2.0, 1.0, 5.0])
