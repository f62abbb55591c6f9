"""``compute_all``: every metric of a ``results.json`` ``metrics`` block in one call, for any
list of comparisons (the two-model test, an audit, either's control)."""

from __future__ import annotations

from typing import Any

from dejavu.analysis.bootstrap import bootstrap_cis
from dejavu.analysis.metrics import (
    LEVEL,
    TOPKS,
    Comparisons,
    comparisons,
    per_class,
    population,
    quadrants,
    rankings,
)

TWO_MODEL_UNIT = "attacked example, resampled within each set; target and reference paired"


def compute_all(
    comps: Comparisons,
    num_classes: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    top: int = 20,
    unit: str = TWO_MODEL_UNIT,
) -> dict[str, Any]:
    """Every metric of the contract's ``results.json`` ``metrics`` block (plus per-class
    statistics and rankings).

    Args:
        comps: the comparisons (or the four :data:`~dejavu.analysis.metrics.ARRAYS` scores);
            target and reference of each aligned (same examples, same order).
        num_classes: C (default: the largest label seen + 1).
        n_boot: bootstrap replicates for the intervals.
        seed: seed of the bootstrap.
        top: rows per ranking list.
        unit: the bootstrap's unit, as written in ``bootstrap.unit``.

    Returns:
        ``{"top1", "top5"}`` (:func:`population` each, with ``ci95``), ``"quadrants"``,
        ``"quadrants_ci95"``, ``"quadrants_top5"``, ``"n_attacked"``, ``"per_class"``,
        ``"rankings"`` and ``"bootstrap"`` (n, seed, level, unit).

    Raises:
        ValueError: a score array is missing or a comparison's target and reference are not aligned.
    """
    cs = comparisons(comps)
    for c in cs:
        c.check()
    if num_classes is None:
        num_classes = int(max(int(c.target.labels.max(initial=-1)) for c in cs) + 1)
    out: dict[str, Any] = {}
    cis = bootstrap_cis(cs, n_boot=n_boot, seed=seed)
    for topk in TOPKS:
        out[f"top{topk}"] = {**population(cs, topk), "ci95": cis[f"top{topk}"]}
    out["quadrants"] = quadrants(cs, 1)
    out["quadrants_ci95"] = cis["quadrants"]
    out["quadrants_top5"] = quadrants(cs, 5)
    out["n_attacked"] = {c.name: int(len(c.target.index)) for c in cs}
    out["per_class"] = per_class(cs, num_classes, 1)
    out["rankings"] = rankings(cs, 1, top)
    out["bootstrap"] = {"n": int(n_boot), "seed": int(seed), "level": LEVEL, "unit": unit}
    return out
