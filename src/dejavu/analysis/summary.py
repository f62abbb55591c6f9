"""``compute_all``: every metric of an attack's ``results.json`` in one call.

Its own module because it joins the pure metrics (:mod:`dejavu.analysis.metrics`) and the
bootstrap (:mod:`dejavu.analysis.bootstrap`, which builds on the metrics): keeping it out of
``metrics`` keeps the dependency one-way (metrics <- bootstrap <- summary).
"""

from __future__ import annotations

from typing import Any

from dejavu.analysis.bootstrap import bootstrap_cis
from dejavu.analysis.metrics import (
    PAIRS,
    PairScores,
    _check_aligned,
    per_class,
    population,
    quadrants,
    rankings,
)


def compute_all(
    pairs: dict[str, PairScores], num_classes: int | None = None, n_boot: int = 1000, seed: int = 0, top: int = 20
) -> dict[str, Any]:
    """Every metric of the contract's ``results.json`` ``metrics`` block (plus per-class
    statistics and rankings). ``pairs`` maps the four names of :data:`PAIRS` to scores;
    target and reference of a set must be aligned (same examples, same order).

    Args:
        pairs: the four :data:`PAIRS` scores.
        num_classes: C (default: the largest label seen + 1).
        n_boot: bootstrap replicates for the intervals.
        seed: seed of the bootstrap.
        top: rows per ranking list.

    Returns:
        ``{"top1", "top5"}`` (:func:`population` each, with ``ci95``), ``"quadrants"``,
        ``"quadrants_ci95"``, ``"quadrants_top5"``, ``"n_attacked"``, ``"per_class"``,
        ``"rankings"`` and ``"bootstrap"`` (n, seed, level, unit).

    Raises:
        ValueError: a pair is missing or a set's target and reference are not aligned.
    """
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
    out["bootstrap"] = {
        "n": int(n_boot),
        "seed": int(seed),
        "level": 0.95,
        "unit": "attacked example, resampled within each set; target and reference paired",
    }
    return out
