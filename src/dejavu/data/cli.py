"""``dejavu data synth`` and ``dejavu data info``."""

from __future__ import annotations

import os

from dejavu import DejavuError


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: synth (generate the default), info", description="Dataset tools.")
    dsub = p.add_subparsers(dest="data_cmd", metavar="{synth,info}")
    dsub.required = True

    s = dsub.add_parser(
        "synth",
        help="write the synthetic dataset (ImageNet layout: JPEG + VOC XML)",
        description="Generate the embedded default dataset in ImageNet's exact layout: "
        "OUT/train/<wnid>/<wnid>_<n>.JPEG and OUT/bboxes/Annotation/<wnid>/<wnid>_<n>.xml. "
        "Deterministic in its arguments.",
    )
    s.add_argument("--out", required=True, help="output folder")
    from dejavu.config import add_config_args
    from dejavu.data.synth import SYNTH_FLAGS, SynthConfig

    add_config_args(s, SynthConfig, flags=SYNTH_FLAGS, title="dataset settings (SynthConfig)")
    s.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes (output does not depend on it; default: %(default)s)",
    )
    s.add_argument("--force", action="store_true", help="overwrite an existing dataset folder")
    s.set_defaults(func=_synth)

    i = dsub.add_parser(
        "info",
        help="classes, counts, annotated fraction and fingerprint of a dataset",
        description="Describe an ImageNet-layout dataset.",
    )
    i.add_argument("root", nargs="?", help="dataset root (with train/ and bboxes/) or an ImageFolder")
    from dejavu.data.imagefolder import add_data_args

    add_data_args(i)
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_info)


def _synth(args) -> int:
    from dejavu.config import config_from_args
    from dejavu.data.synth import SYNTH_FLAGS, SynthConfig, generate

    cfg = config_from_args(SynthConfig, args, flags=SYNTH_FLAGS)
    out = generate(args.out, cfg, force=args.force, workers=args.workers)
    n = cfg.classes * cfg.per_class
    print(
        f"wrote {n} images ({cfg.classes} classes x {cfg.per_class}, {cfg.size}px, "
        f"{int(round(cfg.annotated_fraction * cfg.per_class)) * cfg.classes} annotated) to {out}"
    )
    return 0


def describe(paths) -> dict:
    from dejavu.data.imagefolder import annotated_mask, scan_imagefolder

    index = scan_imagefolder(paths.images)
    ann = annotated_mask(index, paths.annotation_dir)
    import numpy as np

    counts = np.bincount(index.targets, minlength=len(index.classes))
    return {
        "images": str(paths.images),
        "bboxes": str(paths.bboxes) if paths.bboxes else None,
        "num_classes": len(index.classes),
        "num_images": len(index),
        "per_class": {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())},
        "num_annotated": int(ann.sum()),
        "annotated_fraction": float(ann.mean()),
        "first_classes": index.classes[:5],
        "fingerprint": index.fingerprint.to_dict(),
    }


def _info(args) -> int:
    from dejavu.data.imagefolder import DataPaths
    from dejavu.io import to_json

    if args.root and (args.data or args.images):
        raise DejavuError("data info: give either ROOT or --data/--images, not both")
    if args.root:
        from pathlib import Path

        r = Path(args.root)
        paths = DataPaths.resolve(data=r) if (r / "train").is_dir() else DataPaths.resolve(images=r, bboxes=args.bboxes)
    else:
        paths = DataPaths.resolve(args.data, args.images, args.bboxes)
    d = describe(paths)
    if args.json:
        print(to_json(d), end="")
        return 0
    fp = d["fingerprint"]
    print(f"images       {d['images']}")
    print(f"bboxes       {d['bboxes'] or '-'}")
    print(f"classes      {d['num_classes']} ({', '.join(d['first_classes'])}{', ...' if d['num_classes'] > 5 else ''})")
    pc = d["per_class"]
    print(f"images       {d['num_images']} ({pc['min']}-{pc['max']} per class, mean {pc['mean']:.1f})")
    print(f"annotated    {d['num_annotated']} ({100 * d['annotated_fraction']:.1f}%)")
    print(f"fingerprint  {fp['id']} (paths sha256 {fp['paths_sha256'][:12]}...)")
    return 0
