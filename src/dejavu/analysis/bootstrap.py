"""Bootstrap confidence intervals for the déjà vu score and the quadrant shares.

Unit of resampling: the attacked example. Each set (A, B) is resampled with replacement
independently; within a set the SAME resample is used for the target and the reference
model (a paired bootstrap: both models attacked the same crops). A resample is a
multinomial count vector ``w`` over the examples, so everything stays vectorised:
the top fraction ``p`` of a resample, in the model's own confidence order, is read off
the cumulative weights (duplicates of an example share its confidence and index, so
their relative order does not matter).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dejavu.analysis.metrics import FRACTIONS, PAIRS, QUADRANTS, PairScores, n_top, quadrant_masks, rank_order

_CELLS = 2 ** 22  # resample-block size (replicates x examples) to bound memory


def weighted_top_accs(weights: np.ndarray, scores: PairScores, ps, topks=(1, 5)) -> dict[tuple[int, float], np.ndarray]:
    """Accuracy of the top fraction ``p`` for each resample row of ``weights`` (R, n),
    for every (topk, p); the ranking and cumulative weights are computed once."""
    n = weights.shape[1]
    order = rank_order(scores.conf, scores.index)
    w = weights[:, order].astype(np.float64)
    cw = np.cumsum(w, axis=1)
    rows = np.arange(len(w))
    out = {}
    js = {}
    for p in ps:
        m = float(n_top(p, n))
        j = np.minimum((cw < m).sum(axis=1), n - 1)  # first position whose cumulative weight reaches m
        js[p] = (m, j, np.where(j > 0, cw[rows, np.maximum(j - 1, 0)], 0.0))
    for topk in topks:
        c = scores.correct(topk)[order].astype(np.float64)
        cc = np.cumsum(w * c[None, :], axis=1)
        for p, (m, j, prev_w) in js.items():
            prev_c = np.where(j > 0, cc[rows, np.maximum(j - 1, 0)], 0.0)
            out[(topk, p)] = (prev_c + (m - prev_w) * c[j]) / m
    return out


def weighted_top_acc(weights: np.ndarray, scores: PairScores, p: float, topk: int) -> np.ndarray:
    """Accuracy of the top ``p`` fraction for each resample row of ``weights`` (R, n)."""
    return weighted_top_accs(weights, scores, (p,), (topk,))[(topk, p)]


def bootstrap_replicates(pairs: dict[str, PairScores], n_boot: int = 1000, seed: int = 0,
                         fractions=(0.20, 1.00)) -> dict[str, np.ndarray]:
    """Replicates (n_boot,) of: top{1,5} scores at each fraction and quadrant shares."""
    rng = np.random.default_rng(seed)
    sets = {"A": ("A_attk_A", "B_attk_A"), "B": ("B_attk_B", "A_attk_B")}
    n = {y: len(pairs[t].index) for y, (t, _) in sets.items()}
    out: dict[str, list[np.ndarray]] = {}
    block = max(1, _CELLS // max(1, max(n.values())))
    for start in range(0, n_boot, block):
        r = min(block, n_boot - start)
        acc: dict[tuple, np.ndarray] = {}
        quad: dict[str, np.ndarray] = {q: np.zeros(r) for q in QUADRANTS}
        for y, (t, ref) in sets.items():
            if n[y] == 0:
                w = np.zeros((r, 0))
            else:
                w = rng.multinomial(n[y], np.full(n[y], 1.0 / n[y]), size=r)
            for name in (t, ref):
                got = weighted_top_accs(w, pairs[name], fractions) if n[y] else {}
                for topk in (1, 5):
                    for p in fractions:
                        acc[(name, topk, p)] = got.get((topk, p), np.full(r, np.nan))
            masks = quadrant_masks(pairs[t], pairs[ref], 1)
            for q in QUADRANTS:
                quad[q] += 0.5 * ((w @ masks[q].astype(np.float64)) / n[y] if n[y] else np.nan)
        for topk in (1, 5):
            for p in fractions:
                tgt = 0.5 * (acc[("A_attk_A", topk, p)] + acc[("B_attk_B", topk, p)])
                ref_ = 0.5 * (acc[("B_attk_A", topk, p)] + acc[("A_attk_B", topk, p)])
                out.setdefault(f"top{topk}_score_{int(round(p * 100))}", []).append(tgt - ref_)
        for q in QUADRANTS:
            out.setdefault(q, []).append(quad[q])
    return {k: np.concatenate(v) for k, v in out.items()}


def percentile_ci(x: np.ndarray, level: float = 0.95) -> list[float]:
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    lo, hi = np.quantile(x, [a, 1 - a])
    return [float(lo), float(hi)]


def bootstrap_cis(pairs: dict[str, PairScores], n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Any]:
    """Percentile CIs: ``{"top1": {"dejavu_score": [lo, hi], "dejavu_score_100": ...},
    "top5": {...}, "quadrants": {"memorized": [lo, hi], ...}}``."""
    assert set(PAIRS) <= set(pairs) and FRACTIONS
    if n_boot <= 0:
        nan = [float("nan"), float("nan")]
        return {"top1": {"dejavu_score": nan, "dejavu_score_100": nan},
                "top5": {"dejavu_score": nan, "dejavu_score_100": nan}, "quadrants": {q: nan for q in QUADRANTS}}
    reps = bootstrap_replicates(pairs, n_boot, seed)
    return {
        **{f"top{k}": {"dejavu_score": percentile_ci(reps[f"top{k}_score_20"], level),
                       "dejavu_score_100": percentile_ci(reps[f"top{k}_score_100"], level)} for k in (1, 5)},
        "quadrants": {q: percentile_ci(reps[q], level) for q in QUADRANTS},
    }
