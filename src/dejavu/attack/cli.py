"""``dejavu attack``: thin CLI over :func:`dejavu.attack.run.attack` / ``attack_runs``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dejavu import DejavuError, UsageError


def register(sub) -> None:
    from dejavu.data.imagefolder import add_data_args

    p = sub.add_parser(
        "attack",
        help="run the deja vu attack on a snapshot pair (or every snapshot of two runs)",
        description="Crop the background of every bounding-box image of sets A and B (DESIGN 2.3), "
        "embed the crops and the public set with both models, find the k nearest public "
        "neighbours (exact squared L2) and score target (A on A, B on B) against reference "
        "(B on A, A on B). Writes the original file names and contents (A_attk_A_neighb_idxs.npy: "
        "dataset indices; A_attk_A_labels.npy: shape (n, 1); ...), "
        "public_idxs.npy, public_labels.npy, crops_{A,B}.npy, examples.csv and results.json. "
        "If --model-a/--model-b are run folders, every model_ep{E}.pth present in both is "
        "attacked into OUT/ep{E}/. Public embeddings are cached (OUT/../.embed_cache by default). "
        "Several GPUs: torchrun --nproc_per_node N -m dejavu attack ... (or --launcher slurm "
        "--gpus-per-node N): each rank embeds and searches its share, rank 0 writes the same files.",
    )
    p.add_argument(
        "--model-a", required=True, metavar="CKPT|RUN", help="model trained on set A (checkpoint or run folder)"
    )
    p.add_argument(
        "--model-b", required=True, metavar="CKPT|RUN", help="model trained on set B (checkpoint or run folder)"
    )
    p.add_argument("--partition", required=True, metavar="P", help="partition folder (holding manifest.json)")
    add_data_args(p, need_bboxes=False)
    p.add_argument("--out", required=True, metavar="ATTACK_DIR", help="output folder")
    from dejavu.attack.config import ATTACK_FLAGS, AttackConfig
    from dejavu.attack.crops import search_name
    from dejavu.config import add_config_args

    add_config_args(p, AttackConfig, flags=ATTACK_FLAGS, title="attack settings (AttackConfig)")
    p.add_argument(  # the old name of --periphery-search, whose value periphery is now paper
        "--crop-algo", dest="periphery_search", type=search_name, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    g = p.add_argument_group("held-out control")
    g.add_argument(
        "--control",
        default="auto",
        metavar="auto|none|partition|VAL_DIR",
        help="held-out control attacked with the same models (no memorization possible): "
        "'partition' = the partition's control_{A,B}.npy (dejavu partition --control N), or a "
        "folder of annotated validation images (ImageNet val, flat or in <wnid>/ folders); "
        "default auto: the partition's control when it has one. The results then give the "
        "excess of the score over the control with a paired bootstrap interval",
    )
    g.add_argument(
        "--control-bboxes",
        default=None,
        metavar="DIR",
        help="box XML of the validation images (<stem>.xml, <wnid>/<stem>.xml or "
        "Annotation/<wnid>/<stem>.xml; default: the --control folder itself)",
    )
    g = p.add_argument_group("execution")
    g.add_argument("--cache-dir", default=None, help="public-embedding cache (default OUT/../.embed_cache; '' = off)")
    g.add_argument(
        "--snapshot-epochs",
        default=None,
        metavar="E[,E...]",
        help="run folders only: which snapshots to attack, by training epoch (default: all common)",
    )
    g.add_argument("--skip-existing", action="store_true", help="run folders only: skip epochs already attacked")
    g.add_argument("--force", action="store_true", help="overwrite an existing attack")
    from dejavu.launch import add_launcher_args

    add_launcher_args(p, gpus_per_node=1)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from dejavu.attack.config import ATTACK_FLAGS, AttackConfig
    from dejavu.config import config_from_args
    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.launch import submit_if_slurm
    from dejavu.utils import set_torch_threads

    cfg = config_from_args(AttackConfig, args, flags=ATTACK_FLAGS)  # validated before any submission
    if args.launcher == "slurm" and not args.force and (Path(args.out) / "results.json").exists():
        raise DejavuError(f"{args.out}: an attack already exists here; pass --force to overwrite")  # not in a job
    if submit_if_slurm(args, name="attack", log_dir=Path(args.out) / "slurm"):
        return 0
    set_torch_threads()
    paths = data_paths_from_args(args, need_bboxes=cfg.crop == "periphery")
    a, b = Path(args.model_a), Path(args.model_b)
    if a.is_dir() != b.is_dir():
        raise DejavuError(f"{a} / {b}: pass two checkpoints or two run folders, not one of each")
    (_attack_runs if a.is_dir() else _attack_pair)(args, a, b, paths, cfg)
    return 0


def _attack_runs(args, a: Path, b: Path, paths, cfg) -> None:
    """Every snapshot present in both run folders (``--snapshot-epochs`` to choose)."""
    from dejavu.attack.run import attack_runs, snapshot_epochs

    try:
        epochs = [int(e) for e in args.snapshot_epochs.split(",")] if args.snapshot_epochs else None
    except ValueError:
        raise UsageError(
            f"--snapshot-epochs: expected comma-separated integers, got {args.snapshot_epochs!r}"
        ) from None
    existing = _check_existing(Path(args.out), cfg) if args.skip_existing and not args.force else []
    results = attack_runs(
        a,
        b,
        args.partition,
        paths,
        args.out,
        cfg,
        skip_existing=args.skip_existing,
        epochs=epochs,
        **_common(args, cfg),
    )
    from dejavu.attack.dist import is_main

    if not is_main():  # torchrun: rank 0 reports
        return

    for r in results:
        print(epoch_line(r.out, r.results))
    done = {r.out.name for r in results}
    common = set(snapshot_epochs(a)) & set(snapshot_epochs(b))
    skipped = [d for d in existing if d not in done and int(d[2:]) in (set(epochs or []) or common)]
    if skipped:
        print(f"skipped {', '.join(skipped)}: already attacked with the same settings (--skip-existing)")
    print(
        f"{len(results)} snapshot pair(s) attacked into {args.out}" + (f", {len(skipped)} skipped" if skipped else "")
    )


def epoch_line(out: Path, results: dict) -> str:
    """The line ``dejavu attack`` prints for one snapshot of two runs (its folder and results.json)."""
    from dejavu.analysis.metrics import score_at
    from dejavu.analysis.significance import verdict_line
    from dejavu.units import pts

    m = results["metrics"]["top1"]
    control = f"; {verdict_line(results)}" if "control" in results else ""
    return f"{out}: deja vu score {pts(score_at(m, 20))} (20% most confident), {pts(score_at(m, 100))} (all){control}"


# Settings that do not change an attack's numbers: an existing attack made with other values is still kept.
_NOT_RESULTS = frozenset({"device", "workers", "batch_size", "knn"})


def _check_existing(out: Path, cfg) -> list[str]:
    """The ``ep{E}`` folders of ``out`` holding a finished attack, after checking that each was made
    with the settings asked now (what ``--skip-existing`` keeps must be what the command would make).

    Raises:
        DejavuError: an existing attack made with other settings (naming them), which
            ``--skip-existing`` would otherwise keep silently.
    """
    from dataclasses import asdict

    from dejavu.attack.crops import renamed_search_keys
    from dejavu.io import read_json

    found = []
    for res in sorted(out.glob("ep*/results.json"), key=lambda f: (len(f.parent.name), f.parent.name)):
        stored = renamed_search_keys(read_json(res).get("config", {}), str(res))
        diff = [
            f"{k}={stored[k]!r} (asked: {v!r})"
            for k, v in asdict(cfg).items()
            if v is not None and k not in _NOT_RESULTS and k in stored and stored[k] != v
        ]
        if diff:
            raise DejavuError(
                f"{res}: made with other settings, {', '.join(diff)}; --skip-existing keeps only attacks made "
                "with the same settings: pass --force to redo them, or --out another folder"
            )
        found.append(res.parent.name)
    return found


def _attack_pair(args, a: Path, b: Path, paths, cfg) -> None:
    """One checkpoint pair."""
    from dejavu.analysis.significance import control_summary_text
    from dejavu.analysis.tables import summary_text
    from dejavu.attack.dist import is_main
    from dejavu.attack.run import attack

    r = attack(a, b, args.partition, paths, args.out, cfg, **_common(args, cfg))
    if not is_main():  # torchrun: rank 0 reports
        return
    print(summary_text(r.results))
    print(control_summary_text(r.results))
    print(f"written to {r.out}")


def _common(args, cfg) -> dict:
    """Keyword arguments shared by :func:`attack` and :func:`attack_runs` (``--crops-betons``: the
    crops read from betons, :func:`dejavu.ffcv.betons.crop_datasets`)."""
    from dejavu.ffcv.betons import crop_datasets

    return dict(
        force=args.force,
        cache_dir=args.cache_dir,
        control=args.control,
        control_bboxes=args.control_bboxes,
        crop_datasets=crop_datasets(cfg),
    )
