"""Calibrated significance: the déjà vu score against a held-out control.

Why: the bootstrap of :mod:`dejavu.analysis.bootstrap` resamples the attacked examples of
one fixed pair of models. Two training runs on disjoint data differ in ways no example
resampling sees (which images each happens to embed well), so on images *neither* model
saw — where no gap can exist — its intervals often exclude 0. Two statistics, both
reported, both named for what they cover:

**Example level (one pair)** — ``excess``: the excess ``E = S − C`` of the score ``S``
(target − reference on the private sets A, B) over the control's score ``C`` (the same
statistic on held-out halves CA, CB attacked by the same models). Its interval is a
percentile bootstrap over *both* example sets: A, B, CA and CB are each resampled with
replacement, independently; within a set the same resample serves the target and the
reference model (paired). It covers the choice of examples only, **not training
randomness**: with one pair of models no interval can.

**Pair level (N ≥ 2 pairs differing only in the training seed)** — ``pair_level``:
the per-pair excesses ``E_i`` are averaged; the interval is
``mean ± t(0.975, df) · sqrt(s²/N + v_shared)``, ``df`` by Welch–Satterthwaite from the
two estimated parts (``s²/N`` with N−1 degrees of freedom, ``v_shared`` with those of the
example-level estimate: the smallest attacked set minus one, at most the bootstrap
replicates minus one); N−1 when the latter are unknown (conservative). ``s`` is the standard deviation of the
``E_i`` over pairs: training randomness and each pair's own luck with the examples.
``v_shared`` is the part of the example-level variance that all pairs *share* — they attack
the same images, so the spread over pairs cannot show which images happened to be chosen
(measured: leaving it out gave 11-12% false positives on the control). It is estimated by a
joint bootstrap (:func:`shared_example_variance`: one resample of the examples for every
pair; the mean covariance between two different pairs' replicates). Model: ``E_i = μ + c
+ t_i + e_i`` with ``c`` the shared example effect, so ``Var(mean) = Var(c) + Var(t + e)/N``
and both terms are estimated without double counting. Without the arrays (results.json
only) ``v_shared`` is bounded by the mean per-pair bootstrap variance (conservative: it
keeps each pair's own example noise undivided by N). The excess is *distinguishable from
zero* when the interval excludes 0. bench/RESULTS.md gives the measured false-positive
rate on the control and the power on the synthetic default.

**Primary endpoint** (declared before any result, :data:`PRIMARY`): the top-1 statistic
at the 20% most confident examples, at the final epoch — the excess over the held-out
control when there is one, else the déjà vu score. Every other number (top-5, 5% / 100%,
other epochs, quadrants, per class) is secondary. Distributions come from scipy.

No torch and no models here (DESIGN: ``analysis`` reads arrays, not networks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dejavu import DejavuError
from dejavu.analysis.bootstrap import PairCells, cell_counts
from dejavu.analysis.metrics import PAIRS, PairScores, population
from dejavu.analysis.summary import compute_all
from dejavu.analysis.tables import pair_scores_from_arrays, scores_from_folder
from dejavu.io import load_npy
from dejavu.units import pts

TOPS = ("top1", "top5")
FRACTIONS = {"20": 0.20, "100": 1.00}
LEVEL = 0.95
_CELLS = 2**22  # replicates x examples per block (bounded memory)
_SETS = {"A": ("A_attk_A", "B_attk_A"), "B": ("B_attk_B", "A_attk_B")}  # set -> (target, reference)
EXAMPLE_UNIT = (
    "attacked example; the private sets A, B and the control halves CA, CB resampled "
    "independently, target and reference paired within a set"
)
NOT_COVERED = "choice of examples only, not training randomness (one model pair)"
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


def _point(pairs: dict[str, PairScores]) -> dict[str, dict[str, float]]:
    out = {}
    for top in TOPS:
        pop = population(pairs, int(top[-1]), fractions=tuple(FRACTIONS.values()))
        t, r = pop["target"], pop["reference"]
        out[top] = {p: float(t[p] - r[p]) for p in FRACTIONS}
    return out


def _draws(pairs: dict[str, PairScores], rng: np.random.Generator, r: int) -> dict[str, np.ndarray]:
    """One resample per set of ``pairs``: (r, n) example positions drawn with replacement."""
    out = {}
    for y, names in _SETS.items():
        n = len(pairs[names[0]].index)
        out[y] = rng.integers(0, max(n, 1), size=(r, n))
    return out


def _cells(pairs: dict[str, PairScores]) -> dict[str, Any]:
    """Each model's examples collapsed into bootstrap cells (:class:`bootstrap.PairCells`)."""

    return {
        name: PairCells(pairs[name]) if len(pairs[name].index) else None for names in _SETS.values() for name in names
    }


def _replicates(
    pairs: dict[str, PairScores],
    rng: np.random.Generator | None,
    r: int,
    draws: dict[str, np.ndarray] | None = None,
    cells: dict[str, Any] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """``r`` bootstrap replicates of the score (target − reference) per (top, fraction),
    with the tie rule of :mod:`dejavu.analysis.bootstrap`; ``draws`` (per set, (r, n)
    positions) reuse a resample, e.g. across model pairs attacking the same examples."""

    if draws is None:
        draws = _draws(pairs, rng if rng is not None else np.random.default_rng(), r)
    cells = cells if cells is not None else _cells(pairs)
    acc: dict[tuple[str, str, str], np.ndarray] = {}
    for y, names in _SETS.items():
        for name in names:
            pc = cells[name]
            got = pc.top_accs(cell_counts(draws[y], pc.cell, pc.n_cells), tuple(FRACTIONS.values())) if pc else {}
            for top in TOPS:
                for p, f in FRACTIONS.items():
                    acc[(name, top, p)] = got.get((int(top[-1]), f), np.full(r, np.nan))
    return {
        (top, p): 0.5 * (acc[("A_attk_A", top, p)] + acc[("B_attk_B", top, p)])
        - 0.5 * (acc[("B_attk_A", top, p)] + acc[("A_attk_B", top, p)])
        for top in TOPS
        for p in FRACTIONS
    }


def shared_example_variance(
    items: Sequence[tuple[dict[str, PairScores], dict[str, PairScores]]], n_boot: int = 400, seed: int = 0
) -> dict[tuple[str, str], float]:
    """The part of the example-level variance that N model pairs *share*, per (top, fraction).

    ``items``: (pairs, control) per model pair, attacking the same examples (same
    ``index`` per set). One resample of the examples serves every pair (a joint bootstrap);
    the mean covariance between two different pairs' excess replicates estimates the variance
    of the common example effect, which the spread over pairs cannot show. Raises
    ValueError when the pairs attacked different examples.

    Args:
        items: (pairs, control) per model pair, each the four ``X_attk_Y`` scores.
        n_boot: joint bootstrap replicates.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``{(top, p): variance}`` for ``top`` in :data:`TOPS`, ``p`` in :data:`FRACTIONS`
        (NaN with fewer than two pairs).
    """
    first = items[0]
    for pairs, control in items[1:]:
        for a, b in ((pairs, first[0]), (control, first[1])):
            if any(not np.array_equal(a[n].index, b[n].index) for n in ("A_attk_A", "B_attk_B")):
                raise ValueError("the model pairs attacked different examples: no joint bootstrap")
    rng = np.random.default_rng(seed)
    n_max = max(len(v.index) for v in (*first[0].values(), *first[1].values()))
    block = max(1, _CELLS // max(1, n_max * len(items)))
    reps: dict[tuple[str, str], list[np.ndarray]] = {}
    cells = [(_cells(p), _cells(c)) for p, c in items]
    for start in range(0, n_boot, block):
        r = min(block, n_boot - start)
        dp, dc = _draws(first[0], rng, r), _draws(first[1], rng, r)
        per = [
            (_replicates(p, None, r, dp, cp), _replicates(c, None, r, dc, cc)) for (p, c), (cp, cc) in zip(items, cells)
        ]
        for k in per[0][0]:
            reps.setdefault(k, []).append(np.stack([rs[k] - rc[k] for rs, rc in per]))
    out = {}
    n = len(items)
    for k, v in reps.items():
        x = np.concatenate(v, axis=1)
        x = x[:, ~np.isnan(x).any(axis=0)]
        cov = np.cov(x) if x.shape[1] > 1 else np.full((n, n), np.nan)
        out[k] = float((cov.sum() - np.trace(cov)) / (n * (n - 1))) if n > 1 else float("nan")
    return out


def excess(
    pairs: dict[str, PairScores],
    control: dict[str, PairScores],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Score, control score and their excess with a paired bootstrap interval over both
    example sets (module docstring). ``pairs``/``control``: the four ``X_attk_Y`` scores.

    Args:
        pairs: the four scores on the private sets A, B.
        control: the four scores on the held-out halves CA, CB (same models).
        n_boot: bootstrap replicates (0: NaN intervals).
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the intervals.

    Returns:
        ``{"statistic", "unit", "covers", "n_boot", "seed", "level"}`` and per ``top`` in
        :data:`TOPS` and ``p`` in :data:`FRACTIONS` (``"20"``, ``"100"``): ``{"score",
        "control", "excess", "ci95": [lo, hi], "se", "excludes_zero"}``.
    """
    s, c = _point(pairs), _point(control)
    rng = np.random.default_rng(seed)
    n_max = max(len(v.index) for v in (*pairs.values(), *control.values()))
    reps: dict[tuple[str, str], list[np.ndarray]] = {}
    block = max(1, _CELLS // max(1, n_max))
    cp, cc = _cells(pairs), _cells(control)
    for start in range(0, max(0, n_boot), block):
        r = min(block, n_boot - start)
        rs, rc = _replicates(pairs, rng, r, cells=cp), _replicates(control, rng, r, cells=cc)
        for k in rs:
            reps.setdefault(k, []).append(rs[k] - rc[k])
    a = (1 - level) / 2
    out: dict[str, Any] = {
        "statistic": "excess = score - control (target - reference accuracy, top p% most confident)",
        "unit": EXAMPLE_UNIT,
        "covers": NOT_COVERED,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": level,
    }
    for top in TOPS:
        out[top] = {}
        for p in FRACTIONS:
            e = s[top][p] - c[top][p]
            x = np.concatenate(reps[(top, p)]) if reps else np.zeros(0)
            x = x[~np.isnan(x)]
            ci = [float(v) for v in np.quantile(x, [a, 1 - a])] if len(x) else [float("nan")] * 2
            out[top][p] = {
                "score": s[top][p],
                "control": c[top][p],
                "excess": e,
                "ci95": ci,
                "se": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                "excludes_zero": bool(len(x) and (ci[0] > 0 or ci[1] < 0)),
            }
    return out


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
        p: ``"20"`` or ``"100"`` (percent most confident).
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
        key = "dejavu_score" if p == "20" else "dejavu_score_100"
        block = pair_level([r["metrics"][top][key] for r in results], replicates=reps)
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
            ns += [int(r["counts"][y]["attacked"]) for y in "AB"]
            ns += [int(r["control"]["counts"][y]["attacked"]) for y in "AB"]
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
        out.update(quantity="dejavu_score", value=m["dejavu_score"], ci95=m["ci95"]["dejavu_score"], unit=NOT_COVERED)
    return out


# ---------------------------------------------------------------- text


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def verdict_text(ex: dict[str, Any], pl: dict[str, Any] | None = None) -> str:
    """The headline sentence: is the excess distinguishable from zero, and what does the
    interval cover. ``ex``: one fraction's entry of :func:`excess`; ``pl``: :func:`pair_level`.

    Args:
        ex: one (top, fraction) entry of :func:`excess`.
        pl: the :func:`pair_level` result, or None for one model pair.

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
    word = "excludes 0" if ex["excludes_zero"] else "includes 0"
    return (
        f"excess over the control {_pts(ex['excess'])} points, 95% CI over examples [{_pts(lo)}, {_pts(hi)}] "
        f"({word}); one model pair: training randomness is not covered, so this alone does not show that "
        f"the excess is distinguishable from zero (train >= 3 seed pairs)"
    )


def verdict_line(results: dict[str, Any], top: str = "top1", p: str = "20") -> str:
    """The :func:`verdict_text` of a ``results.json``'s control excess (example level).

    Args:
        results: a ``results.json`` dict that has a ``control`` block.
        top: ``"top1"`` or ``"top5"``.
        p: ``"20"`` or ``"100"``.

    Returns:
        One sentence.
    """
    return verdict_text(results["control"]["excess"][top][p])


def control_summary_text(results: dict[str, Any]) -> str:
    """Lines for the CLI summary: score, control, excess and the verdict."""
    if "control" not in results:
        return (
            "held-out control: none (dejavu partition --control N, or dejavu attack --control VAL_DIR); "
            "the score's CI covers the choice of examples only"
        )
    c = results["control"]
    lines = [
        f"held-out control ({c['source'].get('kind', '?')}): "
        + ", ".join(f"{y} {c['counts'][y]['attacked']}/{c['counts'][y]['bbox']} attacked" for y in "AB"),
    ]
    lines += excess_table_lines(c["excess"], "95% CI (examples)")
    lines.append("primary endpoint -- verdict (top-1, 20%): " + verdict_line(results))
    lines.append("(primary endpoint: top-1, 20% most confident, at the final epoch; every other row is secondary)")
    return "\n".join(lines)


def excess_table_lines(excess_block: dict[str, Any], ci_title: str) -> list[str]:
    """Score, control and excess with its interval per top-k and fraction, in points (CLI).

    Args:
        excess_block: ``{top: {p: {"score", "control", "excess", "ci95"}}}`` (fractions).
        ci_title: the interval column's title.

    Returns:
        The header (``... (pts)``) and one line per top-k and fraction.
    """

    lines = [f"{'':6} {'p':>5} {'score':>8} {'control':>8} {'excess':>8}  {ci_title}, all in points"]
    for top in TOPS:
        for p in FRACTIONS:
            x = excess_block[top][p]
            lo, hi = x["ci95"]
            lines.append(
                f"{top:6} {p + '%':>5} {pts(x['score'], unit=False):>8} {pts(x['control'], unit=False):>8} "
                f"{pts(x['excess'], unit=False):>8}  [{pts(lo, unit=False)}, {pts(hi, unit=False)}]"
            )
    return lines


# ---------------------------------------------------------------- files


def control_pairs_from_folder(
    folder, k_attk: int | None, num_classes: int, logits: bool = False
) -> dict[str, PairScores] | None:
    """The control's four ``X_attk_Y`` scores re-read from an attack folder's ``control_*``
    files (:mod:`dejavu.attack.control`); None when the folder has no control.

    Args:
        folder: the attack folder.
        k_attk: neighbours voting (None: all stored).
        num_classes: C.
        logits: read ``*_logits.npy`` (supervised ``embed: logits``) instead of neighbours.

    Returns:
        ``{name: PairScores}`` for the four :data:`~dejavu.analysis.metrics.PAIRS`, or None.
    """
    from pathlib import Path

    folder = Path(folder)
    if not (folder / "control_A_attk_A_attk_idxs.npy").is_file():
        return None
    keys = ("attk_idxs", "labels") + (("logits",) if logits else ("neighb_labels",))
    out = {}
    for n in PAIRS:
        a = {k: load_npy(folder / f"control_{n}_{k}.npy") for k in keys}
        a["labels"] = a["labels"].reshape(len(a["labels"]), -1)[:, 0]  # (n, 1) as the original's
        out[n] = pair_scores_from_arrays(a, k_attk, num_classes)
    return out


def rescore_control(
    folder,
    pairs: dict[str, PairScores],
    results: dict[str, Any],
    k_attk: int | None,
    num_classes: int,
    n_boot: int,
    seed: int,
) -> dict[str, Any] | None:
    """``results.json``'s ``control`` block recomputed from the stored arrays (``dejavu analyze``).

    Args:
        folder: the attack folder.
        pairs: the re-scored private-set pairs.
        results: the folder's ``results.json``.
        k_attk: neighbours voting (None: all stored).
        num_classes: C.
        n_boot: bootstrap replicates.
        seed: seed; the control's own metrics use ``seed + 1``.

    Returns:
        The old block with ``metrics`` (no per-class, no rankings) and ``excess`` replaced;
        None when ``results`` or the folder has no control.
    """

    if "control" not in results:
        return None
    cp = control_pairs_from_folder(folder, k_attk, num_classes, results.get("config", {}).get("embed") == "logits")
    if cp is None:
        return None
    m = compute_all(cp, num_classes, n_boot=n_boot, seed=seed + 1)
    return {
        **results["control"],
        "metrics": {k: v for k, v in m.items() if k not in ("per_class", "rankings")},
        "excess": excess(pairs, cp, n_boot=n_boot, seed=seed),
    }


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
    from pathlib import Path

    items = []
    try:
        for f in folders:
            pairs, res = scores_from_folder(Path(f))
            nc = int(res.get("num_classes") or res.get("fingerprint", {}).get("num_classes"))
            cp = control_pairs_from_folder(
                f, res.get("config", {}).get("k_attk"), nc, res.get("config", {}).get("embed") == "logits"
            )
            if cp is None:
                return None
            items.append((pairs, cp))
        return shared_example_variance(items, n_boot=n_boot, seed=seed) if len(items) >= 2 else None
    except (DejavuError, OSError, ValueError, KeyError, TypeError):
        return None
