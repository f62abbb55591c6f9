"""``dejavu audit``: thin CLI over :func:`dejavu.audit.run.audit`."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
The one-model deja vu test (Kokhlikyan et al. 2024, DejaVuOSS): audit ONE model, e.g. a
released checkpoint, without training a reference twin. A crop classifier learns to
predict the object's class from the background crop alone, on images other than the
audited ones (the classifier's set, bbox_B by default); it measures what correlation
alone gives. The audited model's KNN attack (DESIGN 2.3-2.4) and the classifier then
label the same background crops of the audited set (bbox_A by default):
  population test: accuracy of each one's 20% most confident, model minus classifier;
  sample test: memorized = model right and classifier wrong, correlated = both right.
Writes OUT/results.json (format dejavu-audit/1, the attack's metrics block, 95% bootstrap
CIs), OUT/examples.csv, the arrays, and OUT/classifier/ (snapshots, last.pth, metrics).

Configuration: --config names a YAML file or a packaged config (synth: a small CNN, the
default; imagenet: a ResNet-50 from scratch as the follow-up work); --set key=value
overrides any field (clf_epochs, clf_lr, clf_arch, confidence, k, audit_set, ...);
--set classifier=dejavuoss trains the follow-up work's classifier instead of ours (a
ResNet-50 with one Linear head on JPEG centre squares, SSL augmentations, LARS; any
--set clf_... still wins). A model saying no control is audited against is an upper bound.
"""

EPILOG = """\
examples:
  dejavu audit --model runs/demo/train/vicreg_10pc_A/model_ep300.pth --partition runs/demo/partition \\
      --npc 10 --data runs/demo/data --out runs/audit_A --set k=20
  dejavu audit --config imagenet --model vicreg_resnet50.pth --arch resnet50 --projector 8192-8192-8192 \\
      --partition part --npc 300 --images $IMAGENET/train --bboxes $IMAGENET/bboxes --out audits/vicreg \\
      --launcher slurm --gpus-per-node 1 --time 2880
  dejavu audit --config imagenet --model dino_vitbase16_pretrain.pth --image-size 224 \\
      --set classifier=dejavuoss --classifiers 2 --control $IMAGENET/val \\
      --partition part --npc 300 --images $IMAGENET/train --bboxes $IMAGENET/bboxes --out audits/dino_vitb16
"""


def register(sub) -> None:
    from dejavu.data.imagefolder import add_data_args
    from dejavu.launch import add_launcher_args

    p = sub.add_parser(
        "audit",
        help="one-model deja vu test of a single checkpoint (crop classifier as reference)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="the checkpoint to audit (ours, the original code's, a torchvision ResNet or ViT, a DINO/DINOv2/iBOT/MAE/MoCo v3 "
        "release...), or a timm / torch.hub model name whose weights are already in the local cache (never downloaded)",
    )
    p.add_argument("--partition", required=True, metavar="P", help="partition folder (holding manifest.json)")
    add_data_args(p, need_bboxes=False)
    p.add_argument("--out", required=True, metavar="AUDIT_DIR", help="output folder")
    from dejavu.audit.config import AUDIT_FLAGS, AuditConfig
    from dejavu.config import add_config_args

    add_config_args(p, AuditConfig, flags=AUDIT_FLAGS, kind="audit", title="audit settings (AuditConfig)")
    p.add_argument(
        "--reference-model",
        default=None,
        metavar="CKPT",
        help="a crop classifier trained elsewhere (e.g. OUT/classifier/classifier.pth of an earlier audit) "
        "instead of training one",
    )
    p.add_argument(
        "--control",
        default="auto",
        metavar="auto|none|partition|VAL_DIR",
        help="held-out control audited by the same model and classifier (images neither trained on): "
        "'partition' = the partition's control.npy less the classifier's training images, or a folder "
        "of annotated validation images; default auto: the partition's control when it has one and "
        "the checkpoint records its training set. Reports the excess of the score over it",
    )
    p.add_argument(
        "--control-bboxes",
        default=None,
        metavar="DIR",
        help="box files of the --control validation images (default: the --control folder)",
    )
    p.add_argument("--cache-dir", default=None, help="public-embedding cache (default OUT/../.embed_cache; '' = off)")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted classifier training in OUT/classifier"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing audit and retrain the classifier")
    add_launcher_args(p, gpus_per_node=1)
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from dejavu.audit.config import AUDIT_FLAGS, AuditConfig, apply_classifier_preset
    from dejavu.config import config_from_args, parse_sets
    from dejavu.launch import submit_if_slurm

    cfg = config_from_args(AuditConfig, args, flags=AUDIT_FLAGS, kind="audit")  # validated before any submission
    explicit = set(parse_sets(args.set)) | {k for k in AUDIT_FLAGS if getattr(args, k, None) is not None}
    cfg = apply_classifier_preset(cfg, explicit)
    if submit_if_slurm(args, name="audit", log_dir=Path(args.out) / "slurm", resume_flag="--resume"):
        return 0
    from dejavu.audit.run import audit, summary_text
    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.utils import set_torch_threads

    set_torch_threads()
    paths = data_paths_from_args(args, need_bboxes=cfg.crop == "periphery")
    r = audit(
        args.model,
        args.partition,
        paths,
        args.out,
        cfg,
        force=args.force,
        resume=args.resume,
        reference_model=args.reference_model,
        cache_dir=args.cache_dir,
        control=args.control,
        control_bboxes=args.control_bboxes,
    )
    from dejavu.attack.dist import is_main

    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(summary_text(r.results))
    print(f"written to {r.out}")
    return 0
