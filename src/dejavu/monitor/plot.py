"""The monitor's curve beside the offline attack's (``dejavu plot`` / ``dejavu report``).

For every attacked run (model A or B of an attack's ``results.json``; the two-model score
averages A's déjà vu on set A and B's on set B) trained with ``--monitor``,
:func:`fig_monitor` draws the monitor's one-model score by epoch (with
its 95% CI band, from the run's ``metrics.jsonl``) and, at the attacked snapshots, the
two-model score of the offline attack (with its CI), in one panel per run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dejavu.report.collect import AttackRecord
from dejavu.report.style import MAX_PANELS, style

if TYPE_CHECKING:
    from dejavu.report.plots import FigureInfo, FigureWriter


def monitor_rows(run: Path) -> list[dict[str, Any]]:
    """The monitored rows of a training run's ``metrics.jsonl`` (``monitor_score`` present).

    Args:
        run: the training run folder.

    Returns:
        The rows in epoch order; empty when the run was not monitored (or has no metrics).
    """
    f = run / "metrics.jsonl"
    if not (run / "monitor" / "monitor.json").is_file() or not f.is_file():
        return []
    rows = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
    return sorted((r for r in rows if r.get("monitor_score") is not None), key=lambda r: r["epoch"])


def _runs(r: AttackRecord) -> list[Path]:
    """The training runs of an attack's two models (from their checkpoints' paths)."""
    models = r.raw.get("models") or {}
    paths = [(models.get(k) or {}).get("path") for k in ("A", "B")]
    return [Path(p).parent for p in paths if p]


def monitored_runs(attacks: list[AttackRecord]) -> dict[Path, list[AttackRecord]]:
    """Attacks grouped by their target's training run, for the runs trained with ``--monitor``.

    Args:
        attacks: attack records (:func:`dejavu.report.collect.collect`).

    Returns:
        ``{run folder: the attacks of its snapshots, by epoch}``, only for runs with monitored rows.
    """
    out: dict[Path, list[AttackRecord]] = {}
    for r in attacks:
        for run in _runs(r):
            if monitor_rows(run):
                out.setdefault(run, []).append(r)
    return {k: sorted(v, key=lambda r: r.epoch) for k, v in sorted(out.items())}


def fig_monitor(w: FigureWriter, attacks: list[AttackRecord]) -> FigureInfo | None:
    """The monitor's score by epoch beside the offline two-model attack's, one panel per run.

    Args:
        w: the :class:`dejavu.report.plots.FigureWriter`.
        attacks: attack records; the runs of their models trained with ``--monitor`` are drawn.

    Returns:
        The figure's entry, or None when no attacked run was monitored.
    """
    runs = list(monitored_runs(attacks).items())[:MAX_PANELS]
    if not runs:
        return None
    plt = style()
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.4), squeeze=False)
    data = []
    for ax, (run, recs) in zip(axes[0], runs):
        rows = monitor_rows(run)
        d: dict[str, Any] = {
            "run": str(run),
            "monitor": {
                "epoch": [r["epoch"] for r in rows],
                "score": [r["monitor_score"] for r in rows],
                "ci95": [r["monitor_score_ci95"] for r in rows],
                "memorized": [r.get("monitor_memorized") for r in rows],
            },
            "attack": {
                "epoch": [r.epoch for r in recs],
                "score": [r.score() for r in recs],
                "ci95": [list(r.ci() or (float("nan"), float("nan"))) for r in recs],
                "files": [str(r.path) for r in recs],
            },
        }
        data.append(d)
        m: dict[str, list] = d["monitor"]
        a: dict[str, list] = d["attack"]
        ax.fill_between(m["epoch"], [c[0] for c in m["ci95"]], [c[1] for c in m["ci95"]], color="C0", alpha=0.2)
        ax.plot(m["epoch"], m["score"], "-o", color="C0", ms=3, label="monitor (one model, online)")
        err = [[s - c[0] for s, c in zip(a["score"], a["ci95"])], [c[1] - s for s, c in zip(a["score"], a["ci95"])]]
        ax.errorbar(a["epoch"], a["score"], yerr=err, fmt="s", color="C3", ms=4, capsize=3, label="attack (two models)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(run.name)
        ax.set_xlabel("training epochs")
        ax.set_ylabel("deja vu score (top-1, 20%)")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    title = "Deja vu while training: the online monitor vs the offline attack"
    fig.suptitle(title)
    return w.save(
        fig,
        "monitor_vs_attack",
        "monitor",
        "epoch",
        title,
        "Line and band: the monitor's one-model score (crop classifier as reference, fixed subsample) "
        "logged while training, with its 95% CI; squares: the two-model attack of the snapshots.",
        {"runs": data},
    )


def monitor_summary(runs: dict[str, Path]) -> dict[str, list[dict[str, Any]]] | None:
    """The monitor's curve of each monitored run of a pair (``dejavu demo``'s ``summary.json``).

    Args:
        runs: ``{"A": run folder, "B": run folder}``.

    Returns:
        ``{name: [{"epoch", "score", "score_ci95", "score_100", "memorized"}, ...]}`` for the
        runs trained with ``--monitor``; None when neither was.
    """
    keys = ("score", "score_ci95", "score_100", "memorized")
    out = {
        name: [{"epoch": r["epoch"], **{k: r.get(f"monitor_{k}") for k in keys}} for r in monitor_rows(Path(run))]
        for name, run in runs.items()
    }
    return {k: v for k, v in out.items() if v} or None


def monitor_lines(mon: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    """The demo's lines of the monitor's curve (:func:`monitor_summary`), in points."""
    if not mon:
        return []
    return [
        f"  monitor of model {name} (one model, online) @20% by epoch: "
        + ", ".join(f"ep{r['epoch']} {100 * r['score']:+.1f}" for r in rows)
        for name, rows in mon.items()
    ]
