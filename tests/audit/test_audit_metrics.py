"""One-model metrics on hand-made scores: the population and sample tests and the paired
bootstrap, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from dejavu.analysis.metrics import Comparison, scores_from_logits, scores_from_neighbours
from dejavu.analysis.summary import compute_all
from dejavu.audit.classifier import classifier_scores, holdout_split


def _scores(seed: int, n: int = 400, C: int = 10, k: int = 20, p_right: float = 0.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    nl = rng.integers(0, C, (n, k))
    right = rng.random((n, k)) < p_right
    nl[right] = np.repeat(labels[:, None], k, 1)[right]
    return scores_from_neighbours(nl, labels, np.arange(n) * 3, k, C), labels


def test_scores_against_direct_computation():
    t, labels = _scores(0, p_right=0.5)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(len(labels), 10))
    r = classifier_scores(logits, labels, t.index, "neg_entropy")
    m = compute_all([Comparison("A", t, r)], 10, n_boot=200, seed=0)
    acc_t = t.correct1[np.argsort(-t.conf, kind="stable")[:80]].mean()  # 20% of 400 (ties aside)
    assert m["top1"]["target"]["100"] == pytest.approx(t.correct1.mean())
    assert m["top1"]["reference"]["100"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert m["top1"]["target"]["20"] == pytest.approx(acc_t, abs=0.02)  # ties share the last places
    q = m["quadrants"]
    assert q["memorized"] == pytest.approx(np.mean(t.correct1 * (1 - r.correct1)))
    assert q["correlated"] == pytest.approx(np.mean(t.correct1 * r.correct1))
    assert m["top1"]["dejavu_score"] > 0.2
    lo, hi = m["top1"]["ci95"]["dejavu_score"]
    assert lo < m["top1"]["dejavu_score"] < hi and lo > 0
    # the classifier's confidence: negative entropy of its softmax (max_prob on request)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(r.conf, (p * np.log(p)).sum(1))
    assert np.allclose(classifier_scores(logits, labels, t.index, "max_prob").conf, p.max(1))
    assert np.array_equal(r.pred, scores_from_logits(logits, labels, t.index).pred)


def test_same_scores_give_zero_score_and_ci():
    from dataclasses import replace

    t, _ = _scores(2)
    r = replace(t, conf=t.conf.copy())  # a classifier that answers exactly as the model
    m = compute_all([Comparison("A", t, r)], 10, n_boot=100)
    assert m["top1"]["dejavu_score"] == 0 and m["top1"]["ci95"]["dejavu_score"] == [0.0, 0.0]
    assert m["quadrants"]["memorized"] == pytest.approx(m["quadrants"]["forgotten"])
    assert m["rankings"]["most_memorized"] == [] or all(
        e["pred_target"] == e["pred_reference"] for e in m["rankings"]["most_memorized"]
    )


def test_holdout_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 10, 3, 2, 1])
    tr, ho = holdout_split(labels, 0.2, seed=0)
    assert not set(tr) & set(ho) and len(tr) + len(ho) == len(labels)
    assert [int((labels[ho] == c).sum()) for c in range(5)] == [2, 2, 1, 1, 0]
    assert np.array_equal(holdout_split(labels, 0.2, seed=0)[1], ho)
    assert len(holdout_split(labels, 0.0, 0)[1]) == 0
