"""Metrics vs hand-worked examples, brute-force expectations over tie orders, and a slow,
obviously-correct reference."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from dejavu.analysis.bootstrap import bootstrap_cis, bootstrap_replicates, resample_blocks
from dejavu.analysis.metrics import (
    ARRAYS,
    QUADRANTS,
    acc_at,
    n_top,
    quadrants,
    rankings,
    scores_from_logits,
    scores_from_neighbours,
)
from dejavu.analysis.summary import compute_all


def test_hand_worked_prediction_and_confidence():
    nl = np.array(
        [
            [2, 2, 1, 0],  # counts 0:1 1:1 2:2 -> top1 2
            [1, 0, 0, 1],  # tie 0/1 -> true class 1 is top-1 in half the tie orders
            [3, 3, 3, 3],
        ]
    )  # unanimous -> conf 0
    s = scores_from_neighbours(nl, np.array([1, 1, 3]), np.array([10, 11, 12]), k_attk=4, num_classes=5)
    assert s.pred.tolist() == [2, 0, 3]
    assert s.correct1.tolist() == [0.0, 0.5, 1.0]
    assert s.correct5.tolist() == [1.0, 1.0, 1.0]
    h0 = 2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)
    np.testing.assert_allclose(s.conf, [h0, 2 * 0.5 * math.log(0.5), 0.0])
    # k_attk=2 uses only the first two neighbours
    s2 = scores_from_neighbours(nl, np.array([1, 1, 3]), np.array([10, 11, 12]), k_attk=2, num_classes=5)
    assert s2.pred.tolist() == [2, 0, 3] and s2.correct1.tolist() == [0.0, 0.5, 1.0]
    # labels stored as (n, 1), as the original's *_labels.npy, are accepted
    s3 = scores_from_neighbours(nl, np.array([[1], [1], [3]]), np.array([10, 11, 12]), k_attk=4, num_classes=5)
    assert s3.correct1.tolist() == s.correct1.tolist()


def test_zero_vote_classes_share_the_empty_top5_places():
    # 2 classes voted, 4 zero-vote classes share the 3 remaining places of the top 5
    s = scores_from_neighbours(np.array([[0, 0, 1]]), np.array([4]), np.array([0]), num_classes=6)
    assert s.correct5[0] == pytest.approx(3 / 4)
    # with 5 classes voted, a zero-vote class never enters the top 5
    s = scores_from_neighbours(np.array([[0, 1, 2, 3, 4]]), np.array([5]), np.array([0]), num_classes=6)
    assert s.correct5[0] == 0.0


def _topk_over_tie_orders(counts: np.ndarray, true: int, k: int) -> float:
    """Brute force: torch.topk's arbitrary tie order replaced by every class priority order."""
    hits = 0
    perms = list(itertools.permutations(range(len(counts))))
    for perm in perms:
        prio = np.empty(len(counts), int)
        prio[list(perm)] = np.arange(len(counts))
        top = np.lexsort((prio, -counts))[:k]
        hits += true in top
    return hits / len(perms)


def test_expected_topk_vs_enumeration_of_tie_orders():
    import torch

    rng = np.random.default_rng(0)
    C, k_attk = 7, 6
    nl = rng.integers(0, 4, size=(40, k_attk))  # few classes voted: many ties, zero-vote places
    nl[::3] = rng.integers(0, C, size=(len(nl[::3]), k_attk))
    lab = rng.integers(0, C, 40)
    s = scores_from_neighbours(nl, lab, np.arange(40), num_classes=C)
    counts = np.stack([np.bincount(r, minlength=C) for r in nl])
    for i in range(len(nl)):
        assert s.correct1[i] == pytest.approx(_topk_over_tie_orders(counts[i], lab[i], 1))
        assert s.correct5[i] == pytest.approx(_topk_over_tie_orders(counts[i], lab[i], 5))
    # top-1 agrees with the original's torch.topk on every row without a first-place tie
    orig = torch.topk(torch.Tensor(counts), 1, dim=1).indices[:, 0].numpy()
    no_tie = (counts == counts.max(1, keepdims=True)).sum(1) == 1
    assert no_tie.sum() > 10
    assert np.array_equal(s.correct1[no_tie], (orig == lab)[no_tie].astype(float))


def _top_p_over_tie_orders(conf: np.ndarray, correct: np.ndarray, p: float) -> float:
    """Brute force: the mean of the int(p*n) most confident over every order of the examples."""
    n = len(conf)
    m = max(1, int(p * n))
    accs = [correct[np.lexsort((np.array(perm), -conf))[:m]].mean() for perm in itertools.permutations(range(n))]
    return float(np.mean(accs))


def test_top_fraction_ties_share_places_vs_enumeration():
    rng = np.random.default_rng(1)
    from dejavu.analysis.metrics import Scores

    for _trial in range(6):
        n = 7
        conf = rng.integers(0, 3, n).astype(float)  # heavy ties
        corr = rng.choice([0.0, 1.0, 0.5, 0.25], n)
        s = Scores(np.arange(n), np.zeros(n, int), np.zeros(n, int), conf, corr, corr)
        ps = [0.15, 0.3, 0.43, 0.6, 1.0]
        got = acc_at(s, ps)
        for p, g in zip(ps, got):
            assert g == pytest.approx(_top_p_over_tie_orders(conf, corr, p), abs=1e-12)


def test_accuracy_invariant_to_class_permutation_with_heavy_ties():
    rng = np.random.default_rng(2)
    C, k = 12, 8
    arrays = {}
    for y in "AB":
        lab = np.sort(rng.integers(0, C, 300))  # ImageFolder order: indices sorted by class
        idx = np.arange(300) + (0 if y == "A" else 300)
        for x in "AB":
            nl = np.where(rng.random((300, k)) < (0.5 if x == y else 0.3), lab[:, None], rng.integers(0, C, (300, k)))
            arrays[f"{x}_attk_{y}"] = (nl, lab, idx)
    perm = rng.permutation(C)

    def metrics(pi):
        pairs = {n: scores_from_neighbours(pi[nl], pi[lab], idx, k, C) for n, (nl, lab, idx) in arrays.items()}
        return compute_all(pairs, C, n_boot=0)

    a, b = metrics(np.arange(C)), metrics(perm)
    for t in ("top1", "top5"):
        for key in ("target", "reference", "pairs"):
            assert json_close(a[t][key], b[t][key])
        assert a[t]["sweep"]["target"] == pytest.approx(b[t]["sweep"]["target"], abs=1e-12)
    assert a["quadrants"] == pytest.approx(b["quadrants"], abs=1e-12)
    # the ties are real: many examples share a confidence at the 20% cut
    conf = scores_from_neighbours(*arrays["A_attk_A"], k, C).conf
    cut = np.sort(conf)[::-1][int(0.2 * len(conf)) - 1]
    assert (conf == cut).sum() > 5


def json_close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(json_close(a[k], b[k]) for k in a)
    return a == pytest.approx(b, abs=1e-12)


def slow_scores(nl, labels, index, k, C):
    out = []
    for row, lab, g in zip(nl, labels, index):
        cnt = Counter(int(v) for v in row[:k])
        ranked = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))
        ct = cnt.get(int(lab), 0)
        above = sum(v > ct for v in cnt.values())
        tied = sum(v == ct for v in cnt.values()) if ct else C - len(cnt)
        exp = {t: min(1.0, max(0.0, (t - above) / tied)) for t in (1, 5)}
        # summed over the sorted counts: equal histograms, equal confidences (ties stay ties)
        conf = sum((v / k) * math.log(v / k) for v in sorted(cnt.values(), reverse=True))
        out.append({"pred": ranked[0][0], "c1": exp[1], "c5": exp[5], "conf": conf, "index": g})
    return out


def slow_acc_values(conf, correct, p):
    n = len(conf)
    m = max(1, int(p * n))
    cut = sorted(conf, reverse=True)[m - 1]
    above = [c for f, c in zip(conf, correct) if f > cut]
    tied = [c for f, c in zip(conf, correct) if f == cut]
    return (sum(above) + (m - len(above)) * sum(tied) / len(tied)) / m


def slow_acc(rows, p, key):
    return slow_acc_values([r["conf"] for r in rows], [r[key] for r in rows], p)


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
    slow = {name: slow_scores(*arrays[name], 10, 7) for name in ARRAYS}
    for name in ARRAYS:
        s = pairs[name]
        assert s.pred.tolist() == [r["pred"] for r in slow[name]]
        np.testing.assert_allclose(s.conf, [r["conf"] for r in slow[name]], atol=1e-12)
        np.testing.assert_allclose(s.correct5, [r["c5"] for r in slow[name]], atol=1e-12)
    for t, key in (("top1", "c1"), ("top5", "c5")):
        for p in (0.05, 0.2, 1.0):
            pk = str(int(round(p * 100)))
            tgt = 0.5 * (slow_acc(slow["A_attk_A"], p, key) + slow_acc(slow["B_attk_B"], p, key))
            ref = 0.5 * (slow_acc(slow["B_attk_A"], p, key) + slow_acc(slow["A_attk_B"], p, key))
            assert m[t]["target"][pk] == pytest.approx(tgt, abs=1e-12)
            assert m[t]["reference"][pk] == pytest.approx(ref, abs=1e-12)
            for name in ARRAYS:
                assert m[t]["pairs"][name][pk] == pytest.approx(slow_acc(slow[name], p, key), abs=1e-12)
        assert m[t]["dejavu_score"] == pytest.approx(m[t]["target"]["20"] - m[t]["reference"]["20"])
        sw = m[t]["sweep"]
        assert len(sw["p"]) == 100 and sw["p"][0] == pytest.approx(0.1) and sw["p"][-1] == pytest.approx(1.0)
        for i in range(100):
            pi = sw["p"][i]
            assert sw["target"][i] == pytest.approx(
                0.5 * (slow_acc(slow["A_attk_A"], pi, key) + slow_acc(slow["B_attk_B"], pi, key)), abs=1e-12
            )
    # quadrants, swap-averaged expectations
    share = {}
    for y, t, r in (("A", "A_attk_A", "B_attk_A"), ("B", "B_attk_B", "A_attk_B")):
        c = Counter()
        for rt, rr in zip(slow[t], slow[r]):
            a, b = rt["c1"], rr["c1"]
            c["memorized"] += a * (1 - b)
            c["correlated"] += a * b
            c["forgotten"] += (1 - a) * b
            c["unassociated"] += (1 - a) * (1 - b)
        share[y] = {q: c[q] / len(slow[t]) for q in QUADRANTS}
    for q, v in m["quadrants"].items():
        assert v == pytest.approx(0.5 * (share["A"][q] + share["B"][q]))
    assert sum(m["quadrants"].values()) == pytest.approx(1.0)
    # per class: target accuracy of class 0, swap-averaged
    a0 = []
    for t in ("A_attk_A", "B_attk_B"):
        lab = arrays[t][1]
        a0.append(np.mean([r["c1"] for r, lb in zip(slow[t], lab) if lb == 0]))
    assert m["per_class"]["target"][0] == pytest.approx(np.mean(a0))


def test_n_top_truncates_as_the_original():
    assert n_top(0.2, 2900) == 580 and n_top(0.05, 10) == 1 and n_top(0.01, 10) == 1
    ps = np.linspace(0.1, 1, 100)
    assert n_top(ps, 977).tolist() == [max(1, int(p * 977)) for p in ps]


def test_rankings_order():
    rng = np.random.default_rng(4)
    _, pairs = random_pairs(rng)
    r = rankings(pairs, 1, top=1000)
    mem = r["most_memorized"]
    want = set()
    for y, t, f in (("A", "A_attk_A", "B_attk_A"), ("B", "B_attk_B", "A_attk_B")):
        T, R = pairs[t], pairs[f]
        for g, a, b in zip(T.index, T.correct1, R.correct1):
            probs = [a * (1 - b), a * b, (1 - a) * b, (1 - a) * (1 - b)]
            if int(np.argmax(probs)) == 0:
                want.add((y, int(g)))
    assert mem and {(e["set"], e["index"]) for e in mem} == want
    keys = [e["conf_target"] - e["conf_reference"] for e in mem]
    assert keys == sorted(keys, reverse=True)
    cor = r["most_correlated"]
    assert [e["score"] for e in cor] == sorted([e["score"] for e in cor], reverse=True)
    assert 0 < quadrants(pairs)["memorized"] < 1


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


def test_bootstrap_equals_explicit_resamples():
    """The vectorised replicates equal a straightforward loop over the same resamples."""
    rng = np.random.default_rng(6)
    _, pairs = random_pairs(rng, n=(40, 30))
    reps = bootstrap_replicates(pairs, n_boot=25, seed=3)
    draws = dict(zip("AB", next(resample_blocks([40, 30], 25, 3))))
    sets = {"A": ("A_attk_A", "B_attk_A"), "B": ("B_attk_B", "A_attk_B")}
    for r in range(25):
        for topk in (1, 5):
            for p in (0.05, 0.2, 1.0):
                acc = {}
                for y, names in sets.items():
                    for name in names:
                        s = pairs[name]
                        rep = draws[y][r]
                        acc[name] = slow_acc_values(list(s.conf[rep]), list(s.correct(topk)[rep]), p)
                want = 0.5 * (acc["A_attk_A"] + acc["B_attk_B"]) - 0.5 * (acc["B_attk_A"] + acc["A_attk_B"])
                assert reps[(topk, p)][r] == pytest.approx(want, abs=1e-12)
        mem = [
            np.mean([pairs[t].correct1[i] * (1 - pairs[f].correct1[i]) for i in draws[y][r]])
            for y, (t, f) in sets.items()
        ]
        assert reps["memorized"][r] == pytest.approx(0.5 * sum(mem), abs=1e-12)


def test_logits_variant():
    lg = np.array([[0.1, 2.0, 0.3], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]])
    s = scores_from_logits(lg, np.array([1, 1, 0]), np.array([0, 1, 2]))
    assert s.pred.tolist() == [1, 0, 2]
    assert s.correct1.tolist() == [1.0, 0.5, 0.0]
    np.testing.assert_allclose(s.conf, [2.0, 1.0, 5.0])
