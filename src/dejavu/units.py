"""One unit everywhere results are shown (CLI lines, tables, report, plots): accuracies and
shares in percent (``54.0%``), differences of accuracies -- the déjà vu score, the control,
the excess over it, their intervals -- in percentage points (``+21.5 pts``). Results files
keep fractions in [0, 1] (or [-1, 1] for differences); only what is shown is scaled."""

from __future__ import annotations

import math


def pct(x: float, digits: int = 1) -> str:
    """An accuracy or share in [0, 1] as a percentage: ``0.54`` -> ``54.0%``."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.{digits}f}%"


def pts(x: float, digits: int = 1, unit: bool = True) -> str:
    """A difference of accuracies in [-1, 1] in signed percentage points: ``0.215`` -> ``+21.5 pts``."""
    if x is None or math.isnan(x):
        return "n/a"
    return f"{100 * x:+.{digits}f}" + (" pts" if unit else "")


def pts_ci(ci, digits: int = 1) -> str:
    """An interval of a difference in points: ``(0.01, 0.3)`` -> ``[+1.0, +30.0] pts``."""
    lo, hi = ci
    return f"[{pts(lo, digits, unit=False)}, {pts(hi, digits, unit=False)}] pts"


def ci95_text(ci, digits: int = 1) -> str:
    """``95% CI [lo, hi] pts``, or why there is none (``--bootstrap 0``: no replicates, NaN bounds)."""
    if ci is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return "(no CI: --bootstrap 0)"
    return "95% CI " + pts_ci(ci, digits)
