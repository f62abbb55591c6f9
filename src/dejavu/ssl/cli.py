"""``dejavu train``: train one SSL (or supervised) model on a partition's train set."""

from __future__ import annotations

import argparse

from dejavu import UsageError

DESCRIPTION = """\
Train a model on the images of one index file (a partition's train_A.npy or
train_B.npy) and write OUT/model_ep{E}.pth snapshots, OUT/last.pth (resume state),
OUT/config.json and OUT/metrics.jsonl (loss, lr, images/s, online kNN accuracy).

Configuration: --config names a YAML file or a packaged config: <method> = the paper
setting (ImageNet/ResNet-101), <method>_synth = the CPU synthetic default (used when
--config is not given), for each method:
  {methods}.
--set key=value overrides any field (epochs, batch_size, lr, seed, snapshot_every, arch,
projector, image_size, optimizer, weight_decay, warmup_epochs, augment, knn_every, amp,
...). lr is the base lr (effective = lr * batch_size / 256) unless absolute_lr=true.
A method's own settings are a section named after it: --set vicreg.sim=30,
--set dino.teacher_temp=0.05, --set byol.ema_start=0.99 (--print-config lists them).

A pair is trained with one seed (--set seed=S) and is independent by default
(design: independent): the run on train_B.npy trains with S + 1000003, so its initial
weights, batch order and augmentations differ from the train_A run's, as in the original
(which seeded nothing). --set design=coupled gives both runs seed S (the same initial
weights and random streams: a variance-reduction design, recorded in config.json and in
every attack's results.json "design").
Several GPUs: `torchrun --nproc_per_node=8 -m dejavu train ...` or --launcher slurm.
"""

EPILOG = """\
examples:
  dejavu train --method vicreg --data synth --index part/100_per_class/train_A.npy --out runs/vicreg_A
  dejavu train --method vicreg --data synth --index part/100_per_class/train_A.npy --out runs/vicreg_A --resume
  dejavu train --config vicreg --images $IMAGENET_DIR/train --index part/300_per_class/train_B.npy \\
      --out runs/vicreg_300pc_B --launcher slurm --nodes 2 --gpus-per-node 8 --time 4320
"""


def register(sub: argparse._SubParsersAction) -> None:
    from dejavu.config import add_config_args
    from dejavu.data.imagefolder import add_data_args
    from dejavu.launch import add_launcher_args
    from dejavu.ssl.config import TRAIN_FLAGS, TrainConfig
    from dejavu.ssl.registry import METHODS

    p = sub.add_parser(
        "train",
        help=f"train an SSL model ({', '.join(METHODS)})",
        description=DESCRIPTION.replace("{methods}", ", ".join(METHODS)),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(p)
    p.add_argument(
        "--index",
        required=True,
        metavar="NPY",
        help="index file of the training images, e.g. P/100_per_class/train_A.npy",
    )
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write")
    add_config_args(p, TrainConfig, flags=TRAIN_FLAGS, kind="ssl")
    act = p._option_string_actions["--config"]
    act.help = f"{act.help} (default: <method>_synth)"
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pth (exactly, on the CPU)")
    p.add_argument("--force", action="store_true", help="discard an existing run in RUN and start over")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--loader",
        choices=("torch", "ffcv"),
        default="torch",
        help="torch: decode the JPEGs (default); ffcv: read --train-beton through FFCV "
        "(optional extra, see dejavu betons)",
    )
    p.add_argument(
        "--train-beton",
        metavar="FILE",
        default=None,
        help="with --loader ffcv: the beton of the --index images (dejavu betons)",
    )
    add_launcher_args(p)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dejavu.ssl.config import train_config_from_args

    cfg = train_config_from_args(args)  # validate before submitting
    if args.force and args.resume:
        raise UsageError("--force and --resume together: choose one")
    if (args.loader == "ffcv") != (args.train_beton is not None):
        raise UsageError("--loader ffcv and --train-beton FILE go together")
    from dejavu.monitor.train_hook import epoch_hooks

    hooks = epoch_hooks(cfg)  # the monitor and TensorBoard: missing packages refused before a submission
    images = None
    if args.loader == "ffcv":
        from dejavu.ffcv.loader import BetonImages

        images = BetonImages(args.train_beton)
    from dejavu.launch import submit_if_slurm
    from dejavu.ssl.train import check_out

    if args.launcher == "slurm":
        check_out(Path(args.out), args.resume, args.force)  # refuse now, not in a failed job
    if submit_if_slurm(args, name=f"train_{cfg.method}", log_dir=Path(args.out) / "slurm", resume_flag="--resume"):
        return 0

    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.ssl.train import train

    paths = data_paths_from_args(args)
    res = train(
        cfg,
        paths,
        args.index,
        args.out,
        resume=args.resume,
        force=args.force,
        device=args.device,
        images=images,
        epoch_hooks=hooks,
    )
    m = res.metrics
    knn = f", kNN top-1 {m['knn_top1']:.3f}" if "knn_top1" in m else ""
    from dejavu.ssl.ddp import current

    if current().is_main:
        print(
            f"trained {cfg.method} for {res.epochs_done} epochs: loss {m.get('loss', float('nan')):.4f}{knn}; "
            f"{len(res.snapshots)} snapshot(s) and last.pth in {res.out}"
        )
    return 0
