"""One-model vs two-model: how far the memorized examples of an audit agree with those of
the two-model attack on the same set. Reads ``examples.csv`` files only (no torch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dejavu.analysis.tables import read_examples_csv


def memorized(examples_csv: str | os.PathLike, set_name: str) -> tuple[set[int], set[int]]:
    """The memorized examples (top-1) of one set in an ``examples.csv``.

    Args:
        examples_csv: an attack's or an audit's ``examples.csv``.
        set_name: the ``set`` column's value kept (``A``, ``B``...).

    Returns:
        (dataset indices in quadrant ``memorized``, dataset indices of all rows of the set).
    """
    rows = [r for r in read_examples_csv(examples_csv, ("set", "index", "quadrant")) if r["set"] == set_name]
    return {r["index"] for r in rows if r["quadrant"] == "memorized"}, {r["index"] for r in rows}


def memorized_overlap(
    attack_dir: str | os.PathLike, audit_dir: str | os.PathLike, set_name: str = "A"
) -> dict[str, Any]:
    """Overlap of the memorized examples (top-1) of the two tests on the examples both
    attacked: counts, Jaccard index, the share of two-model memorized ones the audit finds
    (recall), and the share expected by chance (the audit's memorized rate).

    Args:
        attack_dir: a two-model attack folder (its ``examples.csv``).
        audit_dir: an audit folder of the same set (its ``examples.csv``).
        set_name: the set compared (``A`` for ``bbox_A``).

    Returns:
        ``{"set", "n_common", "memorized_one_model", "memorized_two_model", "both", "jaccard",
        "recall_of_two_model", "chance_recall"}`` (ratios NaN when undefined).
    """
    m2, all2 = memorized(Path(attack_dir) / "examples.csv", set_name)
    m1, all1 = memorized(Path(audit_dir) / "examples.csv", set_name)
    common = all1 & all2
    m1, m2 = m1 & common, m2 & common
    both = m1 & m2
    union = m1 | m2
    return {
        "set": set_name,
        "n_common": len(common),
        "memorized_one_model": len(m1),
        "memorized_two_model": len(m2),
        "both": len(both),
        "jaccard": len(both) / len(union) if union else float("nan"),
        "recall_of_two_model": len(both) / len(m2) if m2 else float("nan"),
        "chance_recall": len(m1) / len(common) if common else float("nan"),
    }
