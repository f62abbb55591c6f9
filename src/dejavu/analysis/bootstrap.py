"""The one resampler: percentile bootstrap intervals over the attacked examples.

Each comparison's set is resampled with replacement, independently; within a set the SAME
resample serves the target and the reference (paired: both scored the same crops). A
resample is turned into counts over cells of examples that score alike (one ``bincount``
per block of replicates) and the top fraction ``p`` is read off the cumulative counts by
:func:`dejavu.analysis.metrics.top_fraction_acc`, the population test's tie rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dejavu.analysis.metrics import (
    FRACTIONS,
    LEVEL,
    QUADRANTS,
    SCORE_ALIASES,
    TOPKS,
    Comparison,
    Comparisons,
    Scores,
    comparisons,
    conf_groups,
    fraction_key,
    mean_over,
    n_top,
    quadrant_masks,
    top_fraction_acc,
)

_CELLS = 2**22  # resample-block size (replicates x examples) to bound memory


def resample_blocks(sizes: Sequence[int], n_boot: int, seed: int, copies: int = 1) -> Iterator[list[np.ndarray]]:
    """The resampled example positions, in blocks of replicates.

    Args:
        sizes: examples per set, each resampled independently (in this order).
        n_boot: replicates in all.
        seed: seed of ``numpy.random.default_rng``.
        copies: how many score sets share a resample (bounds the block's memory).

    Yields:
        One ``(r, n_set)`` int64 array of positions per set, per block of ``r`` replicates.
    """
    rng = np.random.default_rng(seed)
    block = max(1, _CELLS // max(1, max(sizes, default=1) * copies))
    for start in range(0, n_boot, block):
        r = min(block, n_boot - start)
        yield [rng.integers(0, max(n, 1), size=(r, n)) for n in sizes]


def cell_counts(idx: np.ndarray, cell: np.ndarray, n_cells: int) -> np.ndarray:
    """(r, n_cells) float64: how many of each resample row's examples fall in each cell.

    Args:
        idx: (r, n) resampled example positions.
        cell: (n,) cell id of each example.
        n_cells: number of cells.

    Returns:
        The per-row cell counts (one ``bincount`` for the whole block).
    """
    r = len(idx)
    key = np.take(cell, idx)
    key += (np.arange(r, dtype=key.dtype) * n_cells)[:, None]
    return np.bincount(key.ravel(), minlength=r * n_cells).reshape(r, n_cells).astype(np.float64)


class ScoreCells:
    """One model's examples collapsed into cells of equal (confidence group, top-1
    correctness, top-5 correctness): a resample only needs how many of its draws fall in
    each cell, so a block of replicates costs one gather and one ``bincount``."""

    def __init__(self, scores: Scores) -> None:
        order, starts = conf_groups(scores.conf)
        gid = np.empty(len(order), np.int64)
        gid[order] = np.cumsum(np.isin(np.arange(len(order)), starts)) - 1
        u1, i1 = np.unique(np.asarray(scores.correct1, np.float64), return_inverse=True)
        u5, i5 = np.unique(np.asarray(scores.correct5, np.float64), return_inverse=True)
        keys, self.cell = np.unique((gid * len(u1) + i1.reshape(-1)) * len(u5) + i5.reshape(-1), return_inverse=True)
        self.cell = self.cell.reshape(-1)
        self.n_cells = len(keys)
        cg = keys // (len(u1) * len(u5))  # cells are sorted by confidence group
        self.starts = np.flatnonzero(np.r_[True, cg[1:] != cg[:-1]])
        self.c = {1: u1[(keys // len(u5)) % len(u1)], 5: u5[keys % len(u5)]}
        self.n = len(order)

    def top_accs(self, counts: np.ndarray, ps, topks=TOPKS) -> dict[tuple[int, float], np.ndarray]:
        """Accuracy of the top fraction ``p`` per resample row, for every (topk, p).

        Args:
            counts: (r, n_cells) float64 resample counts per cell (:func:`cell_counts`).
            ps: the fractions ``p`` in (0, 1].
            topks: which top-k correctness to score (1 and/or 5).

        Returns:
            ``{(topk, p): (r,) float64 accuracy}``, ties at the cut sharing the places.
        """
        gw = np.add.reduceat(counts, self.starts, axis=1)
        m = n_top(np.asarray(ps, np.float64), self.n).reshape(-1)
        out = {}
        for topk in topks:
            acc = top_fraction_acc(gw, np.add.reduceat(counts * self.c[topk][None, :], self.starts, axis=1), m)
            for j, p in enumerate(ps):
                out[(topk, p)] = acc[:, j]
        return out


class Resampled:
    """The comparisons' scores collapsed for the bootstrap (:class:`ScoreCells` per score
    set, quadrant cells per set), read per block of resamples (one per comparison)."""

    def __init__(self, comps: Sequence[Comparison]) -> None:
        self.comps = comps
        self.sizes = [len(c.target.index) for c in comps]
        self.cells = [(ScoreCells(c.target), ScoreCells(c.reference)) if n else None for c, n in zip(comps, self.sizes)]
        self.quad: list[tuple[np.ndarray, np.ndarray] | None] = []
        for c, n in zip(comps, self.sizes):
            masks = quadrant_masks(c.target, c.sample_ref, 1)
            vals, cell = np.unique(np.stack([masks[q] for q in QUADRANTS], axis=1), axis=0, return_inverse=True)
            self.quad.append((cell.reshape(-1), vals) if n else None)

    def accs(
        self, draws: Sequence[np.ndarray], ps, topks=TOPKS
    ) -> dict[tuple[int, float], tuple[np.ndarray, np.ndarray]]:
        """Target and reference accuracy (each averaged over the comparisons) per (topk, p)."""
        r = len(draws[0])
        per: list[tuple[dict, dict]] = []
        for pc, idx in zip(self.cells, draws):
            got = [x.top_accs(cell_counts(idx, x.cell, x.n_cells), ps, topks) for x in pc] if pc else [{}, {}]
            per.append((got[0], got[1]))
        nan = np.full(r, np.nan)
        return {
            (k, p): (mean_over([t.get((k, p), nan) for t, _ in per]), mean_over([f.get((k, p), nan) for _, f in per]))
            for k in topks
            for p in ps
        }

    def scores(self, draws: Sequence[np.ndarray], ps=FRACTIONS) -> dict[tuple[int, float], np.ndarray]:
        """Score replicates (target − reference) per (topk, p)."""
        return {k: t - r for k, (t, r) in self.accs(draws, ps).items()}

    def quadrants(self, draws: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Quadrant share replicates (top-1), averaged over the comparisons."""
        shares = [
            cell_counts(idx, q[0], len(q[1])) @ q[1] / n if q else np.full((len(idx), len(QUADRANTS)), np.nan)
            for q, idx, n in zip(self.quad, draws, self.sizes)
        ]
        return {q: mean_over([s[:, j] for s in shares]) for j, q in enumerate(QUADRANTS)}


def bootstrap_replicates(
    comps: Comparisons, n_boot: int = 1000, seed: int = 0, fractions=FRACTIONS
) -> dict[Any, np.ndarray]:
    """Replicates (n_boot,) of the scores at each (top-k, fraction) and of the quadrant shares.

    Args:
        comps: the comparisons (or the four :data:`~dejavu.analysis.metrics.ARRAYS` scores).
        n_boot: number of replicates.
        seed: seed of ``numpy.random.default_rng``.
        fractions: the top fractions ``p`` scored.

    Returns:
        ``{(topk, p): (n_boot,) float64}`` and ``{quadrant: (n_boot,) share}`` (top-1); NaN
        where a set has no attacked example.
    """
    rs = Resampled(comparisons(comps))
    out: dict[Any, list[np.ndarray]] = {}
    for draws in resample_blocks(rs.sizes, n_boot, seed):
        for k, v in rs.scores(draws, fractions).items():
            out.setdefault(k, []).append(v)
        for q, v in rs.quadrants(draws).items():
            out.setdefault(q, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def percentile_ci(x: np.ndarray, level: float = LEVEL) -> list[float]:
    """Percentile interval of bootstrap replicates, NaNs dropped.

    Args:
        x: (n_boot,) replicates.
        level: coverage, e.g. 0.95 for the 2.5% and 97.5% quantiles.

    Returns:
        ``[lo, hi]``; ``[nan, nan]`` when no replicate is finite.
    """
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    lo, hi = np.quantile(x, [a, 1 - a])
    return [float(lo), float(hi)]


def bootstrap_cis(comps: Comparisons, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """Percentile CIs of the scores and the quadrant shares.

    Args:
        comps: the comparisons (or the four :data:`~dejavu.analysis.metrics.ARRAYS` scores).
        n_boot: number of replicates; ``<= 0`` gives NaN intervals.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.

    Returns:
        ``{"top1": {"score": {P: [lo, hi]}, "dejavu_score", "dejavu_score_100"}, "top5": ...,
        "quadrants": {quadrant: [lo, hi]}}`` (``P`` as :func:`fraction_key`; the old names
        are aliases of ``score["20"]`` and ``score["100"]``).
    """
    reps = bootstrap_replicates(comps, max(0, n_boot), seed)
    empty = np.zeros(0)
    out: dict[str, Any] = {}
    for k in TOPKS:
        score = {fraction_key(p): percentile_ci(reps.get((k, p), empty), level) for p in FRACTIONS}
        out[f"top{k}"] = {"score": score, **{alias: score[p] for p, alias in SCORE_ALIASES.items()}}
    out["quadrants"] = {q: percentile_ci(reps.get(q, empty), level) for q in QUADRANTS}
    return out


def accuracy_bands(
    comps: Comparisons, ps, topk: int = 1, n_boot: int = 200, seed: int = 0, level: float = LEVEL
) -> dict[str, list[list[float]]]:
    """Percentile intervals of the target's and the reference's accuracy on the top fraction
    ``p`` of their most confident examples (each averaged over the comparisons, as the point
    values), for the figures' bands.

    Args:
        comps: the comparisons (or the four :data:`~dejavu.analysis.metrics.ARRAYS` scores).
        ps: the fractions ``p`` in (0, 1].
        topk: 1 or 5.
        n_boot: replicates.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage.

    Returns:
        ``{"target": [lo_list, hi_list], "reference": [lo_list, hi_list]}``, one value per ``p``.
    """
    ps = [float(p) for p in ps]
    rs = Resampled(comparisons(comps))
    reps: dict[str, list[np.ndarray]] = {"target": [], "reference": []}
    for draws in resample_blocks(rs.sizes, n_boot, seed):
        acc = rs.accs(draws, ps, (topk,))
        reps["target"].append(np.stack([acc[(topk, p)][0] for p in ps], axis=1))
        reps["reference"].append(np.stack([acc[(topk, p)][1] for p in ps], axis=1))
    out = {}
    for role, blocks in reps.items():
        x = np.concatenate(blocks)  # (n_boot, len(ps))
        cis = [percentile_ci(x[:, j], level) for j in range(len(ps))]
        out[role] = [[c[0] for c in cis], [c[1] for c in cis]]
    return out
