"""Déjà vu metrics (DESIGN 2.4-2.5): pure, vectorised numpy on stored arrays.

No torch and no models here: everything is recomputed from neighbour labels (or logits),
true labels and dataset indices, so ``dejavu analyze`` re-scores an attack folder.

Conventions (decisions, all deterministic):

* **Prediction** from the first ``k_attk`` neighbour labels: classes ranked by count,
  ties by the smaller class index (``top1`` = first). A class with count 0 is never
  predicted, so top-5 is correct iff the true class has a positive count and fewer than
  5 classes rank before it (``count > c_true``, or ``count == c_true`` and a smaller index).
* **Confidence** = negative entropy (natural log) of the neighbour-label histogram
  ``sum_c p_c log p_c`` with ``p = counts / k_attk`` (0 = all neighbours agree).
  Logits variant: prediction = argmax (ties: smaller class), confidence = max logit.
* **Ranking**: confidence descending, ties by dataset index ascending.
  The top fraction ``p`` of n examples is the first ``max(1, floor(p*n + 1e-9))``.
* ``acc_target(p) = ½[acc(A_attk_A, p) + acc(B_attk_B, p)]``,
  ``acc_ref(p) = ½[acc(B_attk_A, p) + acc(A_attk_B, p)]``, each model ranking by its
  own confidence; déjà vu score = target − reference at 20% (and at 100%).
* **Quadrants** on all attacked examples of a set, target vs reference (top-1):
  memorized (T right, R wrong), correlated (both right), forgotten (T wrong, R right),
  unassociated (both wrong); shares averaged over the swap (set A and set B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PAIRS = ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B")
FRACTIONS = (0.05, 0.20, 1.00)
SWEEP = np.linspace(0.1, 1.0, 100)
QUADRANTS = ("memorized", "correlated", "forgotten", "unassociated")
_CHUNK = 8192  # rows per block for (n, num_classes) count matrices: bounded memory


@dataclass
class PairScores:
    """Per-example scores of one model on one set (aligned with ``index``)."""

    index: np.ndarray  # (n,) global dataset indices of attacked images
    labels: np.ndarray  # (n,) true labels
    pred: np.ndarray  # (n,) top-1 prediction (-1 = none)
    conf: np.ndarray  # (n,) confidence (higher = more confident)
    correct1: np.ndarray  # (n,) bool
    correct5: np.ndarray  # (n,) bool

    def correct(self, topk: int) -> np.ndarray:
        return self.correct1 if topk == 1 else self.correct5


def label_counts(neighb_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(n, C)`` int32 histogram of each row's labels (one bincount, no Python loop)."""
    nl = np.asarray(neighb_labels, dtype=np.int64)
    n, k = nl.shape
    flat = (np.arange(n, dtype=np.int64)[:, None] * num_classes + nl).ravel()
    return np.bincount(flat, minlength=n * num_classes).reshape(n, num_classes).astype(np.int32)


def scores_from_neighbours(neighb_labels: np.ndarray, labels: np.ndarray, index: np.ndarray,
                           k_attk: int | None = None, num_classes: int | None = None) -> PairScores:
    """Top-1/top-5 correctness and entropy confidence from the first ``k_attk`` neighbours."""
    nl = np.asarray(neighb_labels)
    labels = np.asarray(labels, dtype=np.int64)
    index = np.asarray(index, dtype=np.int64)
    if nl.ndim != 2 or len(nl) != len(labels) or len(labels) != len(index):
        raise ValueError(f"shapes disagree: neighbours {nl.shape}, labels {labels.shape}, index {index.shape}")
    k = nl.shape[1] if k_attk is None else int(k_attk)
    if not 1 <= k <= nl.shape[1]:
        raise ValueError(f"k_attk={k} out of range 1..{nl.shape[1]} (stored neighbours)")
    nl = nl[:, :k]
    C = int(num_classes) if num_classes is not None else int(max(nl.max(initial=-1), labels.max(initial=-1)) + 1)
    n = len(labels)
    pred = np.full(n, -1, np.int64)
    conf = np.zeros(n, np.float64)
    c1 = np.zeros(n, bool)
    c5 = np.zeros(n, bool)
    for s in range(0, n, _CHUNK):  # blocks of rows only bound memory; each block is vectorised
        cnt = label_counts(nl[s:s + _CHUNK], C)
        lab = labels[s:s + _CHUNK]
        rows = np.arange(len(lab))
        pred[s:s + _CHUNK] = np.argmax(cnt, axis=1)  # first max = smaller class index
        p = cnt / float(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            conf[s:s + _CHUNK] = np.where(p > 0, p * np.log(p), 0.0).sum(1)
        ct = cnt[rows, lab]
        cls = np.arange(C)[None, :]
        rank = (cnt > ct[:, None]).sum(1) + ((cnt == ct[:, None]) & (cls < lab[:, None])).sum(1)
        c1[s:s + _CHUNK] = (ct > 0) & (rank == 0)
        c5[s:s + _CHUNK] = (ct > 0) & (rank < 5)
    return PairScores(index, labels, pred, conf, c1, c5)


def scores_from_logits(logits: np.ndarray, labels: np.ndarray, index: np.ndarray) -> PairScores:
    """Supervised variant: prediction = argmax logit, confidence = max logit."""
    lg = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))
    pred = np.argmax(lg, axis=1)
    lt = lg[rows, labels]
    cls = np.arange(lg.shape[1])[None, :]
    rank = (lg > lt[:, None]).sum(1) + ((lg == lt[:, None]) & (cls < labels[:, None])).sum(1)
    return PairScores(np.asarray(index, np.int64), labels, pred, lg.max(1), rank == 0, rank < 5)


def rank_order(conf: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Positions sorted by confidence descending, ties by dataset index ascending."""
    return np.lexsort((np.asarray(index), -np.asarray(conf, dtype=np.float64)))


def n_top(p: float | np.ndarray, n: int) -> np.ndarray:
    """How many examples the top fraction ``p`` of ``n`` holds: max(1, floor(p*n))."""
    return np.maximum(1, np.floor(np.asarray(p, dtype=np.float64) * n + 1e-9).astype(np.int64))


def acc_at(scores: PairScores, ps: np.ndarray | tuple, topk: int = 1) -> np.ndarray:
    """Accuracy of the most-confident fraction ``p`` of examples, for every ``p`` in ``ps``."""
    ps = np.asarray(ps, dtype=np.float64)
    n = len(scores.conf)
    if n == 0:
        return np.full(ps.shape, np.nan)
    order = rank_order(scores.conf, scores.index)
    cum = np.cumsum(scores.correct(topk)[order])
    m = n_top(ps, n)
    return cum[m - 1] / m


def _check_aligned(pairs: dict[str, PairScores]) -> None:
    for y in "AB":
        t, r = pairs[f"{y}_attk_{y}"], pairs[f"{'B' if y == 'A' else 'A'}_attk_{y}"]
        if not np.array_equal(t.index, r.index):
            raise ValueError(f"set {y}: target and reference scored different examples")


def population(pairs: dict[str, PairScores], topk: int = 1, fractions=FRACTIONS, sweep=SWEEP) -> dict[str, Any]:
    """Population test for one top-k: per-pair accuracies, target/reference, score, sweep."""
    keys = [f"{int(round(p * 100))}" for p in fractions]
    per = {name: acc_at(pairs[name], fractions, topk) for name in PAIRS}
    sw = {name: acc_at(pairs[name], sweep, topk) for name in PAIRS}
    tgt = 0.5 * (per["A_attk_A"] + per["B_attk_B"])
    ref = 0.5 * (per["B_attk_A"] + per["A_attk_B"])
    tgt_sw = 0.5 * (sw["A_attk_A"] + sw["B_attk_B"])
    ref_sw = 0.5 * (sw["B_attk_A"] + sw["A_attk_B"])
    fr = list(fractions)
    i20 = fr.index(0.20) if 0.20 in fr else None
    i100 = fr.index(1.00) if 1.00 in fr else None
    return {
        "target": dict(zip(keys, tgt.tolist())),
        "reference": dict(zip(keys, ref.tolist())),
        "dejavu_score": float(tgt[i20] - ref[i20]) if i20 is not None else None,
        "dejavu_score_100": float(tgt[i100] - ref[i100]) if i100 is not None else None,
        "sweep": {"p": [float(p) for p in sweep], "target": tgt_sw.tolist(), "reference": ref_sw.tolist()},
        "pairs": {name: dict(zip(keys, per[name].tolist())) for name in PAIRS},
        "pair_sweeps": {name: sw[name].tolist() for name in PAIRS},
    }


def quadrant_masks(target: PairScores, reference: PairScores, topk: int = 1) -> dict[str, np.ndarray]:
    t, r = target.correct(topk), reference.correct(topk)
    return {"memorized": t & ~r, "correlated": t & r, "forgotten": ~t & r, "unassociated": ~t & ~r}


def quadrant_labels(target: PairScores, reference: PairScores, topk: int = 1) -> np.ndarray:
    masks = quadrant_masks(target, reference, topk)
    out = np.empty(len(target.index), dtype=object)
    for q in QUADRANTS:
        out[masks[q]] = q
    return out


def quadrants(pairs: dict[str, PairScores], topk: int = 1) -> dict[str, float]:
    """Swap-averaged quadrant shares over all attacked examples."""
    mA = quadrant_masks(pairs["A_attk_A"], pairs["B_attk_A"], topk)
    mB = quadrant_masks(pairs["B_attk_B"], pairs["A_attk_B"], topk)
    return {q: float(0.5 * (_mean(mA[q]) + _mean(mB[q]))) for q in QUADRANTS}


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def per_class(pairs: dict[str, PairScores], num_classes: int, topk: int = 1) -> dict[str, list]:
    """Per-class target/reference accuracy and quadrant shares, swap-averaged over the two
    sets (a class with no attacked example in one set uses the other; none: NaN)."""
    acc = {}
    for role, (nameA, nameB) in {"target": ("A_attk_A", "B_attk_B"), "reference": ("B_attk_A", "A_attk_B")}.items():
        vals = []
        for name in (nameA, nameB):
            s = pairs[name]
            n = np.bincount(s.labels, minlength=num_classes)
            c = np.bincount(s.labels, weights=s.correct(topk), minlength=num_classes)
            with np.errstate(invalid="ignore", divide="ignore"):
                vals.append(np.where(n > 0, c / np.maximum(n, 1), np.nan))
        acc[role] = _nanmean2(vals[0], vals[1])
    shares = {}
    for q in QUADRANTS:
        vals = []
        for t, r in (("A_attk_A", "B_attk_A"), ("B_attk_B", "A_attk_B")):
            m = quadrant_masks(pairs[t], pairs[r], topk)[q]
            lab = pairs[t].labels
            n = np.bincount(lab, minlength=num_classes)
            c = np.bincount(lab, weights=m, minlength=num_classes)
            vals.append(np.where(n > 0, c / np.maximum(n, 1), np.nan))
        shares[q] = _nanmean2(vals[0], vals[1])
    count = (np.bincount(pairs["A_attk_A"].labels, minlength=num_classes)
             + np.bincount(pairs["B_attk_B"].labels, minlength=num_classes))
    return {"n": count.tolist(), "target": _nan_list(acc["target"]), "reference": _nan_list(acc["reference"]),
            "gap": _nan_list(acc["target"] - acc["reference"]), **{q: _nan_list(shares[q]) for q in QUADRANTS}}


def _nanmean2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = ~np.isnan(a) & ~np.isnan(b)
    return np.where(both, 0.5 * (a + b), np.where(np.isnan(a), b, a))


def _nan_list(x: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in x]


def rankings(pairs: dict[str, PairScores], topk: int = 1, top: int = 20) -> dict[str, list[dict]]:
    """Most memorized examples (memorized, by conf_target − conf_ref descending) and most
    correlated (correlated, by min(conf_target, conf_ref) descending); ties by set then index."""
    rows = []
    for y, t, r in (("A", "A_attk_A", "B_attk_A"), ("B", "B_attk_B", "A_attk_B")):
        T, R = pairs[t], pairs[r]
        rows.append((np.full(len(T.index), y), T, R, quadrant_masks(T, R, topk)))
    sets = np.concatenate([x[0] for x in rows])
    idx = np.concatenate([x[1].index for x in rows])
    lab = np.concatenate([x[1].labels for x in rows])
    ct = np.concatenate([x[1].conf for x in rows])
    cr = np.concatenate([x[2].conf for x in rows])
    pt = np.concatenate([x[1].pred for x in rows])
    pr = np.concatenate([x[2].pred for x in rows])
    out = {}
    for name, q, key in (("most_memorized", "memorized", ct - cr), ("most_correlated", "correlated", np.minimum(ct, cr))):
        m = np.concatenate([x[3][q] for x in rows])
        pos = np.nonzero(m)[0]
        order = pos[np.lexsort((idx[pos], sets[pos], -key[pos]))][:top]
        out[name] = [{"set": str(sets[i]), "index": int(idx[i]), "label": int(lab[i]), "pred_target": int(pt[i]),
                      "pred_reference": int(pr[i]), "conf_target": float(ct[i]), "conf_reference": float(cr[i]),
                      "score": float(key[i])} for i in order]
    return out


def compute_all(pairs: dict[str, PairScores], num_classes: int | None = None, n_boot: int = 1000,
                seed: int = 0, top: int = 20) -> dict[str, Any]:
    """Every metric of the contract's ``results.json`` ``metrics`` block (plus per-class
    statistics and rankings). ``pairs`` maps the four names of :data:`PAIRS` to scores;
    target and reference of a set must be aligned (same examples, same order)."""
    from dejavu.analysis.bootstrap import bootstrap_cis

    missing = [p for p in PAIRS if p not in pairs]
    if missing:
        raise ValueError(f"missing pairs {missing}")
    _check_aligned(pairs)
    if num_classes is None:
        num_classes = int(max(int(s.labels.max(initial=-1)) for s in pairs.values()) + 1)
    out: dict[str, Any] = {}
    cis = bootstrap_cis(pairs, n_boot=n_boot, seed=seed)
    for topk in (1, 5):
        pop = population(pairs, topk)
        pop["ci95"] = cis[f"top{topk}"]
        out[f"top{topk}"] = pop
    out["quadrants"] = quadrants(pairs, 1)
    out["quadrants_ci95"] = cis["quadrants"]
    out["quadrants_top5"] = quadrants(pairs, 5)
    out["n_attacked"] = {"A": int(len(pairs["A_attk_A"].index)), "B": int(len(pairs["B_attk_B"].index))}
    out["per_class"] = per_class(pairs, num_classes, 1)
    out["rankings"] = rankings(pairs, 1, top)
    out["bootstrap"] = {"n": int(n_boot), "seed": int(seed), "level": 0.95,
                        "unit": "attacked example, resampled within each set; target and reference paired"}
    return out
