"""Déjà vu metrics (DESIGN 2.4-2.5): pure, vectorised numpy on stored arrays, no torch.

Per-example scores (:class:`Scores`) come from neighbour labels or logits; every test takes
a list of :class:`Comparison` (one attacked set scored by a target against a reference) and
averages over it: the two-model test compares A vs B on set A and B vs A on set B
(:func:`two_model`), an audit the model vs its crop classifier on the audited set. The
conventions (expected top-k over random tie orders, entropy confidence, tie sharing at the
top-fraction cut, quadrants as expectations) are those of docs/DESIGN.md §2.4-2.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dejavu import DejavuError

SETS = ("A", "B")  # the two-model test's private sets; model X trained on set X


def array_name(model: str, attacked: str) -> str:
    """The original's name of one model's arrays on one set, e.g. ``B_attk_A`` (model B attacks set A)."""
    return f"{model}_attk_{attacked}"


def other_set(y: str) -> str:
    """The other private set (``A`` <-> ``B``)."""
    return SETS[1 - SETS.index(y)]


ARRAYS = tuple(array_name(x, y) for y in SETS for x in SETS)  # A_attk_A, B_attk_A, A_attk_B, B_attk_B
FRACTIONS = (0.05, 0.20, 1.00)  # the top fractions p every score and interval is given at
SWEEP = np.linspace(0.1, 1.0, 100)
QUADRANTS = ("memorized", "correlated", "forgotten", "unassociated")
TOPKS = (1, 5)
LEVEL = 0.95  # coverage of every interval
_CHUNK = 8192  # rows per block for (n, num_classes) logit matrices: bounded memory


def fraction_key(p: float) -> str:
    """The results.json key of a fraction: ``0.2`` -> ``"20"``."""
    return f"{int(round(p * 100))}"


# results.json names of the score at a fraction before the scores were keyed by fraction;
# still written (and read) as aliases for one format version (docs/CONTRACTS.md)
SCORE_ALIASES = {"20": "dejavu_score", "100": "dejavu_score_100"}


def score_at(block: dict[str, Any], p: str | int = "20") -> Any:
    """The score (or its interval) at fraction ``p`` of a ``metrics[top]`` block or of its
    ``ci95``: ``score[p]``, or the old alias of a results file written before it.

    Args:
        block: ``metrics["top1"]`` (or ``metrics["top1"]["ci95"]``) of a results.json.
        p: the fraction in percent.

    Returns:
        The value; None when the block has neither key.
    """
    p = str(p)
    if p in (block.get("score") or {}):
        return block["score"][p]
    return block.get(SCORE_ALIASES.get(p, ""))


@dataclass
class Scores:
    """Per-example scores of one model on one set (aligned with ``index``)."""

    index: np.ndarray  # (n,) global dataset indices of attacked images
    labels: np.ndarray  # (n,) true labels
    pred: np.ndarray  # (n,) top-1 prediction (most voted, ties: smaller class; -1 = none)
    conf: np.ndarray  # (n,) confidence (higher = more confident)
    correct1: np.ndarray  # (n,) float in [0, 1]: expected top-1 correctness
    correct5: np.ndarray  # (n,) float in [0, 1]: expected top-5 correctness

    def correct(self, topk: int) -> np.ndarray:
        return self.correct1 if topk == 1 else self.correct5


@dataclass
class Comparison:
    """One attacked set scored by a target against a reference, on the same examples.

    ``sample_reference`` replaces the reference in the sample test (quadrants, their
    intervals, per-class shares, rankings, examples.csv): an audit's several classifiers
    as one. ``arrays`` names the two score sets' files (``("A_attk_A", "B_attk_A")``) when
    their per-array accuracies are reported (results.json ``pairs``).
    """

    name: str  # the set: ``n_attacked`` key, ``set`` of the rankings and examples.csv
    target: Scores
    reference: Scores
    sample_reference: Scores | None = None
    arrays: tuple[str, str] | None = None

    @property
    def sample_ref(self) -> Scores:
        return self.reference if self.sample_reference is None else self.sample_reference

    def check(self) -> None:
        """Raise ValueError when target and reference scored different examples."""
        for r in (self.reference, self.sample_ref):
            if not np.array_equal(self.target.index, r.index):
                raise ValueError(f"set {self.name}: target and reference scored different examples")


Comparisons = Sequence[Comparison] | Mapping[str, Scores]


def two_model(scores: Mapping[str, Scores]) -> list[Comparison]:
    """The two-model test: model A vs model B on set A, model B vs model A on set B.

    Args:
        scores: the four :data:`ARRAYS` scores.

    Returns:
        Two comparisons, named ``A`` and ``B``.

    Raises:
        ValueError: one of the four is missing.
    """
    missing = [n for n in ARRAYS if n not in scores]
    if missing:
        raise ValueError(f"missing score arrays {missing}")
    out = []
    for y in SETS:
        t, r = array_name(y, y), array_name(other_set(y), y)
        out.append(Comparison(y, scores[t], scores[r], arrays=(t, r)))
    return out


def comparisons(x: Comparisons) -> list[Comparison]:
    """A list of comparisons as given, or the two-model test of the four :data:`ARRAYS` scores."""
    return two_model(x) if isinstance(x, Mapping) else list(x)


def mean_over(xs: Sequence[Any]) -> Any:
    """The mean over comparisons, ``(x_1 + ... + x_n) / n`` (one comparison: itself)."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total / len(xs)


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
) -> Scores:
    """Expected top-1/top-5 correctness and entropy confidence from the first ``k_attk``
    neighbours (see the module docstring). O(n·k), never an ``(n, C)`` matrix.

    Args:
        neighb_labels: (n, k) labels of each attacked example's neighbours, nearest first.
        labels: (n,) or (n, 1) true labels.
        index: (n,) dataset indices of the attacked examples.
        k_attk: neighbours voting (default: all stored).
        num_classes: C (default: the largest label seen + 1).

    Returns:
        The :class:`Scores`.
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
        return Scores(index, labels, np.zeros(0, np.int64), e, e.copy(), e.copy())
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
    return Scores(index, labels, pred, conf, expected_topk(above, tied, 1), expected_topk(above, tied, 5))


def scores_from_logits(logits: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Scores:
    """Supervised variant: prediction = argmax logit, confidence = max logit, top-k
    correctness as the expectation over a random order of tied logits.

    Args:
        logits: (n, C) classifier logits of the attacked examples.
        labels: (n,) or (n, 1) true labels.
        index: (n,) dataset indices of the attacked examples.

    Returns:
        The :class:`Scores` (``conf`` = max logit).
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
    return Scores(
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


def acc_at(scores: Scores, ps: np.ndarray | tuple | list, topk: int = 1) -> np.ndarray:
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


def population(comps: Comparisons, topk: int = 1, fractions=FRACTIONS, sweep=SWEEP) -> dict[str, Any]:
    """Population test for one top-k: each model's accuracy on its own most confident
    fraction ``p``, averaged over the comparisons, the score (target − reference) and the sweep.

    Args:
        comps: the comparisons (or the four :data:`ARRAYS` scores).
        topk: 1 or 5.
        fractions: the fractions ``p`` reported.
        sweep: fractions of the accuracy-vs-p curve.

    Returns:
        ``{"target": {P: acc}, "reference": {P: acc}, "score": {P: target − reference},
        "dejavu_score", "dejavu_score_100" (aliases of ``score["20"]``, ``score["100"]``; None
        when not in ``fractions``), "sweep": {"p", "target", "reference"}}`` with ``P =``
        :func:`fraction_key`, plus ``"pairs": {array: {P: acc}}, "pair_sweeps": {array: [acc]}``
        when the comparisons name their arrays.
    """
    cs = comparisons(comps)
    keys = [fraction_key(p) for p in fractions]
    tgt = mean_over([acc_at(c.target, fractions, topk) for c in cs])
    ref = mean_over([acc_at(c.reference, fractions, topk) for c in cs])
    score = dict(zip(keys, (tgt - ref).tolist()))
    out: dict[str, Any] = {
        "target": dict(zip(keys, tgt.tolist())),
        "reference": dict(zip(keys, ref.tolist())),
        "score": score,
        **{alias: score.get(p) for p, alias in SCORE_ALIASES.items()},
        "sweep": {
            "p": [float(p) for p in sweep],
            "target": mean_over([acc_at(c.target, sweep, topk) for c in cs]).tolist(),
            "reference": mean_over([acc_at(c.reference, sweep, topk) for c in cs]).tolist(),
        },
    }
    named = _named_arrays(cs)
    if named:
        out["pairs"] = {n: dict(zip(keys, acc_at(s, fractions, topk).tolist())) for n, s in named.items()}
        out["pair_sweeps"] = {n: acc_at(s, sweep, topk).tolist() for n, s in named.items()}
    return out


def _named_arrays(cs: Sequence[Comparison]) -> dict[str, Scores]:
    """The comparisons' named score arrays, in the order of :data:`ARRAYS` (others after)."""
    named: dict[str, Scores] = {}
    for c in cs:
        if c.arrays is not None:
            named.update(zip(c.arrays, (c.target, c.reference)))
    order = [n for n in ARRAYS if n in named] + [n for n in named if n not in ARRAYS]
    return {n: named[n] for n in order}


def quadrant_masks(target: Scores, reference: Scores, topk: int = 1) -> dict[str, np.ndarray]:
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


def quadrant_labels(target: Scores, reference: Scores, topk: int = 1) -> np.ndarray:
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


def quadrants(comps: Comparisons, topk: int = 1) -> dict[str, float]:
    """Quadrant shares over all attacked examples, averaged over the comparisons.

    Args:
        comps: the comparisons (or the four :data:`ARRAYS` scores).
        topk: 1 or 5.

    Returns:
        ``{quadrant: share}`` for each of :data:`QUADRANTS` (NaN for an empty set's part).
    """
    masks = [quadrant_masks(c.target, c.sample_ref, topk) for c in comparisons(comps)]
    return {q: float(mean_over([_mean(m[q]) for m in masks])) for q in QUADRANTS}


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def per_class(comps: Comparisons, num_classes: int, topk: int = 1) -> dict[str, list]:
    """Per-class target/reference accuracy and quadrant shares, averaged over the
    comparisons that attacked the class (none: None).

    Args:
        comps: the comparisons (or the four :data:`ARRAYS` scores).
        num_classes: C; labels must lie in ``0..C-1``.
        topk: 1 or 5.

    Returns:
        Lists of length C: ``"n"`` (attacked examples over all comparisons), ``"target"``,
        ``"reference"``, ``"gap"`` and one per quadrant; None where a class has no data.
    """
    cs = comparisons(comps)

    def share(c: Comparison, x: np.ndarray) -> np.ndarray:
        n = np.bincount(c.target.labels, minlength=num_classes)
        s = np.bincount(c.target.labels, weights=np.asarray(x, np.float64), minlength=num_classes)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)

    tgt = _nanmean([share(c, c.target.correct(topk)) for c in cs])
    ref = _nanmean([share(c, c.reference.correct(topk)) for c in cs])
    masks = [quadrant_masks(c.target, c.sample_ref, topk) for c in cs]
    return {
        "n": np.sum([np.bincount(c.target.labels, minlength=num_classes) for c in cs], axis=0).tolist(),
        "target": _nan_list(tgt),
        "reference": _nan_list(ref),
        "gap": _nan_list(tgt - ref),
        **{q: _nan_list(_nanmean([share(c, m[q]) for c, m in zip(cs, masks)])) for q in QUADRANTS},
    }


def _nanmean(xs: list[np.ndarray]) -> np.ndarray:
    """Elementwise mean over the arrays, NaNs left out (all NaN: NaN)."""
    x = np.stack(xs)
    ok = ~np.isnan(x)
    n = ok.sum(0)
    total = np.where(ok, x, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _nan_list(x: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in x]


def rankings(comps: Comparisons, topk: int = 1, top: int = 20) -> dict[str, list[dict]]:
    """Most memorized examples (memorized, by conf_target − conf_ref descending) and most
    correlated (correlated, by min(conf_target, conf_ref) descending); ties by set then index.

    Args:
        comps: the comparisons (or the four :data:`ARRAYS` scores); the sample test's reference.
        topk: 1 or 5 (decides the quadrant).
        top: rows kept per list.

    Returns:
        ``{"most_memorized": [...], "most_correlated": [...]}``, each row a dict with ``set``,
        ``index``, ``label``, ``pred_target``, ``pred_reference``, ``conf_target``,
        ``conf_reference`` and the ranking ``score``.
    """
    cs = comparisons(comps)
    sets = np.concatenate([np.full(len(c.target.index), c.name) for c in cs])
    idx = np.concatenate([c.target.index for c in cs])
    lab = np.concatenate([c.target.labels for c in cs])
    ct = np.concatenate([c.target.conf for c in cs])
    cr = np.concatenate([c.sample_ref.conf for c in cs])
    pt = np.concatenate([c.target.pred for c in cs])
    pr = np.concatenate([c.sample_ref.pred for c in cs])
    ql = np.concatenate([quadrant_labels(c.target, c.sample_ref, topk) for c in cs])
    out = {}
    for name, q, key in (
        ("most_memorized", "memorized", ct - cr),
        ("most_correlated", "correlated", np.minimum(ct, cr)),
    ):
        pos = np.nonzero(ql == q)[0]
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
