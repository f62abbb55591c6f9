"""Linear probe: a linear classifier on a checkpoint's frozen features (docs/DESIGN.md 2.7).

Trained on the partition's ``train_A`` of ``npc``, evaluated top-1/top-5 on its ``val_set``;
writes ``OUT/results.json`` (``dejavu-probe/1``, docs/CONTRACTS.md) with the settings as given
(:class:`ProbeConfig`) and what they resolved to. A recipe (:data:`RECIPES`) fixes the head,
optimizer, schedule and training view; the checkpoint's ``probe_recipe`` picks it unless
``recipe=`` does. The model stays in eval mode (its BatchNorm statistics are not updated), so
the probe measures the representation; differences from the original: docs/DESIGN.md 7.1.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dejavu import DejavuError, formats
from dejavu.config import add_config_args, check_choices, config_from_args, from_dict, to_dict
from dejavu.data.dataset import IndexedImages
from dejavu.data.fastjpeg import DECODE_HELP, DECODES
from dejavu.data.imagefolder import DatasetIndex, add_data_args, data_paths_from_args, scan_imagefolder
from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from dejavu.device import choose_device
from dejavu.io import atomic_write_json, check_can_write, locks_output
from dejavu.launch import add_launcher_args, submit_if_slurm
from dejavu.partition import Partition
from dejavu.ssl.augment import original_probe_view
from dejavu.utils import progress, seed_everything, set_torch_threads

if TYPE_CHECKING:
    from dejavu.ssl.checkpoint import LoadedModel
    from dejavu.ssl.model import SSLModel

FORMAT = formats.PROBE
FEATURES = ("backbone", "projector")


@dataclass(frozen=True)
class ProbeRecipe:
    """Every setting of a linear-probe recipe."""

    name: str
    head: str  # "linear" | "bn-linear"
    epochs: int
    batch_size: int
    lr: float | None  # None: 0.3 * batch_size / 256
    end_lr: float  # the linear schedule's final lr (unused by cosine)
    schedule: str  # "linear-every-50" (the original's staircase) | "cosine"
    weight_decay: float
    train_view: str  # "original" (lin_probe.py's TrainTransform view 2) | "crop-flip"


# ``original``: the original code's ``lin_probe.py`` as its sweep scripts run it: ``nn.Linear``
# (PyTorch's default init), SGD momentum 0.9 without weight decay, lr 10 decayed linearly to 0.1
# (set every 50 steps, as the original: a staircase), batch 64, 20 epochs, the second view of its
# ``TrainTransform`` (bicubic random-resized crop, flip, colour jitter p 0.8, greyscale p 0.2,
# solarization p 0.2); the default of the paper configs and of the original code's checkpoints.
# ``bn-cosine``: ``BatchNorm1d(affine=False)`` + ``Linear`` (MAE's linear probing: the parameter-free
# normalisation makes one lr fit features whose scales differ by orders of magnitude; still linear
# in the features), SGD momentum 0.9, weight decay 1e-6, lr 0.3 x batch/256, cosine, batch 256,
# 100 epochs, random-resized crop + flip; the default of the synthetic configs.
RECIPES: dict[str, ProbeRecipe] = {
    "original": ProbeRecipe("original", "linear", 20, 64, 10.0, 0.1, "linear-every-50", 0.0, "original"),
    "bn-cosine": ProbeRecipe("bn-cosine", "bn-linear", 100, 256, None, 0.0, "cosine", 1e-6, "crop-flip"),
}


@dataclass
class ProbeConfig:
    """The settings of one probe run; None = the recipe's (or the checkpoint's) value."""

    features: str = field(
        default="backbone", metadata={"help": "which frozen features the probe reads", "choices": FEATURES}
    )
    recipe: str | None = field(
        default=None,
        metadata={
            "choices": tuple(RECIPES),
            "help": "probe recipe: original (lin_probe.py: Linear, SGD lr 10->0.1, batch 64, 20 epochs, no weight "
            "decay, jitter/greyscale/solarization views) or bn-cosine (BN+Linear, cosine, batch 256, 100 "
            "epochs, crop+flip); None = the checkpoint's probe_recipe (original for the paper configs and "
            "the original code's checkpoints, bn-cosine for the synthetic ones)",
        },
    )
    epochs: int | None = field(default=None, metadata={"help": "probe training epochs; None = the recipe's"})
    lr: float | None = field(default=None, metadata={"help": "SGD learning rate; None = the recipe's"})
    batch_size: int | None = field(default=None, metadata={"help": "None = the recipe's"})
    weight_decay: float | None = field(default=None, metadata={"help": "None = the recipe's"})
    augment: bool = field(
        default=True,
        metadata={
            "help": "train on the recipe's augmented views of train_A; --no-augment computes the features once "
            "and trains only the linear layer on them (fast)"
        },
    )
    image_size: int | None = field(default=None, metadata={"help": "input size; None = the checkpoint's, else 224"})
    workers: int = field(default=0, metadata={"help": "data loading processes"})
    seed: int = field(default=0, metadata={"help": "seed of the head's init and the batch order"})
    decode: str = field(
        default="exact",
        metadata={"choices": DECODES, "help": "decoding of the evaluation-transform images (features): " + DECODE_HELP},
    )

    def validate(self) -> None:
        check_choices(self)  # features, recipe, decode: a bad name fails before the model is loaded
        for name in ("epochs", "batch_size", "image_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DejavuError(f"{name}={v}: must be >= 1")
        if self.workers < 0:
            raise DejavuError(f"workers={self.workers}: must be >= 0")


@dataclass
class ProbeResult:
    out: Path
    top1: float
    top5: float
    results: dict[str, Any] = field(repr=False)


def default_recipe(config: dict[str, Any] | None, source: str) -> str:
    """The checkpoint's ``probe_recipe``; else ``original`` for checkpoints not made by
    dejavu (the original code's, torchvision's) and ``bn-cosine`` for older dejavu ones.

    Args:
        config: the checkpoint's stored config, or None.
        source: the checkpoint's layout (``"dejavu"`` for ours).

    Returns:
        A key of :data:`RECIPES`.
    """
    name = (config or {}).get("probe_recipe")
    if name in RECIPES:
        return str(name)
    return "bn-cosine" if source == "dejavu" else "original"


def resolve_recipe(
    name: str,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
) -> ProbeRecipe:
    """A recipe with overrides.

    Args:
        name: a key of :data:`RECIPES`.
        epochs: training epochs (None keeps the recipe's).
        lr: base learning rate (None keeps the recipe's).
        batch_size: batch size (None keeps the recipe's).
        weight_decay: weight decay (None keeps the recipe's).

    Returns:
        ``RECIPES[name]`` with the overrides, its lr made explicit (0.3 x batch / 256 when None).

    Raises:
        DejavuError: an unknown recipe, or epochs / batch size < 1.
    """
    if name not in RECIPES:
        raise DejavuError(f"--recipe: unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    r = RECIPES[name]
    kw: dict[str, Any] = {
        k: v
        for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size), ("weight_decay", weight_decay))
        if v is not None
    }
    r = replace(r, **kw)
    if r.epochs < 1:
        raise DejavuError(f"--epochs must be >= 1 (got {r.epochs})")
    if r.batch_size < 1:
        raise DejavuError(f"--batch-size must be >= 1 (got {r.batch_size})")
    return r if r.lr is not None else replace(r, lr=0.3 * r.batch_size / 256)


def recipe_lr(r: ProbeRecipe, step: int, total: int) -> float:
    """The lr of 0-based ``step`` of ``total``. ``linear-every-50`` is the original's rule:
    after step ``ct`` with ``(ct + 1) % 50 == 0`` it sets ``lr = start (1 - ct/n) + end ct/n``.

    Args:
        r: the recipe (its ``lr`` resolved, see :func:`resolve_recipe`).
        step: 0-based optimizer step.
        total: total steps of the run.

    Returns:
        The learning rate (``cosine``: half-cosine from ``lr`` to 0 over ``total``).
    """
    start = float(r.lr)  # type: ignore[arg-type]
    if r.schedule == "cosine":
        return start * (1 + math.cos(math.pi * min(step, total) / max(1, total))) / 2
    if step < 50:
        return start
    ct = 50 * (step // 50) - 1
    return start * (1 - ct / total) + r.end_lr * (ct / total)


def train_transform(image_size: int, view: str = "crop-flip"):
    """Probe training augmentation: the original's view, or RandomResizedCrop(0.08-1) + flip.

    Args:
        image_size: output side in pixels.
        view: ``"original"`` (the original code's probe view); anything else gives the
            crop-and-flip view.

    Returns:
        A torchvision transform from a PIL image to a normalized (3, size, size) tensor.
    """
    if view == "original":
        return original_probe_view(image_size)
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(image_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _loader(ds, batch_size: int, shuffle: bool, workers: int, seed: int):
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=g,
        drop_last=False,
        persistent_workers=workers > 0,
    )


def extract_features(model, loader, kind: str, device, desc: str):
    """Frozen features of every item of ``loader`` (one pass, no gradient).

    Args:
        model: the frozen :class:`~dejavu.ssl.model.SSLModel`.
        loader: yields ``(x, label, index)`` batches.
        kind: ``backbone`` | ``projector`` | ``logits``.
        device: where the model is.
        desc: progress label.

    Returns:
        ``(features (n, d) float32 on the CPU, labels (n,))``.
    """
    import torch

    feats, labels = [], []
    with torch.no_grad():
        for x, y, _ in progress(loader, desc=desc, total=len(loader)):
            feats.append(model.embed(x.to(device, non_blocking=True), kind).float().cpu())
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict[int, float]:
    """Top-k accuracies.

    Args:
        logits: ``(n, classes)``.
        labels: ``(n,)``.
        ks: the k's (each capped at the number of classes).

    Returns:
        ``{k: fraction of rows whose label is among the k highest logits}``.
    """
    import torch

    out = {}
    n = max(1, len(labels))
    for k in ks:
        kk = min(k, logits.shape[1])
        top = torch.topk(logits, kk, dim=1).indices
        out[k] = float((top == labels[:, None]).any(dim=1).sum().item() / n)
    return out


@dataclass
class _Inputs:
    loaded: LoadedModel
    model: SSLModel  # eval mode, frozen
    part: Partition
    index: DatasetIndex
    train_idx: np.ndarray
    val_idx: np.ndarray
    image_size: int


def _load_inputs(model_path, partition, npc: int, paths, device, image_size, arch, projector) -> _Inputs:
    """The frozen model (eval mode), the partition's train_A and val set, checked."""
    from dejavu.ssl.checkpoint import load_model

    loaded = load_model(model_path, arch=arch, projector=projector)
    model = loaded.model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    part = Partition.load(partition)
    index = scan_imagefolder(paths.images)
    part.check(index)
    loaded.check_dataset(index)
    train_idx = part.load_set(int(npc), "train_A")
    val_idx = part.val_set()
    if len(train_idx) == 0:
        raise DejavuError(f"{part.root}: train_A of {npc}_per_class is empty")
    if len(val_idx) == 0:
        raise DejavuError(f"{part.root}/val_set.npy: empty validation set (no class has a public image)")
    size = int(image_size or loaded.config.get("image_size") or 224)
    return _Inputs(loaded, model, part, index, train_idx, val_idx, size)


def shared_features(inp: _Inputs, idx, cfg: ProbeConfig, batch_size: int, device, desc: str):
    """:func:`extract_features` of images ``idx`` (evaluation transform); under torchrun
    each rank embeds a contiguous run of whole batches
    (:func:`dejavu.attack.dist.batch_bounds`: each forward is one a single process runs) and
    rank 0 gets them all (the others: ``(n, 0)``), so rank 0's features are a single
    process's, bit for bit.

    Returns:
        ``(features (n, d) float32 on the CPU, labels (n,))``.
    """
    import torch

    from dejavu.attack import dist

    def run(rows):
        ds = IndexedImages(inp.index, rows, eval_transform(inp.image_size), draft=cfg.decode == "draft")
        loader = _loader(ds, batch_size, False, cfg.workers, cfg.seed)
        return extract_features(inp.model, loader, cfg.features, device, desc)

    bounds = dist.batch_bounds(len(idx), batch_size)
    if len(bounds) == 1:
        return run(idx)
    lo, hi = bounds[dist.current().rank]
    local = run(idx[lo:hi])[0].numpy() if hi > lo else np.zeros((0, 0), np.float32)
    full = dist.gather(dist.sharded(local, bounds))
    return torch.from_numpy(full), torch.as_tensor(np.asarray(inp.index.targets)[np.asarray(idx)], dtype=torch.int64)


def _make_head(r: ProbeRecipe, dim: int, num_classes: int, device):
    from torch import nn

    if r.head == "linear":  # the original: nn.Linear with PyTorch's default init
        return nn.Linear(dim, num_classes).to(device)
    linear = nn.Linear(dim, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False), linear).to(device)


def _train_batches(inp: _Inputs, r: ProbeRecipe, features: str, device, workers: int, seed: int, train=None):
    """(one epoch's batch iterator factory, steps per epoch); ``train``: the train features
    and labels (without augmentation), else the recipe's view is embedded every epoch."""
    import torch

    if train is None:
        dl = _loader(
            IndexedImages(inp.index, inp.train_idx, train_transform(inp.image_size, r.train_view)),
            r.batch_size,
            True,
            workers,
            seed,
        )
        return (lambda: ((inp.model.embed(x.to(device), features).float(), y.to(device)) for x, y, _ in dl)), len(dl)
    xt, yt = train
    gen = torch.Generator().manual_seed(seed)

    def epoch():
        perm = torch.randperm(len(xt), generator=gen)
        return (
            (xt[perm[i : i + r.batch_size]].to(device), yt[perm[i : i + r.batch_size]].to(device))
            for i in range(0, len(xt), r.batch_size)
        )

    return epoch, (len(xt) + r.batch_size - 1) // r.batch_size


def _train_head(head, r: ProbeRecipe, epoch_batches, steps_per_epoch: int) -> list[dict[str, float]]:
    """SGD (momentum 0.9) on the head at :func:`recipe_lr`; the per-epoch mean loss."""
    import torch
    from torch import nn

    opt = torch.optim.SGD(head.parameters(), lr=recipe_lr(r, 0, 1), momentum=0.9, weight_decay=r.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    total, step, history = r.epochs * steps_per_epoch, 0, []
    for ep in progress(range(r.epochs), desc="probe: epochs", total=r.epochs):
        head.train()
        tot, n = 0.0, 0
        for f, y in epoch_batches():
            if len(y) < 2 and r.head == "bn-linear":  # BatchNorm cannot normalise a batch of one
                continue
            for g in opt.param_groups:
                g["lr"] = recipe_lr(r, step, total)
            loss = loss_fn(head(f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot += float(loss.item()) * len(y)
            n += len(y)
        history.append({"epoch": ep + 1, "loss": tot / max(1, n)})
    return history


def _lock_folder(a: dict[str, Any]) -> Any:
    from dejavu.attack.dist import is_main

    return a["out"] if is_main() else None  # torchrun: rank 0 writes, rank 0 locks


@locks_output("probe", folder_of=_lock_folder)
def _probe(
    model_path: str | os.PathLike,
    partition: str | os.PathLike,
    npc: int,
    paths: Any,
    out: str | os.PathLike,
    cfg: ProbeConfig | None = None,
    *,
    device: str | None = None,
    arch: str | None = None,
    projector: str | None = None,
    force: bool = False,
    **settings: Any,
) -> ProbeResult:
    """Train and evaluate a linear probe; writes ``out/results.json``.

    Args:
        model_path: checkpoint (ours, the original code's, torchvision's).
        partition: the partition folder; the probe is scored on its ``val_set``.
        npc: the probe trains on ``<npc>_per_class/train_A``.
        paths: a :class:`dejavu.data.DataPaths`.
        out: output folder.
        cfg: the probe's settings (default: :class:`ProbeConfig`'s).
        device: cpu | cuda | cuda:N (default: cuda when available).
        arch: backbone, for checkpoints without a stored config.
        projector: projector spec, for checkpoints without a stored config.
        force: overwrite an existing ``out/results.json``.
        **settings: :class:`ProbeConfig` fields overriding ``cfg``'s (``epochs=2, augment=False``).

    Returns:
        A :class:`ProbeResult` (top-1, top-5 and the results.json content).
    """
    import torch

    from dejavu.attack import dist

    cfg = from_dict(ProbeConfig, {**to_dict(cfg or ProbeConfig()), **settings}, source="probe settings")
    res_path = Path(out) / "results.json"
    check_can_write(res_path, force)
    dev = choose_device(device, dist.current().local_rank)  # torchrun: each rank its GPU
    seed_everything(cfg.seed)
    t0 = time.time()
    inp = _load_inputs(model_path, partition, npc, paths, dev, cfg.image_size, arch, projector)
    r = resolve_recipe(
        cfg.recipe or default_recipe(inp.loaded.config, inp.loaded.source),
        cfg.epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.weight_decay,
    )
    fit = _fit(inp, r, cfg, dev)
    if fit is None:  # torchrun: the other ranks' part ends with the feature passes
        return ProbeResult(out=Path(out), top1=float("nan"), top5=float("nan"), results={})
    xv, yv, head, history = fit
    head.eval()
    with torch.no_grad():
        logits = torch.cat([head(xv[i : i + 4096].to(dev)).cpu() for i in range(0, len(xv), 4096)])
    acc = topk_accuracy(logits, yv)
    results = _results(inp, r, npc, cfg, acc, history, int(xv.shape[1]), time.time() - t0)
    atomic_write_json(res_path, results)
    return ProbeResult(out=Path(out), top1=acc[1], top5=acc[5], results=results)


def _fit(
    inp: _Inputs, r: ProbeRecipe, cfg: ProbeConfig, dev: Any
) -> tuple[Any, Any, Any, list[dict[str, float]]] | None:
    """Validation features (computed once), the head trained on train_A: (xv, yv, head, history).
    Under torchrun the ranks share the feature passes (:func:`shared_features`) and rank 0
    trains the head; the other ranks get None."""
    from dejavu.attack import dist

    xv, yv = shared_features(inp, inp.val_idx, cfg, r.batch_size, dev, "probe: val features")
    train = None
    if not cfg.augment:  # the fast path: train features computed once
        train = shared_features(inp, inp.train_idx, cfg, r.batch_size, dev, "probe: train features")
    if not dist.is_main():
        return None
    head = _make_head(r, xv.shape[1], len(inp.index.classes), dev)
    batches, steps = _train_batches(inp, r, cfg.features, dev, cfg.workers, cfg.seed, train)
    return xv, yv, head, _train_head(head, r, batches, steps)


def _results(
    inp: _Inputs,
    r: ProbeRecipe,
    npc: int,
    settings: ProbeConfig,
    acc: dict[int, float],
    history: list,
    dim: int,
    seconds: float,
) -> dict[str, Any]:
    cfg, loaded = inp.loaded.config, inp.loaded
    features, augment, seed = settings.features, settings.augment, settings.seed
    head = "linear" if r.head == "linear" else "bn(affine=False)+linear"
    sched = f"linear {r.lr}->{r.end_lr}, set every 50 steps" if r.schedule == "linear-every-50" else "cosine"
    return {
        "format": FORMAT,
        "settings": asdict(settings),
        "config": {
            "npc": int(npc),
            "features": features,
            "recipe": r.name,
            "epochs": int(r.epochs),
            "lr": r.lr,
            "end_lr": r.end_lr if r.schedule != "cosine" else None,
            "schedule": r.schedule,
            "batch_size": int(r.batch_size),
            "augment": bool(augment),
            "train_view": r.train_view,
            "weight_decay": r.weight_decay,
            "image_size": inp.image_size,
            "seed": int(seed),
            "decode": settings.decode,
            "partition": str(inp.part.root),
            "train_set": f"{npc}_per_class/train_A",
            "head": head,
            "optimizer": f"sgd(momentum=0.9)+{sched}",
            "recipe_settings": asdict(r),
        },
        "model": {
            "path": str(loaded.path),
            "sha256": loaded.sha256,
            "epoch": loaded.epoch,
            "config": cfg,
            "source": loaded.source,
        },
        "method": cfg.get("method"),
        "npc": int(cfg["npc"]) if cfg.get("npc") is not None else int(npc),
        "epoch": loaded.epoch,
        "top1": acc[1],
        "top5": acc[5],
        "counts": {
            "train": len(inp.train_idx),
            "val": len(inp.val_idx),
            "classes": len(inp.index.classes),
            "feature_dim": dim,
        },
        "history": history,
        "seconds": round(seconds, 2),
        "fingerprint": inp.index.fingerprint.to_dict(),
    }


@functools.wraps(_probe)
def probe(*args: Any, **kwargs: Any) -> ProbeResult:
    # under torchrun / SLURM tasks the ranks share the feature passes; rank 0
    # trains the head and writes
    from dejavu.attack import dist

    dist.setup(kwargs.get("device"))
    res = _probe(*args, **kwargs)
    dist.finish()  # the other ranks wait for rank 0's file
    return res


PROBE_FLAGS = (
    "features",
    "recipe",
    "epochs",
    "lr",
    "weight_decay",
    "batch_size",
    "augment",
    "image_size",
    "workers",
    "seed",
    "decode",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe",
        help="linear probe on frozen features (top-1/top-5 on the validation set)",
        description="Train a linear classifier on frozen features of a checkpoint, on train_A of "
        "PARTITION/<npc>_per_class, and evaluate top-1/top-5 on PARTITION/val_set.npy (DESIGN 2.7). "
        f"Writes OUT/results.json (format {FORMAT}) with the probe settings and what they resolved to, "
        "the checkpoint's path/sha256/epoch/config and the dataset fingerprint.",
    )
    p.add_argument(
        "--model", required=True, metavar="CKPT", help="checkpoint (ours, the original code's, or torchvision)"
    )
    p.add_argument("--arch", help="architecture for checkpoints without a stored config (e.g. resnet50)")
    p.add_argument("--projector", help="projector spec for checkpoints without a stored config (e.g. 8192-8192-8192)")
    p.add_argument("--partition", required=True, metavar="P", help="partition folder (holding manifest.json)")
    p.add_argument(
        "--npc", type=int, required=True, help="images per class: the probe trains on <npc>_per_class/train_A"
    )
    add_data_args(p)
    p.add_argument("--out", required=True, help="output folder (results.json goes there)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="overwrite an existing OUT/results.json")
    add_config_args(p, ProbeConfig, flags=PROBE_FLAGS)
    add_launcher_args(p, gpus_per_node=1)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    cfg = config_from_args(ProbeConfig, args, flags=PROBE_FLAGS)  # validated before submitting
    paths = data_paths_from_args(args)
    check_can_write(Path(args.out) / "results.json", args.force)
    if submit_if_slurm(args, name="probe", log_dir=Path(args.out) / "slurm"):
        return 0
    set_torch_threads()
    from dejavu.attack.dist import is_main

    res = probe(
        args.model,
        args.partition,
        args.npc,
        paths,
        args.out,
        cfg,
        device=args.device,
        arch=args.arch,
        projector=args.projector,
        force=args.force,
    )
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(
        f"linear probe ({cfg.features}, recipe {res.results['config']['recipe']}): top-1 {res.top1:.4f}  "
        f"top-5 {res.top5:.4f}  -> {res.out / 'results.json'}"
    )
    return 0
