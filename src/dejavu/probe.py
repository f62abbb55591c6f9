"""Linear probe (DESIGN 2.7): a linear classifier on frozen features.

Trained on the partition's ``train_A`` of the given ``npc``, evaluated top-1/top-5
on the partition's class-balanced ``val_set``; the result is written as
``OUT/results.json`` (format ``dejavu-probe/1``, docs/CONTRACTS.md).

Decisions:

* The SSL model is frozen and kept in eval mode (its BatchNorm statistics are not
  updated), so the probe measures the representation, not a fine-tune.
* Head = ``BatchNorm1d(affine=False)`` + ``Linear`` (as in MAE's linear probing): the
  parameter-free normalisation makes one learning rate work for backbones whose
  feature scales differ by orders of magnitude (smallcnn vs ResNet, backbone vs
  projector). A BN without affine followed by a linear layer is still a linear
  classifier of the features.
* Optimiser: SGD momentum 0.9, weight decay 1e-6 and cosine schedule, with the head
  learning rate of VICReg's ``evaluate.py`` (0.3 at batch 256, scaled linearly).
* With augmentation (default, the paper's protocol) every epoch re-decodes and
  re-embeds ``RandomResizedCrop + flip`` views of train_A. Without augmentation
  (``augment=False``) train features are computed once with the evaluation
  transform and only the linear layer is trained on them: the fast path.
* Validation features always use the evaluation transform and are computed once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dejavu import DejavuError
from dejavu.io import locks_output

FORMAT = "dejavu-probe/1"


@dataclass
class ProbeResult:
    out: Path
    top1: float
    top5: float
    results: dict[str, Any] = field(repr=False)


def train_transform(image_size: int):
    """Probe training augmentation: RandomResizedCrop (default scale 0.08-1) + flip."""
    from torchvision import transforms as T

    from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return T.Compose([
        T.RandomResizedCrop(image_size, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _loader(ds, batch_size: int, shuffle: bool, workers: int, seed: int):
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                                       generator=g, drop_last=False,
                                       persistent_workers=workers > 0)


def _features(model, x, kind: str):
    return model.embed(x, kind)


def extract_features(model, loader, kind: str, device, desc: str):
    """Frozen features and labels for every item of ``loader`` (one pass)."""
    import torch

    from dejavu.utils import progress

    feats, labels = [], []
    with torch.no_grad():
        for x, y, _ in progress(loader, desc=desc, total=len(loader)):
            feats.append(_features(model, x.to(device, non_blocking=True), kind).float().cpu())
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest logits (k capped at #classes)."""
    import torch

    out = {}
    n = max(1, len(labels))
    for k in ks:
        kk = min(k, logits.shape[1])
        top = torch.topk(logits, kk, dim=1).indices
        out[k] = float((top == labels[:, None]).any(dim=1).sum().item() / n)
    return out


@locks_output("probe")
def probe(
    model_path: str | os.PathLike,
    partition: str | os.PathLike,
    npc: int,
    paths,
    out: str | os.PathLike,
    features: str = "backbone",
    epochs: int = 100,
    lr: float | None = None,
    batch_size: int = 256,
    augment: bool = True,
    device: str | None = None,
    weight_decay: float = 1e-6,
    workers: int = 0,
    seed: int = 0,
    image_size: int | None = None,
    arch: str | None = None,
    projector: str | None = None,
    force: bool = False,
) -> ProbeResult:
    """Train and evaluate a linear probe; writes ``out/results.json``.

    ``paths`` is a :class:`dejavu.data.DataPaths`. ``lr`` defaults to
    ``0.3 * batch_size / 256``. ``image_size`` defaults to the checkpoint's.
    """
    import torch
    from torch import nn

    from dejavu.data.dataset import IndexedImages
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.data.transforms import eval_transform
    from dejavu.io import atomic_write_json, check_can_write
    from dejavu.partition import Partition
    from dejavu.ssl.checkpoint import load_model
    from dejavu.utils import progress, seed_everything

    if features not in ("backbone", "projector"):
        raise DejavuError(f"--features: expected backbone or projector, got {features!r}")
    if epochs < 1:
        raise DejavuError(f"--epochs must be >= 1 (got {epochs})")
    if batch_size < 1:
        raise DejavuError(f"--batch-size must be >= 1 (got {batch_size})")
    out = Path(out)
    res_path = out / "results.json"
    check_can_write(res_path, force)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(seed)
    t0 = time.time()

    loaded = load_model(model_path, arch=arch, projector=projector)
    model = loaded.model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    image_size = int(image_size or loaded.config.get("image_size") or 224)

    part = Partition.load(partition)
    index = scan_imagefolder(paths.images)
    part.check(index)
    if loaded.fingerprint:
        index.fingerprint.check(loaded.fingerprint, what=f"checkpoint {model_path}")
    train_idx = part.load_set(int(npc), "train_A")
    val_idx = part.val_set()
    if len(train_idx) == 0:
        raise DejavuError(f"{part.root}: train_A of {npc}_per_class is empty")
    if len(val_idx) == 0:
        raise DejavuError(f"{part.root}/val_set.npy: empty validation set (no class has a public image)")
    num_classes = len(index.classes)

    ev = eval_transform(image_size)
    val_loader = _loader(IndexedImages(index, val_idx, ev, draft=True), batch_size, False, workers, seed)
    xv, yv = extract_features(model, val_loader, features, device, "probe: val features")
    dim = xv.shape[1]

    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, num_classes)).to(device)
    nn.init.normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    lr = float(lr if lr is not None else 0.3 * batch_size / 256)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    if augment:
        train_loader = _loader(IndexedImages(index, train_idx, train_transform(image_size)),
                               batch_size, True, workers, seed)
        steps_per_epoch = len(train_loader)
    else:
        xt, yt = extract_features(model, _loader(IndexedImages(index, train_idx, ev, draft=True), batch_size, False,
                                                 workers, seed), features, device, "probe: train features")
        steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    history = []
    for ep in progress(range(epochs), desc="probe: epochs", total=epochs):
        head.train()
        tot, n = 0.0, 0
        if augment:
            batches = ((_features(model, x.to(device), features).float(), y.to(device))
                       for x, y, _ in train_loader)
        else:
            perm = torch.randperm(len(xt), generator=gen)
            batches = ((xt[perm[i:i + batch_size]].to(device), yt[perm[i:i + batch_size]].to(device))
                       for i in range(0, len(xt), batch_size))
        for f, y in batches:
            if len(y) < 2:  # BatchNorm cannot normalise a batch of one in training mode
                continue
            loss = loss_fn(head(f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.item()) * len(y)
            n += len(y)
        history.append({"epoch": ep + 1, "loss": tot / max(1, n)})
    head.eval()
    with torch.no_grad():
        logits = torch.cat([head(xv[i:i + 4096].to(device)).cpu() for i in range(0, len(xv), 4096)])
    acc = topk_accuracy(logits, yv)

    cfg = loaded.config
    results = {
        "format": FORMAT,
        "config": {"npc": int(npc), "features": features, "epochs": int(epochs), "lr": lr,
                   "batch_size": int(batch_size), "augment": bool(augment), "weight_decay": weight_decay,
                   "image_size": image_size, "seed": int(seed), "partition": str(part.root),
                   "train_set": f"{npc}_per_class/train_A", "head": "bn(affine=False)+linear",
                   "optimizer": "sgd(momentum=0.9)+cosine"},
        "model": {"path": str(loaded.path), "sha256": loaded.sha256, "epoch": loaded.epoch,
                  "config": cfg, "source": loaded.source},
        "method": cfg.get("method"),
        "npc": int(cfg["npc"]) if cfg.get("npc") is not None else int(npc),
        "epoch": loaded.epoch,
        "top1": acc[1],
        "top5": acc[5],
        "counts": {"train": len(train_idx), "val": len(val_idx), "classes": num_classes,
                   "feature_dim": int(dim)},
        "history": history,
        "seconds": round(time.time() - t0, 2),
        "fingerprint": index.fingerprint.to_dict(),
    }
    atomic_write_json(res_path, results)
    return ProbeResult(out=out, top1=acc[1], top5=acc[5], results=results)


def register(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="linear probe on frozen features (top-1/top-5 on the validation set)",
        description="Train a linear classifier on frozen features of a checkpoint, on train_A of "
        "PARTITION/<npc>_per_class, and evaluate top-1/top-5 on PARTITION/val_set.npy (DESIGN 2.7). "
        "Writes OUT/results.json (format dejavu-probe/1) with the probe config, the checkpoint's "
        "path/sha256/epoch/config and the dataset fingerprint.",
    )
    from dejavu.data.imagefolder import add_data_args

    p.add_argument("--model", required=True, metavar="CKPT", help="checkpoint (ours, the original code's, or torchvision)")
    p.add_argument("--arch", help="architecture for checkpoints without a stored config (e.g. resnet50)")
    p.add_argument("--projector", help="projector spec for checkpoints without a stored config (e.g. 8192-8192-8192)")
    p.add_argument("--partition", required=True, metavar="P", help="partition folder (holding manifest.json)")
    p.add_argument("--npc", type=int, required=True, help="images per class: the probe trains on <npc>_per_class/train_A")
    add_data_args(p)
    p.add_argument("--out", required=True, help="output folder (results.json goes there)")
    p.add_argument("--features", choices=["backbone", "projector"], default="backbone",
                   help="which frozen features the probe reads (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=100, help="probe training epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="SGD learning rate (default: 0.3 * batch-size / 256)")
    p.add_argument("--weight-decay", type=float, default=1e-6, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="(default: %(default)s)")
    p.add_argument("--augment", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="random resized crop + flip on train_A (default). --no-augment computes the "
                   "features once and trains only the linear layer on them (fast)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the checkpoint's, else 224)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT/results.json")
    from dejavu.launch import add_launcher_args

    add_launcher_args(p, gpus_per_node=1)
    p.set_defaults(func=_cmd)


def _kwargs(args, paths) -> dict[str, Any]:
    return {"model_path": args.model, "partition": args.partition, "npc": args.npc, "paths": paths, "out": args.out,
                "features": args.features, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
                "augment": args.augment, "device": args.device, "weight_decay": args.weight_decay, "workers": args.workers,
                "seed": args.seed, "image_size": args.image_size, "arch": args.arch, "projector": args.projector,
                "force": args.force}


def _cmd(args) -> int:
    from dejavu.data.imagefolder import data_paths_from_args
    from dejavu.io import check_can_write

    paths = data_paths_from_args(args)
    kw = _kwargs(args, paths)
    from dejavu.launch import submit_if_slurm

    check_can_write(Path(args.out) / "results.json", args.force)
    if submit_if_slurm(args, name="probe", log_dir=Path(args.out) / "slurm"):
        return 0
    from dejavu.utils import set_torch_threads

    set_torch_threads()
    res = probe(**kw)
    print(f"linear probe ({args.features}): top-1 {res.top1:.4f}  top-5 {res.top5:.4f}  -> {res.out / 'results.json'}")
    return 0
