"""The paper's figures, built from stored results (:mod:`dejavu.report.collect`).

Every figure is written as PNG and PDF (matplotlib Agg, no LaTeX) together with
``<name>.json``: the exact numbers drawn, so tests and users can check data, not
pixels. ``figures.json`` indexes them all.

Series rule (decision): a figure "vs AXIS" (epoch, npc or a hyper-parameter) draws one
line per combination of the *other* identifying fields: method, attack variant
(crop/embedding) or probe features, the other axes, and every model-config
hyper-parameter that varies across the results. Series with fewer than two points are
left out (an epoch sweep at one npc makes no "vs npc" figure), and a figure is written
only if some series remains. So one folder holding an epoch sweep, a dataset-size sweep
at the final epoch and a parameter sweep gives each its own figure, with no two sweep
points on one x.
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, formats
from dejavu.analysis.bootstrap import accuracy_bands as bands
from dejavu.analysis.significance import (
    example_df,
    pair_level,
    per_pair_partitions,
    shared_variance_from_folders,
    verdict_text,
)
from dejavu.analysis.tables import ATTACK_FORMATS, scores_from_folder
from dejavu.io import atomic_write_bytes, atomic_write_json, check_can_write, locks_output
from dejavu.report.collect import P_KEYS, AttackRecord, ProbeRecord, Results, lookup, seed_groups, varying_hyperparams
from dejavu.report.style import MAX_PANELS, style
from dejavu.utils import progress

QUADRANTS_STACK = ("correlated", "forgotten", "memorized")  # bottom to top, as in the paper
QUADRANT_COLOURS = {"correlated": "#4C72B0", "forgotten": "#DD8452", "memorized": "#C44E52", "unassociated": "#BBBBBB"}
AXIS_LABELS = {"epoch": "training epochs", "npc": "dataset size (images per class)"}


@dataclass
class FigureInfo:
    """One figure's entry in ``figures.json``."""

    name: str
    kind: str  # accuracy | quadrants | probe | sweep | variants
    axis: str | None
    title: str
    caption: str
    files: list[str]  # image files, relative to the output folder
    data: str  # the JSON with the numbers behind the figure


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(s)).strip("-") or "x"


def _axis_value(r: AttackRecord | ProbeRecord, axis: str) -> Any:
    if axis == "epoch":
        return r.epoch
    if axis == "npc":
        return r.npc
    return r.param(axis)


def _kind_field(r: AttackRecord | ProbeRecord) -> str:
    return r.variant if isinstance(r, AttackRecord) else f"{r.features} features"


def build_series(
    records: Sequence[AttackRecord | ProbeRecord], axis: str, params: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Group records into series along ``axis`` (see the module docstring).

    Args:
        records: attack or probe records.
        axis: ``epoch``, ``npc`` or a (dotted) model-config key.
        params: hyper-parameters that split series even where they do not vary.

    Returns:
        ``[{"label", "key": {...}, "x": [...], "records": [...]}]`` sorted by key, points sorted
        by x; series of fewer than two points are left out. A duplicate point (same key and x)
        keeps the last file in path order.
    """
    hps = sorted(set(varying_hyperparams(list(records))) | set(params))  # type: ignore[arg-type]
    groups: dict[tuple, dict[Any, Any]] = {}
    keys: dict[tuple, dict[str, Any]] = {}
    for r in records:
        x = _axis_value(r, axis)
        if x is None or isinstance(x, (dict, list)):
            continue
        key: dict[str, Any] = {"method": r.method, "variant": _kind_field(r)}
        if axis != "epoch":
            key["epoch"] = r.epoch
        if axis != "npc":
            key["npc"] = r.npc
        for h in hps:
            if h != axis:
                key[h] = r.param(h)
        kt = tuple((k, repr(v)) for k, v in key.items())
        groups.setdefault(kt, {})[x] = r
        keys[kt] = key
    out = []
    kept = [kt for kt in groups if len(groups[kt]) >= 2]
    # label only by the fields that differ between the kept series (short legends)
    differ = [f for f in (keys[kept[0]] if kept else {}) if len({repr(keys[kt].get(f)) for kt in kept}) > 1]
    for kt in sorted(kept, key=lambda t: str(t)):
        pts = groups[kt]
        try:
            xs = sorted(pts)
        except TypeError:  # mixed types in a hyper-parameter: order as strings
            xs = sorted(pts, key=str)
        key = keys[kt]
        label = (
            ", ".join(f"{k}={key[k]}" if k not in ("method", "variant") else str(key[k]) for k in differ)
            or f"{key['method']}, {key['variant']}"
        )
        out.append({"label": label, "key": key, "x": xs, "records": [pts[x] for x in xs]})
    return out


class FigureWriter:
    """Writes figures, their data JSON and the index into ``out``.

    Args:
        out: the output folder.
        formats: image formats written per figure (``png``, ``pdf``, ``svg``).

    Raises:
        DejavuError: an unsupported format.
    """

    def __init__(self, out: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")):
        self.out = Path(out)
        self.formats = tuple(formats)
        for f in self.formats:
            if f not in ("png", "pdf", "svg"):
                raise DejavuError(f"--format: unsupported image format {f!r} (png, pdf, svg)")
        self.figures: list[FigureInfo] = []

    def save(
        self, fig, name: str, kind: str, axis: str | None, title: str, caption: str, data: dict[str, Any]
    ) -> FigureInfo:
        """Write one figure in every format, and ``<name>.json`` with the numbers drawn; closes it.

        Args:
            fig: the matplotlib figure.
            name: file stem.
            kind: the figure's kind (accuracy, quadrants, probe, sweep, variants, significance).
            axis: its x axis (None for sweeps and variants).
            title: the title.
            caption: a sentence for the report.
            data: the numbers drawn (merged into ``<name>.json``).

        Returns:
            The index entry (also kept in :attr:`figures`).
        """

        plt = style()
        files = []
        for fmt in self.formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            atomic_write_bytes(self.out / f"{name}.{fmt}", buf.getvalue())
            files.append(f"{name}.{fmt}")
        plt.close(fig)
        atomic_write_json(self.out / f"{name}.json", {"name": name, "kind": kind, "axis": axis, "title": title, **data})
        info = FigureInfo(name, kind, axis, title, caption, files, f"{name}.json")
        self.figures.append(info)
        return info

    def write_index(self, extra: dict[str, Any] | None = None) -> Path:
        """Write ``figures.json``: the format tag, ``extra`` and every figure saved.

        Returns:
            Its path.
        """

        return atomic_write_json(
            self.out / "figures.json",
            {"format": formats.FIGURES, **(extra or {}), "figures": [asdict(f) for f in self.figures]},
        )


def _xlabel(axis: str) -> str:
    return AXIS_LABELS.get(axis, axis)


def _setx(ax, xs: list, axis: str):
    if axis == "npc" or all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        return xs
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    return list(range(len(xs)))


BAND_BOOT = 200  # bootstrap replicates behind a figure's bands (the numbers' own CIs use the attack's n_boot)


def accuracy_bands(r: AttackRecord, ps: Sequence[float], top: str = "top1") -> dict[str, list[list[float]]] | None:
    """95% bootstrap bands of the target's and the reference's accuracy at the fractions ``ps``,
    from the attack folder's stored neighbours (:func:`dejavu.analysis.bootstrap.accuracy_bands`);
    None for an audit or a folder without its arrays (the figure then draws the lines alone).

    Args:
        r: an attack record.
        ps: fractions in (0, 1].
        top: ``top1`` or ``top5``.

    Returns:
        ``{"target": [lo, hi], "reference": [lo, hi]}`` (lists over ``ps``), or None.
    """
    return _bands_cached(str(r.dir), r.raw.get("format"), tuple(float(p) for p in ps), top)


@functools.lru_cache(maxsize=256)
def _bands_cached(folder: str, fmt: str | None, ps: tuple[float, ...], top: str) -> dict[str, list[list[float]]] | None:
    if fmt not in ATTACK_FORMATS:
        return None
    try:
        scores, _ = scores_from_folder(folder)
    except (DejavuError, OSError, KeyError, ValueError):
        return None
    return bands(scores, ps, 1 if top == "top1" else 5, n_boot=BAND_BOOT, seed=0)


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of an accuracy ``p`` measured on ``n`` images (95% by default)."""
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / d
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _pct_axis(ax, what: str) -> None:
    ax.set_ylabel(f"{what} (%)")


def fig_accuracy(
    w: FigureWriter, attacks: list[AttackRecord], axis: str, top: str = "top1", params: Sequence[str] = ()
) -> FigureInfo | None:
    """Target (solid) vs reference (dashed) accuracy on the top-p% most confident, one panel per p.

    Args:
        w: the writer.
        attacks: attack records.
        axis: x axis (``epoch``, ``npc`` or a hyper-parameter).
        top: ``top1`` or ``top5``.
        params: hyper-parameters that split series (:func:`build_series`).

    Returns:
        The figure's entry, or None when no series has two points.
    """
    series = build_series(attacks, axis, params)
    if not series:
        return None
    plt = style()
    fig, axes = plt.subplots(1, len(P_KEYS), figsize=(4.0 * len(P_KEYS), 3.3), sharey=False)
    data = []
    for i, s in enumerate(series):
        colour = f"C{i % 10}"
        d = {
            "label": s["label"],
            "key": s["key"],
            "x": s["x"],
            "target": {p: [r.acc("target", p, top) for r in s["records"]] for p in P_KEYS},
            "reference": {p: [r.acc("reference", p, top) for r in s["records"]] for p in P_KEYS},
            "files": [str(r.path) for r in s["records"]],
        }
        bands = [accuracy_bands(r, [int(p) / 100 for p in P_KEYS], top) for r in s["records"]]
        if all(b is not None for b in bands):  # 95% bootstrap bands over examples, per point
            d["band95"] = {
                role: {p: [[b[role][0][j], b[role][1][j]] for b in bands] for j, p in enumerate(P_KEYS)}  # type: ignore[index]
                for role in ("target", "reference")
            }
        data.append(d)
        for ax, p in zip(axes, P_KEYS):
            xs = _setx(ax, s["x"], axis)
            ax.plot(xs, [100 * v for v in d["target"][p]], "-o", color=colour, ms=3, label=f"{s['label']} target")
            ax.plot(
                xs,
                [100 * v for v in d["reference"][p]],
                "--o",
                color=colour,
                ms=3,
                mfc="white",
                label=f"{s['label']} reference",
            )
            for role, alpha in (("target", 0.18), ("reference", 0.08)):
                if "band95" in d:
                    lo, hi = zip(*d["band95"][role][p])
                    ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=colour, alpha=alpha, lw=0)
    for ax, p in zip(axes, P_KEYS):
        ax.set_title(f"{p}% most confident")
        ax.set_xlabel(_xlabel(axis))
        _pct_axis(ax, f"{top} accuracy")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    name = f"accuracy_vs_{_slug(axis)}_{top}"
    title = f"Deja vu: target vs reference {top} accuracy vs {_xlabel(axis)}"
    fig.suptitle(title)
    return w.save(
        fig,
        name,
        "accuracy",
        axis,
        title,
        "Solid: target model (trained on the attacked images); dashed: reference model; bands: 95% "
        "bootstrap intervals over the attacked examples (not over training runs). The gap is deja vu "
        "memorization.",
        {"top": top, "series": data},
    )


def fig_quadrants(
    w: FigureWriter, attacks: list[AttackRecord], axis: str, params: Sequence[str] = ()
) -> list[FigureInfo]:
    """Stacked shares correlated / forgotten / memorized, one panel per series.

    Args:
        w: the writer.
        attacks: attack records (those without quadrants are left out).
        axis: x axis (``epoch``, ``npc`` or a hyper-parameter).
        params: hyper-parameters that split series.

    Returns:
        One entry per figure of up to ``MAX_PANELS`` panels (none without a series).
    """
    series = [s for s in build_series(attacks, axis, params) if all(r.quadrants for r in s["records"])]
    infos = []
    for chunk in range(0, len(series), MAX_PANELS):
        part = series[chunk : chunk + MAX_PANELS]
        plt = style()
        fig, axes = plt.subplots(1, len(part), figsize=(3.6 * len(part), 3.3), squeeze=False)
        data = []
        for ax, s in zip(axes[0], part):
            d = {
                "label": s["label"],
                "key": s["key"],
                "x": s["x"],
                **{q: [r.quadrants.get(q, 0.0) for r in s["records"]] for q in (*QUADRANTS_STACK, "unassociated")},
                "files": [str(r.path) for r in s["records"]],
            }
            data.append(d)
            pos = list(range(len(s["x"])))
            bottom = [0.0] * len(pos)
            cis = [r.metrics.get("quadrants_ci95") or {} for r in s["records"]]
            for q in QUADRANTS_STACK:
                vals = [100 * v for v in d[q]]
                ax.bar(pos, vals, bottom=bottom, color=QUADRANT_COLOURS[q], label=q, width=0.7)
                bottom = [b + v for b, v in zip(bottom, vals)]
                if all(q in c and np.isfinite(c[q]).all() for c in cis):  # 95% bootstrap CI, at the segment's top
                    d.setdefault("ci95", {})[q] = [c[q] for c in cis]
                    lo = [v - 100 * c[q][0] for v, c in zip(vals, cis)]
                    hi = [100 * c[q][1] - v for v, c in zip(vals, cis)]
                    ax.errorbar(pos, bottom, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            ax.set_xticks(pos, [str(x) for x in s["x"]], rotation=45 if len(pos) > 8 else 0)
            ax.set_title(s["label"])
            ax.set_xlabel(_xlabel(axis))
            _pct_axis(ax, "share of attacked examples")
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        name = f"quadrants_vs_{_slug(axis)}" + (f"_{chunk // MAX_PANELS + 1}" if len(series) > MAX_PANELS else "")
        title = f"Sample test: example shares vs {_xlabel(axis)}"
        fig.suptitle(title)
        infos.append(
            w.save(
                fig,
                name,
                "quadrants",
                axis,
                title,
                "Memorized: target right, reference wrong; correlated: both right; "
                "forgotten: target wrong, reference right (averaged over the A/B swap); error bars: 95% "
                "bootstrap intervals of each share.",
                {"series": data},
            )
        )
    return infos


def fig_probe(w: FigureWriter, probes: list[ProbeRecord], axis: str, params: Sequence[str] = ()) -> FigureInfo | None:
    """Linear probe top-1 and top-5 accuracy vs ``axis``, one line per series.

    Args:
        w: the writer.
        probes: probe records.
        axis: x axis (``epoch``, ``npc`` or a hyper-parameter).
        params: hyper-parameters that split series.

    Returns:
        The figure's entry, or None when no series has two points.
    """
    series = build_series(probes, axis, params)
    if not series:
        return None
    plt = style()
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.3))
    data = []
    for i, s in enumerate(series):
        d = {
            "label": s["label"],
            "key": s["key"],
            "x": s["x"],
            "top1": [r.top1 for r in s["records"]],
            "top5": [r.top5 for r in s["records"]],
            "files": [str(r.path) for r in s["records"]],
        }
        n_val = [lookup(r.raw, "counts.val") for r in s["records"]]
        if all(isinstance(n, int) and n > 0 for n in n_val):  # 95% Wilson intervals over the validation images
            d["band95"] = {t: [wilson(a, n) for a, n in zip(d[t], n_val)] for t in ("top1", "top5")}
        data.append(d)
        for ax, top in zip(axes, ("top1", "top5")):
            xs = _setx(ax, s["x"], axis)
            ax.plot(xs, [100 * v for v in d[top]], "-o", ms=3, color=f"C{i % 10}", label=s["label"])
            if "band95" in d:
                lo, hi = zip(*d["band95"][top])
                ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=f"C{i % 10}", alpha=0.15, lw=0)
    for ax, top in zip(axes, ("top-1", "top-5")):
        ax.set_xlabel(_xlabel(axis))
        _pct_axis(ax, f"linear probe {top} accuracy")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    name = f"probe_vs_{_slug(axis)}"
    title = f"Linear probe accuracy vs {_xlabel(axis)}"
    fig.suptitle(title)
    return w.save(
        fig,
        name,
        "probe",
        axis,
        title,
        "Validation accuracy of a linear classifier on frozen features: it does not reveal memorization. "
        "Bands: 95% Wilson intervals over the validation images (not over training runs).",
        {"series": data},
    )


def fig_sweep(w: FigureWriter, attacks: list[AttackRecord], top: str = "top1") -> list[FigureInfo]:
    """Confidence sweep: accuracy on the p most confident examples vs p, for the latest
    epoch of every (method, variant, npc, hyper-parameters) combination.

    Args:
        w: the writer.
        attacks: attack records (those without a sweep are left out).
        top: ``top1`` or ``top5``.

    Returns:
        One entry per figure of up to 8 records (solid target, dashed reference).
    """
    hps = varying_hyperparams(attacks)
    latest: dict[tuple, AttackRecord] = {}
    for r in attacks:
        if not r.sweep(top):
            continue
        k = (r.method, r.variant, r.npc, *(repr(r.param(h)) for h in hps))
        if k not in latest or r.epoch >= latest[k].epoch:
            latest[k] = r
    recs = [latest[k] for k in sorted(latest, key=str)]
    infos = []
    for chunk in range(0, len(recs), 8):
        part = recs[chunk : chunk + 8]
        plt = style()
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        data = []
        for i, r in enumerate(part):
            sw = r.sweep(top)
            if sw is None:
                continue
            label = f"{r.method}, {r.variant}, {r.npc}pc, ep {r.epoch}" + "".join(f", {h}={r.param(h)}" for h in hps)
            band = accuracy_bands(r, sw["p"], top)
            data.append(
                {
                    "label": label,
                    "method": r.method,
                    "variant": r.variant,
                    "npc": r.npc,
                    "epoch": r.epoch,
                    "p": sw["p"],
                    "target": sw["target"],
                    "reference": sw["reference"],
                    "file": str(r.path),
                    **({"band95": band} if band is not None else {}),
                }
            )
            xs = [100 * p for p in sw["p"]]
            c = f"C{i % 10}"
            ax.plot(xs, [100 * v for v in sw["target"]], "-", color=c, label=f"{label} target")
            ax.plot(xs, [100 * v for v in sw["reference"]], "--", color=c, label=f"{label} reference")
            for role, alpha in (("target", 0.18), ("reference", 0.08)):
                if band is None:
                    break
                lo, hi = band[role]
                ax.fill_between(xs, [100 * v for v in lo], [100 * v for v in hi], color=c, alpha=alpha, lw=0)
        ax.set_xlabel("% most confident examples")
        _pct_axis(ax, f"{top} accuracy")
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        name = f"sweep_{top}" + (f"_{chunk // 8 + 1}" if len(recs) > 8 else "")
        title = f"Confidence sweep ({top})"
        ax.set_title(title)
        infos.append(
            w.save(
                fig,
                name,
                "sweep",
                None,
                title,
                "Accuracy of the attack on the p% examples each model is most confident about; "
                "solid target, dashed reference; bands: 95% bootstrap intervals over the attacked examples. "
                "Confidence: how concentrated the labels of a crop's nearest public neighbours are "
                "(negative entropy of their histogram).",
                {"top": top, "curves": data},
            )
        )
    return infos


def fig_variants(w: FigureWriter, attacks: list[AttackRecord], top: str = "top1") -> FigureInfo | None:
    """Attack variants side by side (periphery vs corner crop, projector vs backbone vs
    logits): target and reference accuracy at 20% and the deja vu score, per
    (method, npc, epoch) that has at least two variants.

    Args:
        w: the writer.
        attacks: attack records.
        top: ``top1`` or ``top5``.

    Returns:
        The figure's entry (up to ``MAX_PANELS`` groups), or None without two variants anywhere.
    """
    hps = varying_hyperparams(attacks)
    groups: dict[tuple, dict[str, AttackRecord]] = {}
    for r in attacks:
        groups.setdefault((r.method, r.npc, r.epoch, *(repr(r.param(h)) for h in hps)), {})[r.variant] = r
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: (k[0], k[1], -k[2]))[:MAX_PANELS]
    plt = style()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    data = []
    for ax, k in zip(axes[0], keys):
        variants = sorted(groups[k])
        recs = [groups[k][v] for v in variants]
        d = {
            "method": k[0],
            "npc": k[1],
            "epoch": k[2],
            "variants": variants,
            "target_20": [r.acc("target", 20, top) for r in recs],
            "reference_20": [r.acc("reference", 20, top) for r in recs],
            "dejavu_score": [r.score(top) for r in recs],
            "files": [str(r.path) for r in recs],
        }
        bands = [accuracy_bands(r, [0.2], top) for r in recs]
        err: dict[str, Any] = {}
        if all(b is not None for b in bands):  # 95% bootstrap CI of each bar
            d["band95"] = {role: [[b[role][0][0], b[role][1][0]] for b in bands] for role in ("target", "reference")}  # type: ignore[index]
            for role in ("target", "reference"):
                v = d[f"{role}_20"]
                err[role] = [
                    [100 * (x - c[0]) for x, c in zip(v, d["band95"][role])],
                    [100 * (c[1] - x) for x, c in zip(v, d["band95"][role])],
                ]
        data.append(d)
        pos = list(range(len(variants)))
        ax.bar(
            [p - 0.2 for p in pos],
            [100 * v for v in d["target_20"]],
            0.4,
            color="C0",
            label="target",
            yerr=err.get("target"),
            capsize=3,
        )
        ax.bar(
            [p + 0.2 for p in pos],
            [100 * v for v in d["reference_20"]],
            0.4,
            color="C0",
            alpha=0.35,
            hatch="//",
            label="reference",
            yerr=err.get("reference"),
            capsize=3,
        )
        ax.set_xticks(pos, variants, rotation=20)
        ax.set_title(f"{k[0]}, {k[1]}pc, ep {k[2]}")
        _pct_axis(ax, f"{top} accuracy, 20% most confident")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    name = f"variants_{top}"
    title = "Attack variants: crop (periphery/corner) and embedding (projector/backbone/logits)"
    fig.suptitle(title)
    return w.save(
        fig,
        name,
        "variants",
        None,
        title,
        "Target (solid) vs reference (hatched) accuracy at 20% per attack variant; error bars: 95% "
        "bootstrap intervals over the attacked examples.",
        {"top": top, "groups": data},
    )


def significance_table(attacks: list[AttackRecord], top: str = "top1", at: str = "20") -> list[dict[str, Any]]:
    """Per setting and epoch (attacks differing only in the seed grouped): the per-pair score,
    control and excess, and the excess over the pairs with its interval
    (:mod:`dejavu.analysis.significance`). Attacks without a control are left out.

    Args:
        attacks: attack records.
        top: ``top1`` or ``top5``.
        at: the most confident fraction, ``20`` or ``100``.

    Returns:
        One row per group: ``method, variant, npc, epoch, params, top, p, seeds, scores,
        controls, excesses, example_ci95, pair_level, verdict, files`` (and ``design``: the
        pairs' training designs, :func:`dejavu.ssl.config.pair_design`).
    """

    rows = []
    for key, recs in seed_groups([r for r in attacks if r.control]).items():
        maybe = [r.excess(top, at) for r in recs]
        ex = [e for e in maybe if e is not None]
        if len(ex) < len(maybe):
            continue
        reps = per_pair_partitions([r.raw for r in recs])
        shared = shared_variance_from_folders([r.dir for r in recs]) if len(recs) >= 2 and not reps else None
        pl = pair_level(
            [e["excess"] for e in ex],
            [e.get("se") for e in ex],
            shared_var=shared.get((top, at)) if shared else None,
            example_df=example_df([r.raw for r in recs]),
            replicates=reps,
        )
        rows.append(
            {
                "method": key[0],
                "variant": key[1],
                "npc": key[2],
                "epoch": key[3],
                "params": {k: v for k, v in key[4:]},
                "top": top,
                "p": at,
                "seeds": [r.seed for r in recs],
                "design": sorted({str((r.raw.get("design") or {}).get("design", "unknown")) for r in recs}),
                "partitions": "one per pair" if reps else "shared by the pairs",
                "scores": [e["score"] for e in ex],
                "controls": [e["control"] for e in ex],
                "excesses": [e["excess"] for e in ex],
                "example_ci95": [e["ci95"] for e in ex],
                "pair_level": pl,
                "verdict": verdict_text(ex[0], pl),
                "files": [str(r.path) for r in recs],
            }
        )
    return rows


def fig_significance(w: FigureWriter, attacks: list[AttackRecord], top: str = "top1") -> list[FigureInfo]:
    """Score, control and excess vs epoch, one panel per setting: each model pair's excess
    (thin), their mean with the interval over pairs (band; with one pair, the example-level
    CI, which does not cover training randomness), and the mean control (dashed).

    Args:
        w: the writer.
        attacks: attack records (those with a control are drawn).
        top: ``top1`` or ``top5``.

    Returns:
        One entry per figure of up to ``MAX_PANELS`` settings (none without a control).
    """
    rows = significance_table(attacks, top)
    settings: dict[tuple, list[dict]] = {}
    for r in rows:
        settings.setdefault((r["method"], r["variant"], r["npc"], repr(r["params"])), []).append(r)
    infos = []
    keys = sorted(settings, key=str)
    for chunk in range(0, len(keys), MAX_PANELS):
        part = keys[chunk : chunk + MAX_PANELS]
        plt = style()
        fig, axes = plt.subplots(1, len(part), figsize=(4.2 * len(part), 3.4), squeeze=False)
        data = []
        for ax, k in zip(axes[0], part):
            pts = sorted(settings[k], key=lambda r: r["epoch"])
            _significance_panel(ax, k, pts, top)
            data.append({"method": k[0], "variant": k[1], "npc": k[2], "params": k[3], "points": pts})
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
        name = f"significance_{top}" + (f"_{chunk // MAX_PANELS + 1}" if len(keys) > MAX_PANELS else "")
        title = "Deja vu score against the held-out control"
        fig.suptitle(title)
        infos.append(
            w.save(
                fig,
                name,
                "significance",
                "epoch",
                title,
                "Excess of the deja vu score over the held-out control (images neither model "
                "trained on). Band: 95% interval over model pairs that differ only in the seed "
                "(covers training randomness); with one pair, the example-level CI, which does "
                "not.",
                {"top": top, "settings": data},
            )
        )
    return infos


def _significance_panel(ax, key: tuple, pts: list[dict[str, Any]], top: str) -> None:
    """One setting's panel of :func:`fig_significance`: ``pts`` are its
    :func:`significance_table` rows sorted by epoch; ``key`` = (method, variant, npc, params)."""
    xs = [r["epoch"] for r in pts]
    n = max(len(r["excesses"]) for r in pts)
    for i in range(n):
        ys = [100 * r["excesses"][i] if i < len(r["excesses"]) else float("nan") for r in pts]
        ax.plot(xs, ys, "-o", color="C0", alpha=0.3, lw=0.8, ms=3, label="excess, each pair" if i == 0 else None)
    mean = [100 * r["pair_level"]["mean"] for r in pts]
    band = [r["pair_level"]["ci95"] if r["pair_level"]["n_pairs"] >= 2 else r["example_ci95"][0] for r in pts]
    lo, hi = [100 * b[0] for b in band], [100 * b[1] for b in band]
    ax.fill_between(xs, lo, hi, color="C0", alpha=0.15)
    ax.errorbar(
        xs,
        mean,
        yerr=[[m - a for m, a in zip(mean, lo)], [b - m for m, b in zip(mean, hi)]],
        fmt="-o",
        color="C0",
        ms=4,
        capsize=4,
        label=f"excess, mean of {n} pair(s), 95% interval",
    )
    controls = [100 * float(np.mean(r["controls"])) for r in pts]
    ax.plot(xs, controls, "--s", color="grey", ms=3, label="control score (mean)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(f"{key[0]}, {key[1]}, {key[2]}pc" + (f", {key[3]}" if key[3] != "{}" else ""))
    ax.set_xlabel(_xlabel("epoch"))
    ax.set_ylabel(f"{top} difference (points), 20% most confident")


@locks_output("plot")
def make_figures(
    results: Results,
    out: str | os.PathLike,
    params: Sequence[str] = (),
    tops: Sequence[str] = ("top1",),
    formats: Sequence[str] = ("png", "pdf"),
    force: bool = False,
) -> list[FigureInfo]:
    """All figures the results allow, and ``out/figures.json`` indexing them.

    Args:
        results: the records (:func:`dejavu.report.collect.collect`).
        out: the output folder.
        params: hyper-parameters drawn as extra x axes (and splitting series).
        tops: ``top1`` and/or ``top5``.
        formats: image formats (``png``, ``pdf``, ``svg``).
        force: overwrite an existing ``figures.json`` and figures.

    Returns:
        The figures' index entries.

    Raises:
        DejavuError: ``figures.json`` exists without ``force``, a bad top or format, or no results.
    """

    out = Path(out)
    check_can_write(out / "figures.json", force)
    for t in tops:
        if t not in ("top1", "top5"):
            raise DejavuError(f"--top: expected top1 or top5, got {t!r}")
    if not len(results):
        raise DejavuError("no attack or probe results.json found in the given folders")
    w = FigureWriter(out, formats)
    axes = ["epoch", "npc", *params]
    steps: list[Callable[[], Any]] = []
    for axis in axes:
        for t in tops:
            steps.append(partial(fig_accuracy, w, results.attacks, axis, t, params))
        steps.append(partial(fig_quadrants, w, results.attacks, axis, params))
        steps.append(partial(fig_probe, w, results.probes, axis, params))
    for t in tops:
        steps.append(partial(fig_sweep, w, results.attacks, t))
        steps.append(partial(fig_variants, w, results.attacks, t))
        steps.append(partial(fig_significance, w, results.attacks, t))
    from dejavu.monitor.plot import fig_monitor  # runs trained with --monitor: its curve beside the attack's

    steps.append(partial(fig_monitor, w, results.attacks))

    for step in progress(steps, desc="plot", total=len(steps)):
        step()
    w.write_index(
        {
            "attacks": len(results.attacks),
            "probes": len(results.probes),
            "params": list(params),
            "significance": significance_table(results.attacks),
            "skipped": [[str(p), why] for p, why in results.skipped],
        }
    )
    return w.figures
