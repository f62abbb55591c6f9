"""``dejavu rcdm train|reconstruct`` (thin layer over :mod:`dejavu.rcdm.train` and
:mod:`dejavu.rcdm.reconstruct`; heavy imports happen inside the handlers)."""

from __future__ import annotations

import argparse

from dejavu.rcdm.reconstruct import ReconstructConfig

RCDM_FLAGS = ("image_size", "steps", "batch_size")
RECON_FLAGS = ("select", "samples", "ddim_steps", "neighbours", "seed")


TRAIN_HELP = """\
Train a representation-conditioned diffusion model (RCDM) for one frozen SSL model.
It learns to draw an image given concat(backbone(x), projector(x)) of that image (the
logits for a supervised model), on the partition's public set. Train one RCDM per model
(A and B) of an attack; `dejavu rcdm reconstruct` then draws attacked images from their
background crops. Writes OUT/{config.json,metrics.jsonl,rcdm_step<S>.pth,last.pth}.
Configs: tiny (default; CPU, 32 px) or paper128 / paper256 (the paper's, GPUs),
or --config FILE; override any key with --set key=value."""

RECON_HELP = """\
Reconstruct attacked images from their background crops. For an example of set A the
target model is A (its RCDM draws from A's representation of the crop) and model B's
RCDM is the control, with the same noise; and vice versa for set B. The conditioning is
concat(mean backbone embedding of the crop's 5 nearest public neighbours, projector(crop))
under each model. Writes one grid PNG per example (original with boxes, crop, neighbours,
target samples, control samples), the samples as .npy, summary.png and reconstruct.json."""


def register(sub: argparse._SubParsersAction) -> None:
    from dejavu.config import add_config_args
    from dejavu.data.imagefolder import add_data_args
    from dejavu.rcdm.config import RCDMConfig

    p = sub.add_parser(
        "rcdm",
        help="representation-conditioned diffusion: train, reconstruct",
        description="Representation-conditioned diffusion models (DESIGN 2.8).",
    )
    rs = p.add_subparsers(dest="rcdm_command", metavar="{train,reconstruct}")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    t = rs.add_parser(
        "train",
        help="train an RCDM on one SSL model's representations",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("--ssl-model", required=True, metavar="CKPT", help="the frozen SSL checkpoint (model_ep<E>.pth)")
    t.add_argument(
        "--partition", required=True, metavar="P", help="partition folder (its public set is the training set)"
    )
    add_data_args(t)
    t.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    add_config_args(t, RCDMConfig, flags=RCDM_FLAGS, kind="rcdm")
    _config_default(t, "tiny")
    t.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pth (fresh start if absent)")
    t.add_argument("--force", action="store_true", help="discard an existing run in OUT")
    t.set_defaults(func=_train)

    r = rs.add_parser(
        "reconstruct",
        help="draw attacked images from their crops under both models' RCDMs",
        description=RECON_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--attack", required=True, metavar="ATTACK_DIR", help="an attack folder (results.json, examples.csv)"
    )
    r.add_argument("--rcdm-a", required=True, metavar="DIR", help="RCDM trained on model A (folder or .pth)")
    r.add_argument("--rcdm-b", required=True, metavar="DIR", help="RCDM trained on model B (folder or .pth)")
    add_config_args(r, ReconstructConfig, flags=RECON_FLAGS)
    add_data_args(r)
    r.add_argument("--device", help="cpu | cuda | cuda:N (default: cuda when available)")
    r.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    r.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    r.set_defaults(func=_reconstruct)


def _config_default(p: argparse.ArgumentParser, text: str) -> None:
    """Name what ``--config`` defaults to in its help, as every other flag does."""
    act = p._option_string_actions["--config"]
    act.help = f"{act.help} (default: {text})"


def _train(args: argparse.Namespace) -> int:
    from dejavu.config import config_from_args
    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.rcdm.config import RCDMConfig
    from dejavu.rcdm.train import train_rcdm
    from dejavu.utils import set_torch_threads

    args.config = args.config or "tiny"
    cfg = config_from_args(RCDMConfig, args, flags=RCDM_FLAGS, kind="rcdm")
    if args.device in (None, "cpu"):
        set_torch_threads()
    res = train_rcdm(
        cfg,
        args.ssl_model,
        args.partition,
        data_paths_from_args(args),
        args.out,
        resume=args.resume,
        force=args.force,
        device=args.device,
    )
    last = f"{res.losses[-1]:.4f}" if res.losses else "n/a"
    print(
        f"rcdm: {res.step} steps on {res.num_train} images in {res.seconds:.1f} s "
        f"(+{res.prep_seconds:.1f} s embedding); last loss {last}; checkpoint {res.checkpoint}"
    )
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    from dejavu.config import config_from_args
    from dejavu.rcdm.reconstruct import reconstruct
    from dejavu.utils import set_torch_threads

    cfg = config_from_args(ReconstructConfig, args, flags=RECON_FLAGS)
    data = None
    if args.data or args.images:
        from dejavu.data.imagefolder import data_paths_from_args

        data = data_paths_from_args(args)
    if args.device in (None, "cpu"):
        set_torch_threads()
    res = reconstruct(
        args.attack,
        args.rcdm_a,
        args.rcdm_b,
        cfg.select,
        args.out,
        samples=cfg.samples,
        ddim_steps=cfg.ddim_steps,
        seed=cfg.seed,
        data=data,
        n_neighbours=cfg.neighbours,
        device=args.device,
        force=args.force,
    )
    print(f"rcdm: reconstructed {len(res.items)} example(s) into {res.out} (summary: {res.summary_png})")
    return 0
