"""Calibrated significance: the déjà vu score against a held-out control.

Example level (one model pair, or one audited model): :func:`excess`, the score ``S`` minus
the control's ``C`` with a percentile bootstrap over both example sets (each resampled
independently, target and reference paired within a set); it covers the choice of examples,
not training randomness. Pair level (N >= 2 seed pairs): :func:`pair_level`, the mean excess
with ``mean ± t(0.975, df) · sqrt(s²/N + v_shared)``, ``v_shared`` the example variance the
pairs share (:func:`shared_example_variance`, a joint bootstrap), ``df`` by
Welch–Satterthwaite. The primary endpoint is :data:`PRIMARY`. Why and how: docs/DESIGN.md
§7.2 ("Held-out control", "Primary endpoint"); bench/RESULTS.md measures the calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError
from dejavu.analysis.bootstrap import Resampled, percentile_ci, resample_blocks
from dejavu.analysis.metrics import (
    ARRAYS,
    FRACTIONS,
    LEVEL,
    SETS,
    TOPKS,
    Comparison,
    Comparisons,
    Scores,
    acc_at,
    comparisons,
    fraction_key,
    mean_over,
    score_at,
)
from dejavu.analysis.summary import TWO_MODEL_UNIT, compute_all
from dejavu.analysis.tables import scores_from_arrays, scores_from_folder
from dejavu.io import load_npy
from dejavu.units import pts

TOPS = tuple(f"top{k}" for k in TOPKS)
EXAMPLE_UNIT = (
    "attacked example; the private sets A, B and the control halves CA, CB resampled "
    "independently, target and reference paired within a set"
)
NOT_COVERED = "choice of examples only, not training randomness (one model pair)"
# How the two-model test's excess block describes itself (an audit passes its own words).
TWO_MODEL_EXCESS = {
    "statistic": "excess = score - control (target - reference accuracy, top p% most confident)",
    "unit": EXAMPLE_UNIT,
    "covers": NOT_COVERED,
}
# The pre-declared primary endpoint; everything else is secondary.
PRIMARY: dict[str, Any] = {
    "name": "top-1 at the 20% most confident examples, final epoch",
    "top": "top1",
    "p": "20",
    "epoch": "final",
    "statistic": "excess of the deja vu score over the held-out control (the score itself when there is no control)",
    "secondary": "every other statistic: top-5, 5% and 100%, earlier epochs, quadrants, per-class tables",
}


# ---------------------------------------------------------------- Student t (scipy)


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (q > 0.5) of Student's t with ``df`` > 0 degrees of freedom
    (``scipy.stats.t.ppf``; ``df`` may be fractional, as a Welch–Satterthwaite one).

    Args:
        q: the quantile, 0.5 < q < 1.
        df: degrees of freedom, > 0 (``inf``: the normal quantile).

    Returns:
        The quantile.

    Raises:
        ValueError: ``df`` or ``q`` out of range.
    """
    from scipy import stats

    if not df > 0 or not 0.5 < q < 1:
        raise ValueError(f"t_quantile needs df > 0 and 0.5 < q < 1 (got q={q}, df={df})")
    return float(stats.t.ppf(q, df))


def welch_satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of independently estimated variances.

    Args:
        parts: ``(variance, its degrees of freedom)`` per part (``inf``: known exactly).

    Returns:
        ``(Σ v)² / Σ (v² / df)``; ``inf`` when every part with a variance is known exactly,
        the largest given ``df`` when all variances are 0.
    """
    total = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts if v > 0 and math.isfinite(d))
    if total <= 0:
        return max(d for _, d in parts)
    return math.inf if denom == 0 else total * total / denom


# ---------------------------------------------------------------- example level


def _point(cs: Sequence[Comparison]) -> dict[tuple[int, float], float]:
    """The score (target − reference, averaged over the comparisons) per (top-k, fraction)."""
    out = {}
    for k in TOPKS:
        t = mean_over([acc_at(c.target, FRACTIONS, k) for c in cs])
        r = mean_over([acc_at(c.reference, FRACTIONS, k) for c in cs])
        out.update({(k, p): float(v) for p, v in zip(FRACTIONS, t - r)})
    return out


def shared_example_variance(
    items: Sequence[tuple[Comparisons, Comparisons]], n_boot: int = 400, seed: int = 0
) -> dict[tuple[str, str], float]:
    """The part of the example-level variance that N model pairs *share*, per (top, fraction).

    ``items``: (comparisons, control comparisons) per model pair, attacking the same examples.
    One resample of the examples serves every pair (a joint bootstrap); the mean covariance
    between two different pairs' excess replicates estimates the variance of the common
    example effect, which the spread over pairs cannot show.

    Args:
        items: (comparisons, control's) per model pair (or the four ``X_attk_Y`` scores each).
        n_boot: joint bootstrap replicates.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``{(top, p): variance}`` for ``top`` in :data:`TOPS`, ``p`` a fraction key
        (NaN with fewer than two pairs).

    Raises:
        ValueError: the pairs attacked different examples.
    """
    its = [(comparisons(a), comparisons(b)) for a, b in items]
    first = its[0][0] + its[0][1]
    for cs, cc in its[1:]:
        if any(not np.array_equal(x.target.index, y.target.index) for x, y in zip(cs + cc, first)):
            raise ValueError("the model pairs attacked different examples: no joint bootstrap")
    rs = [(Resampled(cs), Resampled(cc)) for cs, cc in its]
    sizes = rs[0][0].sizes + rs[0][1].sizes
    half = len(rs[0][0].sizes)
    reps: dict[tuple[int, float], list[np.ndarray]] = {}
    for draws in resample_blocks(sizes, n_boot, seed, copies=len(its)):
        per = [(s.scores(draws[:half]), c.scores(draws[half:])) for s, c in rs]
        for key in per[0][0]:
            reps.setdefault(key, []).append(np.stack([a[key] - b[key] for a, b in per]))
    out = {}
    n = len(its)
    for (k, p), v in reps.items():
        x = np.concatenate(v, axis=1)
        x = x[:, ~np.isnan(x).any(axis=0)]
        cov = np.cov(x) if x.shape[1] > 1 else np.full((n, n), np.nan)
        out[(f"top{k}", fraction_key(p))] = float((cov.sum() - np.trace(cov)) / (n * (n - 1))) if n > 1 else math.nan
    return out


def excess(
    comps: Comparisons,
    control: Comparisons,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    wording: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Score, control score and their excess with a paired bootstrap interval over both
    example sets (module docstring).

    Args:
        comps: the comparisons on the attacked sets (or the four ``X_attk_Y`` scores).
        control: the same comparisons on the held-out control (same models).
        n_boot: bootstrap replicates (0: NaN intervals).
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.
        wording: ``statistic``, ``unit`` and ``covers`` as written in the block
            (default :data:`TWO_MODEL_EXCESS`).

    Returns:
        ``{"statistic", "unit", "covers", "n_boot", "seed", "level"}`` and per ``top`` in
        :data:`TOPS` and fraction key ``p``: ``{"score", "control", "excess", "ci95": [lo, hi],
        "se", "excludes_zero"}``.
    """
    cs, cc = comparisons(comps), comparisons(control)
    s, c = _point(cs), _point(cc)
    rs, rc = Resampled(cs), Resampled(cc)
    reps: dict[tuple[int, float], list[np.ndarray]] = {}
    for draws in resample_blocks(rs.sizes + rc.sizes, max(0, n_boot), seed):
        a, b = rs.scores(draws[: len(cs)]), rc.scores(draws[len(cs) :])
        for key in a:
            reps.setdefault(key, []).append(a[key] - b[key])
    out: dict[str, Any] = {
        **(wording or TWO_MODEL_EXCESS),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": level,
    }
    for k in TOPKS:
        out[f"top{k}"] = {}
        for p in FRACTIONS:
            x = np.concatenate(reps[(k, p)]) if reps else np.zeros(0)
            x = x[~np.isnan(x)]
            ci = percentile_ci(x, level)
            out[f"top{k}"][fraction_key(p)] = {
                "score": s[(k, p)],
                "control": c[(k, p)],
                "excess": s[(k, p)] - c[(k, p)],
                "ci95": ci,
                "se": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                "excludes_zero": bool(len(x) and (ci[0] > 0 or ci[1] < 0)),
            }
    return out


def control_block(
    comps: Comparisons,
    control: Comparisons,
    counts: dict[str, Any],
    info: dict[str, Any],
    num_classes: int,
    n_boot: int,
    seed: int,
    unit: str | None = None,
    wording: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``results.json`` ``control``: the control's metrics (the ``metrics`` keys less
    ``per_class`` and ``rankings``) and the excess of the score over it.

    Args:
        comps: the comparisons on the attacked sets.
        control: the same on the control.
        counts: the control's crop counts.
        info: where the control came from.
        num_classes: classes of the dataset.
        n_boot: bootstrap replicates (0: no intervals).
        seed: the excess's bootstrap seed; the control's own metrics use ``seed + 1``.
        unit: the control metrics' bootstrap unit (default: the two-model test's).
        wording: the excess block's words (:func:`excess`).

    Returns:
        ``{"source", "counts", "metrics", "excess"}``.
    """
    m = compute_all(control, num_classes, n_boot=n_boot, seed=seed + 1, unit=unit or TWO_MODEL_UNIT)
    return {
        "source": info,
        "counts": counts,
        "metrics": {k: v for k, v in m.items() if k not in ("per_class", "rankings")},
        "excess": excess(comps, control, n_boot=n_boot, seed=seed, wording=wording),
    }


# ---------------------------------------------------------------- pair level


def pair_level(
    excesses: Sequence[float],
    example_ses: Sequence[float | None] | None = None,
    level: float = LEVEL,
    shared_var: float | None = None,
    example_df: float | None = None,
    replicates: bool = False,
) -> dict[str, Any]:
    """Mean excess over N model pairs with a t-interval (module docstring).

    ``shared_var``: the example variance the pairs share (:func:`shared_example_variance`,
    the estimate used when the arrays are at hand); otherwise ``example_ses``, each pair's
    example-level bootstrap standard error (``se`` of :func:`excess`), whose mean square
    bounds it from above (conservative); with neither, the example term is left out (and
    the result says so).

    Args:
        excesses: the per-pair excesses ``E_i``.
        example_ses: each pair's example-level standard error, or None.
        level: coverage of the t-interval.
        shared_var: the shared example variance, or None.
        example_df: degrees of freedom of the example variance (:func:`example_df`); with
            it the interval's df are Welch–Satterthwaite's, without it N − 1 (conservative).
        replicates: the pairs are independent replicates (a partition per pair: each drew its
            own examples), so the spread over pairs already holds the example variance: a
            plain Student t over pairs, ``mean ± t(0.975, N−1) · s/√N`` (no example term).

    Returns:
        ``{"n_pairs", "values", "mean", "level", "covers", "ci95", "distinguishable"}``; with
        N >= 2 also ``sd_over_pairs``, ``example_var``, ``example_term``, ``se``, ``t``, ``df``,
        ``df_rule``.
        With N < 2 the interval is NaN and ``distinguishable`` None.
    """
    e = np.asarray(list(excesses), dtype=np.float64)
    n = len(e)
    out: dict[str, Any] = {
        "n_pairs": n,
        "values": e.tolist(),
        "mean": float(e.mean()) if n else float("nan"),
        "level": level,
        "covers": "training randomness and the choice of examples",
    }
    if n < 2:
        out.update(
            ci95=[float("nan")] * 2,
            distinguishable=None,
            covers="nothing over pairs: one model pair does not cover training randomness",
        )
        return out
    sd = float(e.std(ddof=1))
    if replicates:
        se, t = sd / math.sqrt(n), t_quantile(1 - (1 - level) / 2, n - 1)
        ci = [out["mean"] - t * se, out["mean"] + t * se]
        out.update(
            covers="training randomness and the choice of examples (a partition per model pair: independent "
            "replicates)",
            sd_over_pairs=sd,
            example_var=None,
            example_term="none: a partition per pair (plain Student t over pairs)",
            se=se,
            t=t,
            df=n - 1,
            df_rule="N - 1 (independent replicates)",
            ci95=ci,
            distinguishable=bool(ci[0] > 0 or ci[1] < 0),
        )
        return out
    ses = np.asarray([np.nan if v is None else v for v in (example_ses or [])], dtype=np.float64)
    v_ex = float(np.mean(ses**2)) if len(ses) == n and not np.isnan(ses).any() else None
    how = "bound: mean per-pair example variance (conservative)" if v_ex is not None else None
    if shared_var is not None and not math.isnan(shared_var):
        v_ex, how = max(0.0, float(shared_var)), "shared example variance (joint bootstrap over pairs)"
    se = math.sqrt(sd**2 / n + (v_ex or 0.0))
    df: float = n - 1
    rule = "N - 1"
    if v_ex and example_df is not None and example_df > 0:
        df = welch_satterthwaite([(sd**2 / n, n - 1), (v_ex, float(example_df))])
        rule = f"Welch-Satterthwaite (spread over pairs: {n - 1} df; example variance: {example_df:g} df)"
    elif v_ex:
        rule = "N - 1 (the example variance's degrees of freedom unknown: conservative)"
    t = t_quantile(1 - (1 - level) / 2, df)
    ci = [out["mean"] - t * se, out["mean"] + t * se]
    if v_ex is None:
        out["covers"] = "training randomness only (no example-level standard errors given)"
    out.update(
        sd_over_pairs=sd,
        example_var=v_ex,
        example_term=how,
        se=se,
        t=t,
        df=df,
        df_rule=rule,
        ci95=ci,
        distinguishable=bool(ci[0] > 0 or ci[1] < 0),
    )
    return out


def pairs_from_results(
    results: Sequence[dict[str, Any]], top: str = "top1", p: str = "20", shared_var: float | None = None
) -> dict[str, Any]:
    """:func:`pair_level` of the excess over several attacks' ``results.json`` (one per
    model pair), plus the per-pair score and control. Attacks without a control are
    aggregated on the score alone (then nothing is compared with a control; said so).

    Args:
        results: the ``results.json`` dicts, one per model pair.
        top: ``"top1"`` or ``"top5"``.
        p: the fraction key (percent most confident), e.g. ``"20"``.
        shared_var: the shared example variance for :func:`pair_level`, or None.

    Returns:
        The :func:`pair_level` dict plus ``statistic``, ``scores``, ``controls`` (None without
        a control), ``top``, ``p`` and ``partitions`` (pairs on different partitions are
        independent replicates: a plain Student t over pairs, :func:`per_pair_partitions`).
    """
    with_ctrl = all("control" in r for r in results)
    reps = per_pair_partitions(results)
    if with_ctrl:
        ex = [r["control"]["excess"][top][p] for r in results]
        block = pair_level(
            [x["excess"] for x in ex],
            [x.get("se") for x in ex],
            shared_var=None if reps else shared_var,
            example_df=example_df(results),
            replicates=reps,
        )
        block.update(
            statistic="excess over the held-out control",
            scores=[x["score"] for x in ex],
            controls=[x["control"] for x in ex],
        )
    else:
        block = pair_level([score_at(r["metrics"][top], p) for r in results], replicates=reps)
        block.update(
            statistic="score (no held-out control: not compared with one)", scores=block["values"], controls=None
        )
    block.update(top=top, p=p, partitions="one per pair" if reps else "shared by the pairs")
    return block


def per_pair_partitions(results: Sequence[dict[str, Any]]) -> bool:
    """Whether N >= 2 attacks used N different partitions (``results.json`` ``partition``):
    then the pairs are independent replicates (:func:`pair_level` ``replicates``).

    Args:
        results: ``results.json`` dicts, one per model pair.

    Returns:
        True when every attack names a partition and no two name the same one.
    """
    parts = [r.get("partition") for r in results]
    return len(parts) >= 2 and None not in parts and len({str(x) for x in parts}) == len(parts)


def example_df(results: Sequence[dict[str, Any]]) -> float | None:
    """Degrees of freedom of the example-level variance of attacks' excesses: the smallest
    attacked set (A, B, control A, control B) minus one, at most the bootstrap replicates
    minus one; None when a count is missing (then :func:`pair_level` keeps N − 1).

    Args:
        results: ``results.json`` dicts, one per model pair.

    Returns:
        The degrees of freedom, or None.
    """
    ns = []
    try:
        for r in results:
            ns += [int(r["counts"][y]["attacked"]) for y in SETS]
            ns += [int(r["control"]["counts"][y]["attacked"]) for y in SETS]
            ns.append(int(r["control"]["excess"]["n_boot"]))
    except (KeyError, TypeError, ValueError):
        return None
    return float(min(ns) - 1) if ns and min(ns) > 1 else None


def primary_endpoint(results: dict[str, Any]) -> dict[str, Any]:
    """``results.json``'s ``primary_endpoint`` block: :data:`PRIMARY` with this snapshot's
    value (the control excess when the attack has a control, else the score).

    Args:
        results: an attack's (or audit's) results dict, ``metrics`` and optional ``control``.

    Returns:
        :data:`PRIMARY` plus ``value``, ``ci95`` and ``unit`` (its interval's coverage).
    """
    top, p = PRIMARY["top"], PRIMARY["p"]
    out = dict(PRIMARY)
    ctrl = (results.get("control") or {}).get("excess", {}).get(top, {}).get(p)
    if ctrl is not None:
        out.update(quantity="excess", value=ctrl["excess"], ci95=ctrl["ci95"], unit=NOT_COVERED)
    else:
        m = results["metrics"][top]
        out.update(quantity="dejavu_score", value=score_at(m, p), ci95=score_at(m["ci95"], p), unit=NOT_COVERED)
    return out


# ---------------------------------------------------------------- text


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def verdict_text(ex: dict[str, Any], pl: dict[str, Any] | None = None, one_model: bool = False) -> str:
    """The headline sentence: is the excess distinguishable from zero, and what does the
    interval cover.

    Args:
        ex: one (top, fraction) entry of :func:`excess`.
        pl: the :func:`pair_level` result, or None for one model pair.
        one_model: an audit's excess (one model and its classifier: the interval covers what
            an audit of one checkpoint asks, so no training-randomness caveat).

    Returns:
        One sentence (pair level when ``pl`` has N >= 2 pairs, else example level).
    """
    if pl is not None and pl.get("n_pairs", 0) >= 2:
        lo, hi = pl["ci95"]
        word = "distinguishable from zero" if pl["distinguishable"] else "NOT distinguishable from zero"
        return (
            f"excess over the control {_pts(pl['mean'])} points (mean of {pl['n_pairs']} model pairs), "
            f"95% interval over pairs [{_pts(lo)}, {_pts(hi)}]: {word}"
        )
    lo, hi = ex["ci95"]
    if one_model:
        if not np.isfinite([lo, hi]).all():
            return f"excess over the control {_pts(ex['excess'])} points (no interval: n_boot 0)"
        word = "distinguishable from zero" if ex["excludes_zero"] else "NOT distinguishable from zero"
        return (
            f"excess over the control {_pts(ex['excess'])} points, 95% CI [{_pts(lo)}, {_pts(hi)}]: "
            f"{word} (interval over the audited and control images, for this model and classifier)"
        )
    word = "excludes 0" if ex["excludes_zero"] else "includes 0"
    return (
        f"excess over the control {_pts(ex['excess'])} points, 95% CI over examples [{_pts(lo)}, {_pts(hi)}] "
        f"({word}); one model pair: training randomness is not covered, so this alone does not show that "
        f"the excess is distinguishable from zero (train >= 3 seed pairs)"
    )


def _one_model(results: dict[str, Any]) -> bool:
    return results.get("kind") == "one-model"


def verdict_line(results: dict[str, Any], top: str = "top1", p: str = "20") -> str:
    """The :func:`verdict_text` of a ``results.json``'s control excess (example level).

    Args:
        results: a ``results.json`` dict (attack or audit) that has a ``control`` block.
        top: ``"top1"`` or ``"top5"``.
        p: the fraction key, e.g. ``"20"``.

    Returns:
        One sentence.
    """
    return verdict_text(results["control"]["excess"][top][p], one_model=_one_model(results))


def control_summary_lines(results: dict[str, Any]) -> list[str]:
    """CLI summary lines of an attack's or an audit's control: counts, score / control /
    excess per top-k and fraction, and the verdict.

    Args:
        results: a ``results.json`` dict.

    Returns:
        The lines; without a control, one line saying why (``control_skipped``) or how to get one.
    """
    if "control" not in results:
        why = results.get("control_skipped") or (
            "none (dejavu partition --control N, or dejavu attack --control VAL_DIR); "
            "the score's CI covers the choice of examples only"
        )
        return [f"held-out control: {why}"]
    c = results["control"]
    src = c["source"]
    drop = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in (src.get("excluded") or {}).items() if v)
    lines = [
        f"held-out control ({src.get('kind', '?')}): "
        + ", ".join(f"{y} {n['attacked']}/{n['bbox']} attacked" for y, n in c["counts"].items())
        + (f" (excluded: {drop})" if drop else ""),
    ]
    lines += excess_table_lines(c["excess"], "95% CI (examples)")
    lines.append("primary endpoint -- verdict (top-1, 20%): " + verdict_line(results))
    lines.append("(primary endpoint: top-1, 20% most confident, at the final epoch; every other row is secondary)")
    return lines


def control_summary_text(results: dict[str, Any]) -> str:
    """:func:`control_summary_lines` joined by newlines."""
    return "\n".join(control_summary_lines(results))


def excess_table_lines(excess_block: dict[str, Any], ci_title: str) -> list[str]:
    """Score, control and excess with its interval per top-k and fraction, in points (CLI).

    Args:
        excess_block: ``{top: {p: {"score", "control", "excess", "ci95"}}}`` (fraction keys).
        ci_title: the interval column's title.

    Returns:
        The header (``... (pts)``) and one line per top-k and fraction the block holds.
    """
    lines = [f"{'':6} {'p':>5} {'score':>8} {'control':>8} {'excess':>8}  {ci_title}, all in points"]
    for top in TOPS:
        for p in (fraction_key(f) for f in FRACTIONS):
            if p not in excess_block[top]:
                continue
            x = excess_block[top][p]
            lo, hi = x["ci95"]
            lines.append(
                f"{top:6} {p + '%':>5} {pts(x['score'], unit=False):>8} {pts(x['control'], unit=False):>8} "
                f"{pts(x['excess'], unit=False):>8}  [{pts(lo, unit=False)}, {pts(hi, unit=False)}]"
            )
    return lines


# ---------------------------------------------------------------- files


def control_scores_from_folder(
    folder: str | Path, k_attk: int | None, num_classes: int, logits: bool = False
) -> dict[str, Scores] | None:
    """The control's four ``X_attk_Y`` scores re-read from an attack folder's ``control_*``
    files (:mod:`dejavu.attack.control`); None when the folder has no control.

    Args:
        folder: the attack folder.
        k_attk: neighbours voting (None: all stored).
        num_classes: C.
        logits: read ``*_logits.npy`` (supervised ``embed: logits``) instead of neighbours.

    Returns:
        ``{name: Scores}`` for the four :data:`~dejavu.analysis.metrics.ARRAYS`, or None.
    """
    folder = Path(folder)
    if not (folder / f"control_{ARRAYS[0]}_attk_idxs.npy").is_file():
        return None
    keys = ("attk_idxs", "labels") + (("logits",) if logits else ("neighb_labels",))
    out = {}
    for n in ARRAYS:
        a = {k: load_npy(folder / f"control_{n}_{k}.npy") for k in keys}
        a["labels"] = a["labels"].reshape(len(a["labels"]), -1)[:, 0]  # (n, 1) as the original's
        out[n] = scores_from_arrays(a, k_attk, num_classes)
    return out


def rescore_control(
    folder: str | Path,
    scores: Comparisons,
    results: dict[str, Any],
    k_attk: int | None,
    num_classes: int,
    n_boot: int,
    seed: int,
) -> dict[str, Any] | None:
    """``results.json``'s ``control`` block recomputed from the stored arrays (``dejavu analyze``).

    Args:
        folder: the attack folder.
        scores: the re-scored private sets (comparisons, or the four ``X_attk_Y`` scores).
        results: the folder's ``results.json``.
        k_attk: neighbours voting (None: all stored).
        num_classes: C.
        n_boot: bootstrap replicates.
        seed: seed; the control's own metrics use ``seed + 1``.

    Returns:
        The old block with ``metrics`` and ``excess`` replaced (:func:`control_block`);
        None when ``results`` or the folder has no control.
    """
    if "control" not in results:
        return None
    cp = control_scores_from_folder(folder, k_attk, num_classes, results.get("config", {}).get("embed") == "logits")
    if cp is None:
        return None
    new = control_block(scores, cp, {}, {}, num_classes, n_boot, seed)
    return {**results["control"], "metrics": new["metrics"], "excess": new["excess"]}


def shared_variance_from_folders(
    folders: Sequence, n_boot: int = 400, seed: int = 0
) -> dict[tuple[str, str], float] | None:
    """:func:`shared_example_variance` of attack folders (one per model pair) from their
    stored arrays; None when a folder lacks its arrays or control, or the pairs attacked
    different examples (callers then fall back to the conservative bound).

    Args:
        folders: attack folders, one per model pair.
        n_boot: joint bootstrap replicates.
        seed: seed of the joint bootstrap.

    Returns:
        ``{(top, p): variance}``, or None (also with fewer than two folders).
    """
    items: list[tuple[Comparisons, Comparisons]] = []
    try:
        for f in folders:
            scores, res = scores_from_folder(Path(f))
            nc = int(res.get("num_classes") or res.get("fingerprint", {}).get("num_classes"))
            cp = control_scores_from_folder(
                f, res.get("config", {}).get("k_attk"), nc, res.get("config", {}).get("embed") == "logits"
            )
            if cp is None:
                return None
            items.append((scores, cp))
        return shared_example_variance(items, n_boot=n_boot, seed=seed) if len(items) >= 2 else None
    except (DejavuError, OSError, ValueError, KeyError, TypeError):
        return None
