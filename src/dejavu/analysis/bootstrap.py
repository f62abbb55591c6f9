"""Bootstrap confidence intervals for the déjà vu score and the quadrant shares.

Unit of resampling: the attacked example. Each set (A, B) is resampled with replacement
independently; within a set the SAME resample is used for the target and the reference
model (a paired bootstrap: both models attacked the same crops). A resample is drawn as
``n`` indices and turned into a count vector ``w`` over the examples (one ``bincount`` for
a whole block of replicates), so everything stays vectorised: per model, the counts are
summed over groups of equal confidence and the top fraction ``p`` of a resample is read
off the cumulative group weights by :func:`dejavu.analysis.metrics.top_fraction_acc`, the
same tie-sharing rule as the population test (duplicates of an example share its
confidence, so they fall in its group).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dejavu.analysis.metrics import (
    FRACTIONS,
    PAIRS,
    QUADRANTS,
    PairScores,
    conf_groups,
    n_top,
    quadrant_masks,
    top_fraction_acc,
)

_CELLS = 2**22  # resample-block size (replicates x examples) to bound memory
SETS = {"A": ("A_attk_A", "B_attk_A"), "B": ("B_attk_B", "A_attk_B")}


def resample_blocks(n: dict[str, int], n_boot: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """The resampled example positions, in blocks of replicates.

    Args:
        n: examples per set, e.g. ``{"A": 120, "B": 90}``.
        n_boot: replicates in all.
        seed: seed of ``numpy.random.default_rng``.

    Yields:
        ``{set: (r, n_set) int64 positions}`` per block (sets drawn in the order of ``n``).
    """
    rng = np.random.default_rng(seed)
    block = max(1, _CELLS // max(1, max(n.values(), default=1)))
    for start in range(0, n_boot, block):
        r = min(block, n_boot - start)
        yield {y: rng.integers(0, max(ny, 1), size=(r, ny)) for y, ny in n.items()}


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


class PairCells:
    """One model's examples collapsed into cells of equal (confidence group, top-1
    correctness, top-5 correctness): a resample only needs how many of its draws fall in
    each cell, so a block of replicates costs one gather and one ``bincount``."""

    def __init__(self, scores: PairScores) -> None:
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

    def top_accs(self, counts: np.ndarray, ps, topks=(1, 5)) -> dict[tuple[int, float], np.ndarray]:
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


def _quadrant_cells(pairs: dict[str, PairScores], y: str) -> tuple[np.ndarray, np.ndarray]:
    """Examples of set ``y`` collapsed by their four quadrant probabilities:
    (n,) cell ids and (n_cells, 4) probabilities."""
    t, r = SETS[y]
    masks = quadrant_masks(pairs[t], pairs[r], 1)
    rows = np.stack([masks[q] for q in QUADRANTS], axis=1)
    vals, cell = np.unique(rows, axis=0, return_inverse=True)
    return cell.reshape(-1), vals


def bootstrap_replicates(
    pairs: dict[str, PairScores], n_boot: int = 1000, seed: int = 0, fractions=(0.20, 1.00)
) -> dict[str, np.ndarray]:
    """Replicates (n_boot,) of: top{1,5} scores at each fraction and quadrant shares.

    Args:
        pairs: the four :data:`PAIRS` scores; target and reference of a set aligned.
        n_boot: number of replicates.
        seed: seed of ``numpy.random.default_rng``.
        fractions: the top fractions ``p`` scored.

    Returns:
        ``{"top{k}_score_{P}": (n_boot,) float64}`` for k in 1, 5 and ``P = round(100 p)``,
        plus ``{quadrant: (n_boot,) share}`` (top-1, swap-averaged). NaN where a set has no
        attacked example.
    """
    n = {y: len(pairs[t].index) for y, (t, _) in SETS.items()}
    cells = {name: PairCells(pairs[name]) for name in PAIRS if n[name[-1]]}
    qcells = {y: _quadrant_cells(pairs, y) for y in SETS if n[y]}
    out: dict[str, list[np.ndarray]] = {}
    for draws in resample_blocks(n, n_boot, seed):
        r = len(draws["A"])
        acc: dict[tuple, np.ndarray] = {}
        quad = {q: np.zeros(r) for q in QUADRANTS}
        for y, names in SETS.items():
            for name in names:
                pc = cells.get(name)
                got = pc.top_accs(cell_counts(draws[y], pc.cell, pc.n_cells), fractions) if pc else {}
                for topk in (1, 5):
                    for p in fractions:
                        acc[(name, topk, p)] = got.get((topk, p), np.full(r, np.nan))
            if n[y]:
                qc, qv = qcells[y]
                shares = cell_counts(draws[y], qc, len(qv)) @ qv / n[y]
            for j, q in enumerate(QUADRANTS):
                quad[q] += 0.5 * (shares[:, j] if n[y] else np.nan)
        for topk in (1, 5):
            for p in fractions:
                tgt = 0.5 * (acc[("A_attk_A", topk, p)] + acc[("B_attk_B", topk, p)])
                ref_ = 0.5 * (acc[("B_attk_A", topk, p)] + acc[("A_attk_B", topk, p)])
                out.setdefault(f"top{topk}_score_{int(round(p * 100))}", []).append(tgt - ref_)
        for q in QUADRANTS:
            out.setdefault(q, []).append(quad[q])
    return {k: np.concatenate(v) for k, v in out.items()}


def percentile_ci(x: np.ndarray, level: float = 0.95) -> list[float]:
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


def bootstrap_cis(
    pairs: dict[str, PairScores], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Percentile CIs: ``{"top1": {"dejavu_score": [lo, hi], "dejavu_score_100": ...},
    "top5": {...}, "quadrants": {"memorized": [lo, hi], ...}}``.

    Args:
        pairs: the four :data:`PAIRS` scores; target and reference of a set aligned.
        n_boot: number of replicates; ``<= 0`` gives NaN intervals.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.

    Returns:
        The intervals above (``dejavu_score`` at 20%, ``dejavu_score_100`` at 100%), each
        ``[lo, hi]`` floats.
    """
    assert set(PAIRS) <= set(pairs) and FRACTIONS
    if n_boot <= 0:
        nan = [float("nan"), float("nan")]
        return {
            "top1": {"dejavu_score": nan, "dejavu_score_100": nan},
            "top5": {"dejavu_score": nan, "dejavu_score_100": nan},
            "quadrants": {q: nan for q in QUADRANTS},
        }
    reps = bootstrap_replicates(pairs, n_boot, seed)
    return {
        **{
            f"top{k}": {
                "dejavu_score": percentile_ci(reps[f"top{k}_score_20"], level),
                "dejavu_score_100": percentile_ci(reps[f"top{k}_score_100"], level),
            }
            for k in (1, 5)
        },
        "quadrants": {q: percentile_ci(reps[q], level) for q in QUADRANTS},
    }


def accuracy_bands(
    pairs: dict[str, PairScores], ps, topk: int = 1, n_boot: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, list[list[float]]]:
    """Percentile intervals of the target's and the reference's accuracy on the top fraction
    ``p`` of their most confident examples (each swap-averaged, as the point values), for the
    figures' bands: the examples of each set resampled together, as for the score.

    Args:
        pairs: the four :data:`PAIRS` scores.
        ps: the fractions ``p`` in (0, 1].
        topk: 1 or 5.
        n_boot: replicates.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage.

    Returns:
        ``{"target": [lo_list, hi_list], "reference": [lo_list, hi_list]}``, one value per ``p``.
    """
    ps = [float(p) for p in ps]
    n = {y: len(pairs[t].index) for y, (t, _) in SETS.items()}
    cells = {name: PairCells(pairs[name]) for name in PAIRS if n[name[-1]]}
    reps: dict[str, list[np.ndarray]] = {"target": [], "reference": []}
    for draws in resample_blocks(n, n_boot, seed):
        r = len(draws["A"])
        acc = {}
        for name in PAIRS:
            pc = cells.get(name)
            got = pc.top_accs(cell_counts(draws[name[-1]], pc.cell, pc.n_cells), ps, (topk,)) if pc else {}
            acc[name] = np.stack([got.get((topk, p), np.full(r, np.nan)) for p in ps], axis=1)
        reps["target"].append(0.5 * (acc["A_attk_A"] + acc["B_attk_B"]))
        reps["reference"].append(0.5 * (acc["B_attk_A"] + acc["A_attk_B"]))
    out = {}
    for role, blocks in reps.items():
        x = np.concatenate(blocks)  # (n_boot, len(ps))
        cis = [percentile_ci(x[:, j], level) for j in range(len(ps))]
        out[role] = [[c[0] for c in cis], [c[1] for c in cis]]
    return out
