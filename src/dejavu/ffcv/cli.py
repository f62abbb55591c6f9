"""``dejavu betons``: FFCV ``.beton`` files of a partition (needs the ``ffcv`` extra)."""

from __future__ import annotations

import argparse
import os

from dejavu import UsageError

DESCRIPTION = """\
Write FFCV .beton files of a partition (the original's gen_betons.sh, gen_val_beton.sh
and bounding-box-crop betons) into OUT:
  <npc>_per_class_{A,B}.beton       training sets train_{A,B}.npy   (dejavu train --loader ffcv)
  val.beton                         the partition's val_set.npy
  <npc>_per_class_bbox_{A,B}.beton  periphery crops of bbox_{A,B}.npy (dejavu attack --crops-betons)
Images in index-file order with their label and ImageFolder index; crop betons add a
validity flag (1 crop, -1 none: the whole image) and the crop box. Each file has a
.json record beside it. Needs the ffcv extra (system packages + pip install -e ".[ffcv]").
"""

EPILOG = """\
example:
  dejavu betons --data $IMAGENET_DIR --partition runs/imagenet/partition --npc 300 \\
      --out runs/imagenet/betons --workers 16
"""


def _npcs(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _choices(name: str) -> tuple[str, ...]:
    """A :class:`BetonOptions` field's allowed values (its metadata: the one list)."""
    from dataclasses import fields

    from dejavu.ffcv.betons import BetonOptions

    return next(f.metadata["choices"] for f in fields(BetonOptions) if f.name == name)


def register(sub) -> None:
    from dejavu.attack.crops import search_name
    from dejavu.data.imagefolder import add_data_args
    from dejavu.launch import add_launcher_args

    p = sub.add_parser(
        "betons",
        help="write FFCV .beton files of a partition (optional ffcv extra)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(p)
    p.add_argument("--partition", required=True, metavar="P", help="partition folder (holding manifest.json)")
    p.add_argument(
        "--npc",
        type=_npcs,
        required=True,
        metavar="N[,N...]",
        help="images per class of the splits to write (e.g. 300 or 100,200,300,400,500)",
    )
    p.add_argument("--out", required=True, metavar="BETONS", help="output folder")
    p.add_argument(
        "--sets",
        default="train,val,bbox",
        help="which betons: comma-separated train, val, bbox (default: %(default)s)",
    )
    g = p.add_argument_group("storage")
    g.add_argument("--max-res", type=int, default=512, help="longer side at most (default: %(default)s)")
    g.add_argument("--quality", type=int, default=90, help="JPEG quality (default: %(default)s)")
    g.add_argument(
        "--write-mode",
        choices=_choices("write_mode"),
        default="jpg",
        help="jpg (default) or raw pixels (ffcv's default, what the original wrote; ~10x larger)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="writer processes (default: %(default)s)",
    )
    g = p.add_argument_group("crops (bbox betons; as dejavu attack)")
    g.add_argument(
        "--periphery-search",
        choices=_choices("periphery_search"),
        default="paper",
        help="how the periphery crop searches the box-free rectangle, as dejavu attack's (default: %(default)s; "
        "formerly --crop-algo periphery|largest-empty, still read)",
    )
    g.add_argument(  # the old name of --periphery-search, whose value periphery is now paper
        "--crop-algo", dest="periphery_search", type=search_name, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    g.add_argument(
        "--min-crop-px",
        type=float,
        default=None,
        help="accept a crop only if its shorter side is > this many pixels of the original "
        "image (default: the dataset's own, as dejavu attack: 100 for ImageNet)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing betons")
    p.add_argument("--skip-existing", action="store_true", help="keep existing betons, write the missing ones")
    add_launcher_args(p, gpus_per_node=1)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from pathlib import Path

    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.ffcv import require_ffcv
    from dejavu.launch import submit_if_slurm

    require_ffcv("dejavu betons")
    if submit_if_slurm(args, name="betons", log_dir=Path(args.out) / "slurm"):
        return 0
    from dejavu.ffcv.betons import BetonOptions, write_betons

    kinds = [k.strip() for k in args.sets.split(",") if k.strip()]
    opts = BetonOptions(
        max_res=args.max_res,
        quality=args.quality,
        write_mode=args.write_mode,
        workers=args.workers,
        periphery_search=args.periphery_search,
        min_crop_px=args.min_crop_px,
    )
    if args.force and args.skip_existing:
        raise UsageError("--force and --skip-existing together: choose one")
    paths = data_paths_from_args(args, need_bboxes="bbox" in kinds)
    written = write_betons(
        paths,
        args.partition,
        args.npc,
        args.out,
        opts,
        kinds=kinds,
        force=args.force,
        skip_existing=args.skip_existing,
    )
    for p in written:
        print(f"wrote {p}")
    print(f"{len(written)} beton(s) in {args.out}")
    return 0
