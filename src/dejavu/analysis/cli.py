"""``dejavu analyze``: re-score attack folders from their stored neighbours (no model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dejavu import formats


@dataclass
class AnalyzeConfig:
    """``dejavu analyze``'s settings (flags, ``--config`` and ``--set`` all fill these)."""

    k_attk: int | None = field(default=None, metadata={"help": "neighbours voting (None: the attack's k_attk)"})
    topk: int = field(default=1, metadata={"help": "top-k for the printed summary and examples.csv", "choices": (1, 5)})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap replicates (0 = off)", "aliases": ("--bootstrap",)})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})


ANALYZE_FLAGS = ("k_attk", "topk", "n_boot", "seed")


def register(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="recompute deja vu metrics from an attack folder's stored neighbours",
        description="Re-score ATTACK_DIR (or every ATTACK_DIR/ep*/ holding a results.json) from the "
        "stored neighbour labels without loading any model: population test (5/20/100%% and the "
        "sweep), deja vu score, quadrants, per-class statistics, rankings and bootstrap CIs. "
        "Writes ATTACK_DIR/analysis_k{K}.json (or --out); --inplace instead rewrites the metrics "
        "of results.json, examples.csv and the conf-sweep files.",
    )
    p.add_argument("attack_dir", metavar="ATTACK_DIR", help="attack folder (or a folder of ep*/ attack folders)")
    from dejavu.config import add_config_args

    add_config_args(p, AnalyzeConfig, flags=ANALYZE_FLAGS, title="settings (AnalyzeConfig)")
    p.add_argument(
        "--out", default=None, help="output JSON (single folder only) (default: ATTACK_DIR/analysis_k{K}.json)"
    )
    p.add_argument("--inplace", action="store_true", help="rewrite results.json metrics (needs --force) (default: off)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: off)")
    p.set_defaults(func=_cmd)


def analyze(folder, k_attk=None, n_boot=1000, seed=0, out=None, inplace=False, force=False, topk=1) -> dict:
    """Re-score one attack folder; returns the new metrics dict.

    Args:
        folder: the attack folder.
        k_attk: neighbours voting (default: the folder's ``config.k_attk``).
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        out: the output JSON (default: ``folder/analysis_k{K}.json``).
        inplace: rewrite ``results.json``, ``examples.csv`` and the conf-sweep files instead.
        force: overwrite an existing output (required with ``inplace``).
        topk: 1 or 5, the correctness used in ``examples.csv``.

    Returns:
        The :func:`~dejavu.analysis.summary.compute_all` metrics.

    Raises:
        DejavuError: an unreadable folder, ``inplace`` without ``force``, or an existing
        output without ``force``.
    """
    from dejavu import DejavuError
    from dejavu.analysis.metrics import two_model
    from dejavu.analysis.significance import primary_endpoint, rescore_control
    from dejavu.analysis.summary import compute_all
    from dejavu.analysis.tables import scores_from_folder, write_conf_sweeps, write_examples_csv
    from dejavu.io import atomic_write_json, check_can_write

    folder = Path(folder)
    scores, res = scores_from_folder(folder, k_attk)
    comps = two_model(scores)
    cfg = res.get("config", {})
    k = k_attk if k_attk is not None else cfg.get("k_attk") or cfg.get("k")
    num_classes = res["num_classes"]  # set by scores_from_folder (from provenance or the labels seen)
    metrics = compute_all(comps, num_classes, n_boot=n_boot, seed=seed)
    control = rescore_control(folder, comps, res, k, int(num_classes), n_boot, seed) if "control" in res else None
    if inplace:
        if not force:
            raise DejavuError(f"{folder / 'results.json'}: --inplace rewrites it; pass --force too")
        res["metrics"] = metrics
        if control is not None:
            res["control"] = control
        res.setdefault("config", {})["k_attk"] = k
        res["config"]["n_boot"], res["config"]["seed"] = n_boot, seed
        res["primary_endpoint"] = primary_endpoint(res)
        write_conf_sweeps(folder, metrics)
        write_examples_csv(folder / "examples.csv", comps, topk)
        atomic_write_json(folder / "results.json", res)
    else:
        dest = Path(out) if out else folder / f"analysis_k{k}.json"
        check_can_write(dest, force)
        atomic_write_json(
            dest,
            {
                "format": formats.ANALYSIS,
                "attack_dir": str(folder),
                "config": {**res.get("config", {}), "k_attk": k, "n_boot": n_boot, "seed": seed},
                "fingerprint": res.get("fingerprint"),
                "models": res.get("models"),
                "counts": res.get("counts"),
                "metrics": metrics,
                **({"control": control} if control is not None else {}),
                "primary_endpoint": primary_endpoint(
                    {"metrics": metrics, **({"control": control} if control is not None else {})}
                ),
            },
        )
    return metrics


def _cmd(args) -> int:
    from dejavu import DejavuError
    from dejavu.analysis.tables import summary_text
    from dejavu.config import config_from_args
    from dejavu.io import read_json

    cfg = config_from_args(AnalyzeConfig, args, flags=ANALYZE_FLAGS)
    root = Path(args.attack_dir)
    if (root / "results.json").is_file():
        folders = [root]
    else:
        folders = sorted(
            (d for d in root.glob("ep*") if (d / "results.json").is_file()),
            key=lambda d: int(d.name[2:]) if d.name[2:].isdigit() else 0,
        )
        if not folders:
            raise DejavuError(f"{root}: no results.json here nor in any ep*/ subfolder")
        if args.out:
            raise DejavuError("--out works with a single attack folder only")
    for f in folders:
        m = analyze(f, cfg.k_attk, cfg.n_boot, cfg.seed, args.out, args.inplace, args.force, cfg.topk)
        print(f"== {f}")
        print(summary_text(read_json(f / "results.json"), m))
    return 0
