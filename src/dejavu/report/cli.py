"""``dejavu plot`` and ``dejavu report``: figures and the HTML summary from stored results."""

from __future__ import annotations

import shlex
import sys


def register(sub) -> None:
    """Add ``dejavu plot`` and ``dejavu report`` to the CLI's subparsers."""
    p = sub.add_parser(
        "plot",
        help="the paper's figures from folders of attack/probe results.json",
        description="Scan RESULTS folders (recursively) for attack (dejavu-attack/1, /2) and probe "
        "(dejavu-probe/1) results.json and draw, as PNG and PDF with the numbers beside each as "
        "JSON: target (solid) vs reference (dashed) accuracy on the 5/20/100% most confident vs "
        "epochs, dataset size and --param hyper-parameters; stacked example shares (correlated / "
        "forgotten / memorized) vs the same axes; linear probe accuracy vs the same axes; "
        "confidence-sweep curves; attack variants (crop, embedding) side by side. "
        "Epoch, npc, method and hyper-parameters come from the configs stored in the results. "
        "OUT/figures.json indexes the figures.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="folders (or results.json files) to scan")
    p.add_argument("--out", required=True, help="output folder for the figures")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY",
        help="also plot against this training hyper-parameter, looked up in the model config "
        "(dotted keys allowed; repeatable), e.g. --param lr --param sim_coeff",
    )
    p.add_argument(
        "--top",
        action="append",
        choices=["top1", "top5"],
        default=None,
        help="attack accuracy to plot (repeatable; default: top1)",
    )
    p.add_argument("--format", default="png,pdf", help="comma-separated image formats (default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="fail on a malformed results.json instead of skipping it")
    p.add_argument("--force", action="store_true", help="overwrite existing figures in OUT")
    p.set_defaults(func=_plot)

    r = sub.add_parser(
        "report",
        help="write a self-contained report.html for a run folder",
        description="Write RUN_DIR/report.html (images embedded, so the file stands alone): the "
        "headline of the latest-epoch attack (deja vu score with its 95% CI, target vs reference "
        "accuracy at 20% and 100%, example shares, linear probe accuracy), the figures (drawn into "
        "RUN_DIR/plots when absent), and galleries of the most memorized and most correlated examples "
        "with their boxes, crop and nearest public neighbours under models A and B, plus RCDM "
        "samples found under RUN_DIR/rcdm; the one-model tests under RUN_DIR/audit (dejavu audit) with "
        "their held-out control (control score, excess with its 95% CI, verdict). RUN_DIR is runs/<name> "
        "with attack/, probe/ and/or audit/ inside.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holding attack/, probe/, audit/, partition/)")
    r.add_argument("--out", default=None, help="output HTML file (default: RUN_DIR/report.html)")
    from dejavu.data.imagefolder import add_data_args

    add_data_args(r)
    r.add_argument("--examples", type=int, default=6, help="examples per gallery (default: %(default)s)")
    r.add_argument("--neighbours", type=int, default=5, help="public neighbours shown per model (default: %(default)s)")
    r.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY",
        help="hyper-parameter axes for figures drawn by the report (as in `dejavu plot`)",
    )
    r.add_argument("--force", action="store_true", help="overwrite report.html and redraw RUN_DIR/plots")
    r.set_defaults(func=_report)


def _plot(args) -> int:
    from dejavu.report.collect import collect
    from dejavu.report.plots import make_figures

    res = collect(args.results, strict=args.strict)
    for path, why in res.skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    figs = make_figures(
        res,
        args.out,
        params=args.param,
        tops=args.top or ["top1"],
        formats=[f.strip() for f in args.format.split(",") if f.strip()],
        force=args.force,
    )
    print(f"{len(res.attacks)} attack and {len(res.probes)} probe results -> {len(figs)} figures in {args.out}")
    for f in figs:
        print(f"  {f.name}: {f.title}")
    print(significance_text(res.attacks))
    return 0


def significance_text(attacks) -> str:
    """Score, control and excess of the latest epoch of each setting, with the verdict.

    Args:
        attacks: attack records.

    Returns:
        The lines for ``dejavu plot``'s output, or one line saying no attack has a control.
    """
    from dejavu.report.plots import significance_table

    rows = significance_table(attacks)
    if not rows:
        return (
            "no attack has a held-out control: scores are not compared with one "
            "(dejavu partition --control N, or dejavu attack --control VAL_DIR)"
        )
    latest: dict[tuple, dict] = {}
    for r in rows:
        k = (r["method"], r["variant"], r["npc"], repr(r["params"]))
        if k not in latest or r["epoch"] > latest[k]["epoch"]:
            latest[k] = r
    lines = ["deja vu score against the held-out control (top-1, 20%, latest epoch):"]
    for r in latest.values():
        pairs = ", ".join(
            f"seed {sd}: {100 * s:+.1f}/{100 * c:+.1f}/{100 * e:+.1f}"
            for sd, s, c, e in zip(r["seeds"], r["scores"], r["controls"], r["excesses"])
        )
        lines.append(
            f"  {r['method']}, {r['variant']}, {r['npc']}pc, epoch {r['epoch']} "
            f"(score/control/excess per pair, points: {pairs})"
        )
        lines.append(f"    {r['verdict']}")
    return "\n".join(lines)


def _report(args) -> int:
    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.report.html import build_report

    data = data_paths_from_args(args) if (args.data or args.images) else None
    out = build_report(
        args.run_dir,
        out=args.out,
        force=args.force,
        data=data,
        n_examples=args.examples,
        n_neighbours=args.neighbours,
        params=tuple(args.param),
        command=shlex.join(["dejavu", *getattr(args, "argv", ["report", args.run_dir])]),
    )
    print(f"report written to {out}")
    return 0
