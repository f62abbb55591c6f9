"""One-model metrics: the audited model (target) against the crop classifier (reference)
on the SAME crops of one audited set. numpy only (no torch), built from the public
functions of :mod:`dejavu.analysis` so selection rules, ties and the bootstrap stay the
two-model test's:

* population test: accuracy of each one's own most confident fraction ``p``
  (:func:`dejavu.analysis.metrics.acc_at`); score = target − reference at 20% (and 100%);
* sample test: quadrants of :func:`dejavu.analysis.metrics.quadrant_masks` (memorized =
  model right and classifier wrong, correlated = both right, ...);
* 95% CIs: a paired bootstrap over the audited examples (one set, so no swap average),
  resamples and their top-fraction accuracies from :mod:`dejavu.analysis.bootstrap`
  (``resample_blocks``, ``PairCells``), the two-model bootstrap's own pieces.

The ``metrics`` block has the two-model block's keys (``top1``/``top5`` with ``target``,
``reference``, ``dejavu_score``, ``ci95``, ``sweep``; ``quadrants``; ``quadrants_ci95``;
``per_class``; ``rankings``), so ``dejavu plot`` and ``dejavu report`` read it unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dejavu.analysis.bootstrap import PairCells, cell_counts, percentile_ci, resample_blocks
from dejavu.analysis.metrics import (
    FRACTIONS,
    QUADRANTS,
    SWEEP,
    PairScores,
    acc_at,
    quadrant_labels,
    quadrant_masks,
    scores_from_logits,
)


def _keys(fractions) -> list[str]:
    return [f"{round(p * 100)}" for p in fractions]


def population(target: PairScores, reference: PairScores, topk: int = 1) -> dict[str, Any]:
    """The population test of one top-k: each one's accuracy on its own most confident
    fraction, the score and the confidence sweep.

    Args:
        target: the audited model's scores.
        reference: the classifier's scores on the same crops.
        topk: 1 or 5.

    Returns:
        ``{"target": {"5", "20", "100"}, "reference": {...}, "dejavu_score" (target − reference
        at 20%), "dejavu_score_100", "sweep": {"p", "target", "reference"}}`` (accuracies in [0, 1]).
    """
    keys = _keys(FRACTIONS)
    t, r = acc_at(target, FRACTIONS, topk), acc_at(reference, FRACTIONS, topk)
    fr = list(FRACTIONS)
    return {
        "target": dict(zip(keys, t.tolist())),
        "reference": dict(zip(keys, r.tolist())),
        "dejavu_score": float(t[fr.index(0.20)] - r[fr.index(0.20)]),
        "dejavu_score_100": float(t[fr.index(1.00)] - r[fr.index(1.00)]),
        "sweep": {
            "p": [float(p) for p in SWEEP],
            "target": acc_at(target, SWEEP, topk).tolist(),
            "reference": acc_at(reference, SWEEP, topk).tolist(),
        },
    }


def bootstrap_cis(
    target: PairScores,
    reference: PairScores,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    sample_reference: PairScores | None = None,
) -> dict[str, Any]:
    """Percentile CIs of the scores (top-1/top-5, 20%/100%) and quadrant shares; each
    resample of the audited examples serves both the model and the classifier.

    Args:
        target: the audited model's scores.
        reference: the classifier's scores on the same crops.
        n_boot: replicates (0: no interval, NaN bounds).
        seed: seed of the resampling.
        level: interval level.
        sample_reference: the classifier correctness of the sample test's quadrants (several
            classifiers: :func:`unanimous`); default ``reference``.

    Returns:
        ``{"top1": {"dejavu_score": [lo, hi], "dejavu_score_100": [lo, hi]}, "top5": ...,
        "quadrants": {quadrant: [lo, hi]}}``.
    """
    nan = [float("nan"), float("nan")]
    n = len(target.index)
    if n_boot <= 0 or n == 0:
        return {
            **{f"top{k}": {"dejavu_score": nan, "dejavu_score_100": nan} for k in (1, 5)},
            "quadrants": {q: nan for q in QUADRANTS},
        }
    tc, rc = PairCells(target), PairCells(reference)
    masks = quadrant_masks(target, sample_reference or reference, 1)
    qv, qcell = np.unique(np.stack([masks[q] for q in QUADRANTS], axis=1), axis=0, return_inverse=True)
    reps: dict[str, list[np.ndarray]] = {}
    for draws in resample_blocks({"audit": n}, n_boot, seed):
        idx = draws["audit"]
        t = tc.top_accs(cell_counts(idx, tc.cell, tc.n_cells), (0.20, 1.00))
        r = rc.top_accs(cell_counts(idx, rc.cell, rc.n_cells), (0.20, 1.00))
        for topk in (1, 5):
            for p, key in ((0.20, "dejavu_score"), (1.00, "dejavu_score_100")):
                reps.setdefault(f"top{topk}.{key}", []).append(t[(topk, p)] - r[(topk, p)])
        shares = cell_counts(idx.copy(), qcell.reshape(-1), len(qv)) @ qv / n
        for j, q in enumerate(QUADRANTS):
            reps.setdefault(q, []).append(shares[:, j])
    ci = {k: percentile_ci(np.concatenate(v), level) for k, v in reps.items()}
    return {
        **{f"top{k}": {s: ci[f"top{k}.{s}"] for s in ("dejavu_score", "dejavu_score_100")} for k in (1, 5)},
        "quadrants": {q: ci[q] for q in QUADRANTS},
    }


def per_class(
    target: PairScores, reference: PairScores, num_classes: int, sample_reference: PairScores | None = None
) -> dict[str, list]:
    """Per-class accuracy of both and quadrant shares (None where a class has no example).

    Args:
        target: the audited model's scores.
        reference: the classifier's scores on the same crops.
        num_classes: length of every list.
        sample_reference: the quadrants' classifier correctness (default ``reference``).

    Returns:
        ``{"n", "target", "reference", "gap", "memorized", "correlated", "forgotten",
        "unassociated"}``, one list entry per class (top-1).
    """
    n = np.bincount(target.labels, minlength=num_classes)

    def share(x: np.ndarray) -> list:
        c = np.bincount(target.labels, weights=x.astype(np.float64), minlength=num_classes)
        return [float(v) if k else None for v, k in zip(c / np.maximum(n, 1), n)]

    t, r = share(target.correct1), share(reference.correct1)
    masks = quadrant_masks(target, sample_reference or reference, 1)
    return {
        "n": n.tolist(),
        "target": t,
        "reference": r,
        "gap": [None if a is None else a - b for a, b in zip(t, r)],
        **{q: share(masks[q]) for q in QUADRANTS},
    }


def rankings(target: PairScores, reference: PairScores, set_name: str, top: int = 20) -> dict[str, list[dict]]:
    """Most memorized (memorized, by conf_model − conf_classifier: DejaVuOSS's sample-test
    score when both confidences are negative entropies) and most correlated (both right,
    by the lower confidence); ties by index.

    Args:
        target: the audited model's scores.
        reference: the classifier's scores on the same crops.
        set_name: the ``set`` written in each entry.
        top: entries per list.

    Returns:
        ``{"most_memorized": [...], "most_correlated": [...]}``, each entry a dict with
        ``set, index, label, pred_target, pred_reference, conf_target, conf_reference, score``.
    """
    ql = quadrant_labels(target, reference, 1)  # the most likely quadrant (correctness may be an expectation)
    ct, cr = target.conf, reference.conf
    out = {}
    for name, q, key in (
        ("most_memorized", "memorized", ct - cr),
        ("most_correlated", "correlated", np.minimum(ct, cr)),
    ):
        pos = np.nonzero(ql == q)[0]
        order = pos[np.lexsort((target.index[pos], -key[pos]))][:top]
        out[name] = [
            {
                "set": set_name,
                "index": int(target.index[i]),
                "label": int(target.labels[i]),
                "pred_target": int(target.pred[i]),
                "pred_reference": int(reference.pred[i]),
                "conf_target": float(ct[i]),
                "conf_reference": float(cr[i]),
                "score": float(key[i]),
            }
            for i in order
        ]
    return out


def unanimous(refs: list[PairScores]) -> PairScores:
    """Several classifiers as one for the sample test: right only where ALL are right
    (DejaVuOSS's correlation set: crops that every classifier gets right); prediction and
    confidence are the first one's.

    Args:
        refs: the classifiers' scores on the same examples (at least one).

    Returns:
        A :class:`PairScores` with ``correct1``/``correct5`` the product of theirs.
    """
    from dataclasses import replace

    c1, c5 = np.ones(len(refs[0].index)), np.ones(len(refs[0].index))
    for r in refs:
        if not np.array_equal(r.index, refs[0].index):
            raise ValueError("classifiers scored different examples")
        c1, c5 = c1 * r.correct1, c5 * r.correct5
    return replace(refs[0], correct1=c1, correct5=c5)


def one_model_metrics(
    target: PairScores,
    reference: PairScores,
    num_classes: int,
    set_name: str = "A",
    n_boot: int = 1000,
    seed: int = 0,
    top: int = 20,
    sample_reference: PairScores | None = None,
) -> dict[str, Any]:
    """The ``metrics`` block of an audit's ``results.json`` (see the module docstring).

    Args:
        target: the audited model's scores (from its KNN neighbours' labels).
        reference: the classifier's scores (:func:`classifier_scores`) on the same examples.
        num_classes: classes of the dataset.
        set_name: the audited set's name in ``n_attacked`` and the rankings (``A``).
        n_boot: bootstrap replicates of the CIs (0: none).
        seed: seed of the bootstrap.
        top: entries per ranking.
        sample_reference: the classifier correctness of the sample test (quadrants, their CIs,
            per-class shares, rankings): :func:`unanimous` of several classifiers; default
            ``reference``. The population test always uses ``reference``.

    Returns:
        ``top1``/``top5`` (:func:`population` with ``ci95``), ``quadrants`` (+ ``_ci95``,
        ``_top5``), ``n_attacked``, ``per_class``, ``rankings`` and ``bootstrap``.

    Raises:
        ValueError: the two score sets cover different examples (a programming error).
    """
    if not np.array_equal(target.index, reference.index):
        raise ValueError("model and classifier scored different examples")
    cis = bootstrap_cis(target, reference, n_boot, seed, sample_reference=sample_reference)
    sref = sample_reference or reference
    out: dict[str, Any] = {}
    for topk in (1, 5):
        out[f"top{topk}"] = {**population(target, reference, topk), "ci95": cis[f"top{topk}"]}
    masks = {1: quadrant_masks(target, sref, 1), 5: quadrant_masks(target, sref, 5)}
    out["quadrants"] = {q: float(np.mean(m)) for q, m in masks[1].items()}
    out["quadrants_ci95"] = cis["quadrants"]
    out["quadrants_top5"] = {q: float(np.mean(m)) for q, m in masks[5].items()}
    out["n_attacked"] = {set_name: len(target.index)}
    out["per_class"] = per_class(target, reference, num_classes, sref)
    out["rankings"] = rankings(target, sref, set_name, top)
    out["bootstrap"] = {
        "n": int(n_boot),
        "seed": int(seed),
        "level": 0.95,
        "unit": "audited example; model and classifier paired",
    }
    return out


def classifier_scores(logits: np.ndarray, labels: np.ndarray, index: np.ndarray, confidence: str) -> PairScores:
    """The classifier's prediction (argmax) and correctness, with its confidence.

    Args:
        logits: (n, num_classes) classifier logits.
        labels: (n,) true classes.
        index: (n,) dataset indices of the crops.
        confidence: ``neg_entropy`` = sum p log p of the softmax (natural log, the KNN attack's
            scale) or ``max_prob`` = the largest softmax probability.

    Returns:
        The :class:`dejavu.analysis.metrics.PairScores` of the classifier.
    """
    from dataclasses import replace

    s = scores_from_logits(logits, labels, index)
    lg = np.asarray(logits, np.float64)
    z = lg - lg.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(logp)
    conf = (p * logp).sum(1) if confidence == "neg_entropy" else p.max(1)
    return replace(s, conf=conf)
