"""Déjà vu metrics (DESIGN 2.4-2.5): pure, vectorised numpy on stored arrays.

No torch and no models here: everything is recomputed from neighbour labels (or logits),
true labels and dataset indices, so ``dejavu analyze`` re-scores an attack folder.

Conventions (the original's protocol, scored without its arbitrary tie-breaks):

* **Prediction** from the first ``k_attk`` neighbour labels, as the original counts it
  (``torch.topk`` over the per-class vote counts). Where classes tie across the k-th place,
  the original's order is arbitrary; we score the **expectation over a random tie order**:
  with ``a`` classes voted more than the true class and ``t`` classes (the true one
  included) voted exactly as often, top-k correctness is ``1`` if ``a + t <= k``, ``0`` if
  ``a >= k`` and ``(k - a) / t`` otherwise. A true class with no vote shares the empty
  places with every other zero-vote class (``t = C - #voted``), as ``torch.topk`` fills
  them. ``pred`` (for display) is the most voted class, ties by the smaller class index.
* **Confidence** = negative entropy (natural log) of the neighbour-label histogram
  ``sum_c p_c log p_c`` with ``p = counts / k_attk`` (0 = all neighbours agree), summed in
  a canonical order so equal histograms get bit-identical confidences.
  Logits variant: the same expectation over the logits, confidence = max logit.
* **Top fraction p** of n examples: the ``int(p*n)`` most confident (at least 1), as the
  original; examples tied with the last selected confidence share the remaining places
  (the tied group contributes its mean correctness). One function, :func:`top_fraction_acc`,
  serves the population test, the 100-point sweep and the bootstrap.
* ``acc_target(p) = ½[acc(A_attk_A, p) + acc(B_attk_B, p)]``,
  ``acc_ref(p) = ½[acc(B_attk_A, p) + acc(A_attk_B, p)]``, each model ranking by its
  own confidence; déjà vu score = target − reference at 20% (and at 100%).
* **Quadrants** on all attacked examples of a set, target vs reference (top-1):
  memorized (T right, R wrong), correlated (both right), forgotten (T wrong, R right),
  unassociated (both wrong), each as an expectation (the two models' tie orders are
  independent); shares averaged over the swap (set A and set B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dejavu import DejavuError

PAIRS = ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B")
FRACTIONS = (0.05, 0.20, 1.00)
SWEEP = np.linspace(0.1, 1.0, 100)
QUADRANTS = ("memorized", "correlated", "forgotten", "unassociated")
_CHUNK = 8192  # rows per block for (n, num_classes) logit matrices: bounded memory


@dataclass
class PairScores:
    """Per-example scores of one model on one set (aligned with ``index``)."""

    index: np.ndarray  # (n,) global dataset indices of attacked images
    labels: np.ndarray  # (n,) true labels
    pred: np.ndarray  # (n,) top-1 prediction (most voted, ties: smaller class; -1 = none)
    conf: np.ndarray  # (n,) confidence (higher = more confident)
    correct1: np.ndarray  # (n,) float in [0, 1]: expected top-1 correctness
    correct5: np.ndarray  # (n,) float in [0, 1]: expected top-5 correctness

    def correct(self, topk: int) -> np.ndarray:
        return self.correct1 if topk == 1 else self.correct5


def expected_topk(above: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
    """Expected top-k correctness when ``above`` classes rank strictly before the true class
    and ``tied`` classes (the true one included) rank equal to it, over a random tie order.

    Args:
        above: (n,) number of classes scored strictly higher than the true class.
        tied: (n,) number of classes scored exactly as the true class (>= 1).
        k: the k of top-k.

    Returns:
        (n,) float64 in [0, 1].
    """
    above = np.asarray(above, np.float64)
    tied = np.maximum(np.asarray(tied, np.float64), 1.0)
    return np.clip((k - above) / tied, 0.0, 1.0)


def _run_lengths(nl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class vote counts of each row without an ``(n, C)`` matrix.

    Returns:
        ``s`` the rows sorted, ``runs`` (n, k) each run's length at its first position (0
        elsewhere), ``hist`` (n, k+1) how many classes got each vote count 0..k (the
        count-0 column unused).
    """
    s = np.sort(nl, axis=1)
    n, k = s.shape
    start = np.ones((n, k), bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=start[:, 1:])
    rows, cols = np.nonzero(start)
    nxt = np.empty_like(cols)
    nxt[:-1] = cols[1:]
    nxt[-1:] = k
    nxt[:-1][rows[1:] != rows[:-1]] = k  # a row's last run ends at k
    length = nxt - cols
    runs = np.zeros((n, k), np.int32)
    runs[rows, cols] = length
    hist = np.bincount(rows * (k + 1) + length, minlength=n * (k + 1)).reshape(n, k + 1)
    return s, runs, hist


def scores_from_neighbours(
    neighb_labels: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray,
    k_attk: int | None = None,
    num_classes: int | None = None,
) -> PairScores:
    """Expected top-1/top-5 correctness and entropy confidence from the first ``k_attk``
    neighbours (see the module docstring). O(n·k), never an ``(n, C)`` matrix.

    Args:
        neighb_labels: (n, k) labels of each attacked example's neighbours, nearest first.
        labels: (n,) or (n, 1) true labels.
        index: (n,) dataset indices of the attacked examples.
        k_attk: neighbours voting (default: all stored).
        num_classes: C (default: the largest label seen + 1).

    Returns:
        The :class:`PairScores`.
    """
    nl = np.asarray(neighb_labels)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if nl.ndim != 2 or len(nl) != len(labels) or len(labels) != len(index):
        raise ValueError(f"shapes disagree: neighbours {nl.shape}, labels {labels.shape}, index {index.shape}")
    k = nl.shape[1] if k_attk is None else int(k_attk)
    if not 1 <= k <= nl.shape[1]:
        raise ValueError(f"k_attk={k} out of range 1..{nl.shape[1]} (stored neighbours)")
    nl = np.asarray(nl[:, :k], dtype=np.int64)
    C = int(num_classes) if num_classes is not None else int(max(nl.max(initial=-1), labels.max(initial=-1)) + 1)
    n = len(labels)
    if n == 0:
        e = np.zeros(0)
        return PairScores(index, labels, np.zeros(0, np.int64), e, e.copy(), e.copy())
    s, runs, hist = _run_lengths(nl)
    rows = np.arange(n)
    pred = s[rows, np.argmax(runs, axis=1)]  # first longest run = smaller class index
    # sum over the histogram of vote counts: a canonical order, so equal histograms give
    # bit-identical confidences (ties stay ties whatever the class ids)
    lk = np.arange(1, k + 1) / float(k)
    conf = (hist[:, 1:] * (lk * np.log(lk))[None, :]).sum(1)
    ct = (nl == labels[:, None]).sum(1)
    cum = np.cumsum(hist, axis=1)  # cum[:, c] = classes voted 1..c times (plus column 0, unused)
    above = cum[:, k] - cum[rows, ct]  # classes voted more often than the true class
    tied = np.where(ct > 0, hist[rows, ct], C - (cum[:, k] - cum[:, 0]))
    return PairScores(index, labels, pred, conf, expected_topk(above, tied, 1), expected_topk(above, tied, 5))


def scores_from_logits(logits: np.ndarray, labels: np.ndarray, index: np.ndarray) -> PairScores:
    """Supervised variant: prediction = argmax logit, confidence = max logit, top-k
    correctness as the expectation over a random order of tied logits.

    Args:
        logits: (n, C) classifier logits of the attacked examples.
        labels: (n,) or (n, 1) true labels.
        index: (n,) dataset indices of the attacked examples.

    Returns:
        The :class:`PairScores` (``conf`` = max logit).
    """
    lg = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(lg).all():
        row = int(np.flatnonzero(~np.isfinite(lg).all(1))[0])
        raise DejavuError(f"logits of example {int(np.asarray(index).reshape(-1)[row])} are not finite (NaN or inf)")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    above, tied = np.zeros(n, np.int64), np.ones(n, np.int64)
    for s in range(0, n, _CHUNK):
        b, lab = lg[s : s + _CHUNK], labels[s : s + _CHUNK]
        lt = b[np.arange(len(lab)), lab][:, None]
        above[s : s + _CHUNK], tied[s : s + _CHUNK] = (b > lt).sum(1), (b == lt).sum(1)
    return PairScores(
        np.asarray(index, np.int64).reshape(-1),
        labels,
        np.argmax(lg, axis=1),
        lg.max(1),
        expected_topk(above, tied, 1),
        expected_topk(above, tied, 5),
    )


def n_top(p: float | np.ndarray, n: int) -> np.ndarray:
    """How many examples the top fraction ``p`` of ``n`` holds: ``int(p*n)`` as the
    original computes it (float product, truncated), at least 1.

    Args:
        p: a fraction in (0, 1], or an array of them.
        n: number of examples.

    Returns:
        int64 array of the shape of ``p``.
    """
    return np.maximum(1, (np.asarray(p, dtype=np.float64) * n).astype(np.int64))


def conf_groups(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples sorted by confidence descending, grouped by equal confidence.

    Returns:
        ``order`` (n,) positions sorted by confidence descending (order within a group is
        irrelevant to every metric) and ``starts`` (G,) the first sorted position of each
        group of equal confidence.
    """
    c = np.asarray(conf, dtype=np.float64)
    order = np.argsort(-c, kind="stable")
    cs = c[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]]) if len(cs) else np.zeros(0, np.int64)
    return order, starts


def top_fraction_acc(group_w: np.ndarray, group_c: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Accuracy of the ``m`` most confident examples, ties at the cut sharing the places.

    Works on groups of equal confidence (most confident first), with a leading batch
    axis for bootstrap replicates.

    Args:
        group_w: (R, G) examples (or resampled weight) in each group.
        group_c: (R, G) summed correctness in each group.
        m: (P,) how many examples to select.

    Returns:
        (R, P): ``[Σ correct of the groups before the cut + (m − their size) · mean
        correctness of the cut group] / m``.
    """
    cw = np.cumsum(group_w, axis=1)
    cc = np.cumsum(group_c, axis=1)
    R, G = cw.shape
    m = np.asarray(m, np.float64)
    out = np.empty((R, len(m)))
    rows = np.arange(R)
    for j, mj in enumerate(m):
        g = np.minimum((cw < mj).sum(1), G - 1)  # the group holding the m-th place
        gm1 = np.maximum(g - 1, 0)
        prev_w = np.where(g > 0, cw[rows, gm1], 0.0)
        prev_c = np.where(g > 0, cc[rows, gm1], 0.0)
        w_g = group_w[rows, g]
        mean_g = np.where(w_g > 0, group_c[rows, g] / np.where(w_g > 0, w_g, 1.0), 0.0)
        out[:, j] = (prev_c + (mj - prev_w) * mean_g) / mj
    return out


def acc_at(scores: PairScores, ps: np.ndarray | tuple | list, topk: int = 1) -> np.ndarray:
    """Accuracy of the most-confident fraction ``p`` of examples, for every ``p`` in ``ps``
    (ties at the cut share the remaining places).

    Args:
        scores: one model's scores on one set.
        ps: fractions in (0, 1].
        topk: 1 or 5.

    Returns:
        float64 array of the shape of ``ps``; NaN everywhere when ``scores`` is empty.
    """
    ps = np.asarray(ps, dtype=np.float64)
    n = len(scores.conf)
    if n == 0:
        return np.full(ps.shape, np.nan)
    order, starts = conf_groups(scores.conf)
    sizes = np.diff(np.r_[starts, n]).astype(np.float64)
    gc = np.add.reduceat(np.asarray(scores.correct(topk), np.float64)[order], starts)
    return top_fraction_acc(sizes[None, :], gc[None, :], n_top(ps, n).reshape(-1))[0].reshape(ps.shape)


def _check_aligned(pairs: dict[str, PairScores]) -> None:
    for y in "AB":
        t, r = pairs[f"{y}_attk_{y}"], pairs[f"{'B' if y == 'A' else 'A'}_attk_{y}"]
        if not np.array_equal(t.index, r.index):
            raise ValueError(f"set {y}: target and reference scored different examples")


def population(pairs: dict[str, PairScores], topk: int = 1, fractions=FRACTIONS, sweep=SWEEP) -> dict[str, Any]:
    """Population test for one top-k: per-pair accuracies, target/reference, score, sweep.

    Args:
        pairs: the four :data:`PAIRS` scores.
        topk: 1 or 5.
        fractions: the fractions ``p`` reported (0.20 and 1.00 give the two scores).
        sweep: fractions of the accuracy-vs-p curve.

    Returns:
        ``{"target": {P: acc}, "reference": {P: acc}, "dejavu_score": float | None,
        "dejavu_score_100": float | None, "sweep": {"p", "target", "reference"},
        "pairs": {name: {P: acc}}, "pair_sweeps": {name: [acc]}}`` with ``P = str(round(100 p))``;
        a score is None when its fraction is not in ``fractions``.
    """
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
    """Per-example probability of each quadrant (0/1 without ties; the two models' tie
    orders are independent, so e.g. memorized = t·(1 − r)).

    Args:
        target: the target model's scores on a set.
        reference: the reference model's scores on the same examples, same order.
        topk: 1 or 5.

    Returns:
        ``{quadrant: (n,) float64 probability}`` for each of :data:`QUADRANTS`.
    """
    t = np.asarray(target.correct(topk), np.float64)
    r = np.asarray(reference.correct(topk), np.float64)
    return {"memorized": t * (1 - r), "correlated": t * r, "forgotten": (1 - t) * r, "unassociated": (1 - t) * (1 - r)}


def quadrant_labels(target: PairScores, reference: PairScores, topk: int = 1) -> np.ndarray:
    """The most likely quadrant of each example (ties: the order of :data:`QUADRANTS`).

    Args:
        target: the target model's scores on a set.
        reference: the reference model's scores on the same examples, same order.
        topk: 1 or 5.

    Returns:
        (n,) object array of quadrant names.
    """
    masks = quadrant_masks(target, reference, topk)
    best = np.argmax(np.stack([masks[q] for q in QUADRANTS]), axis=0)
    return np.asarray(QUADRANTS, dtype=object)[best]


def quadrants(pairs: dict[str, PairScores], topk: int = 1) -> dict[str, float]:
    """Swap-averaged quadrant shares over all attacked examples.

    Args:
        pairs: the four :data:`PAIRS` scores.
        topk: 1 or 5.

    Returns:
        ``{quadrant: share}`` for each of :data:`QUADRANTS` (NaN for an empty set's half).
    """
    mA = quadrant_masks(pairs["A_attk_A"], pairs["B_attk_A"], topk)
    mB = quadrant_masks(pairs["B_attk_B"], pairs["A_attk_B"], topk)
    return {q: float(0.5 * (_mean(mA[q]) + _mean(mB[q]))) for q in QUADRANTS}


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def per_class(pairs: dict[str, PairScores], num_classes: int, topk: int = 1) -> dict[str, list]:
    """Per-class target/reference accuracy and quadrant shares, swap-averaged over the two
    sets (a class with no attacked example in one set uses the other; none: NaN).

    Args:
        pairs: the four :data:`PAIRS` scores.
        num_classes: C; labels must lie in ``0..C-1``.
        topk: 1 or 5.

    Returns:
        Lists of length C: ``"n"`` (attacked examples over both sets), ``"target"``,
        ``"reference"``, ``"gap"`` and one per quadrant; None where a class has no data.
    """
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
    count = np.bincount(pairs["A_attk_A"].labels, minlength=num_classes) + np.bincount(
        pairs["B_attk_B"].labels, minlength=num_classes
    )
    return {
        "n": count.tolist(),
        "target": _nan_list(acc["target"]),
        "reference": _nan_list(acc["reference"]),
        "gap": _nan_list(acc["target"] - acc["reference"]),
        **{q: _nan_list(shares[q]) for q in QUADRANTS},
    }


def _nanmean2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both = ~np.isnan(a) & ~np.isnan(b)
    return np.where(both, 0.5 * (a + b), np.where(np.isnan(a), b, a))


def _nan_list(x: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in x]


def rankings(pairs: dict[str, PairScores], topk: int = 1, top: int = 20) -> dict[str, list[dict]]:
    """Most memorized examples (memorized, by conf_target − conf_ref descending) and most
    correlated (correlated, by min(conf_target, conf_ref) descending); ties by set then index.

    Args:
        pairs: the four :data:`PAIRS` scores.
        topk: 1 or 5 (decides the quadrant).
        top: rows kept per list.

    Returns:
        ``{"most_memorized": [...], "most_correlated": [...]}``, each row a dict with ``set``,
        ``index``, ``label``, ``pred_target``, ``pred_reference``, ``conf_target``,
        ``conf_reference`` and the ranking ``score``.
    """
    rows = []
    for y, t, r in (("A", "A_attk_A", "B_attk_A"), ("B", "B_attk_B", "A_attk_B")):
        T, R = pairs[t], pairs[r]
        rows.append((np.full(len(T.index), y), T, R))
    sets = np.concatenate([x[0] for x in rows])
    idx = np.concatenate([x[1].index for x in rows])
    lab = np.concatenate([x[1].labels for x in rows])
    ct = np.concatenate([x[1].conf for x in rows])
    cr = np.concatenate([x[2].conf for x in rows])
    pt = np.concatenate([x[1].pred for x in rows])
    pr = np.concatenate([x[2].pred for x in rows])
    out = {}
    for name, q, key in (
        ("most_memorized", "memorized", ct - cr),
        ("most_correlated", "correlated", np.minimum(ct, cr)),
    ):
        m = np.concatenate([quadrant_labels(x[1], x[2], topk) == q for x in rows])
        pos = np.nonzero(m)[0]
        order = pos[np.lexsort((idx[pos], sets[pos], -key[pos]))][:top]
        out[name] = [
            {
                "set": str(sets[i]),
                "index": int(idx[i]),
                "label": int(lab[i]),
                "pred_target": int(pt[i]),
                "pred_reference": int(pr[i]),
                "conf_target": float(ct[i]),
                "conf_reference": float(cr[i]),
                "score": float(key[i]),
            }
            for i in order
        ]
    return out
