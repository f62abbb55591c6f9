"""The crop classifier: a supervised network predicting the object's class from the
background crop alone (the one-model test's reference; DejaVuOSS ``train_SSL_crops.py``).

The network is an :class:`dejavu.ssl.model.SSLModel` with a classifier head (backbone,
optional projector, BN-ReLU-Linear), so the final checkpoint is an ordinary
``dejavu-ckpt/1`` file that :func:`dejavu.ssl.checkpoint.load_model` reads back
(``--reference-model``). Training folder ``OUT/classifier/``:

    last.pth          resume state (model, optimizer, epoch, held-out split), every epoch
    model_ep{E}.pth   snapshots every ``clf_snapshot_every`` epochs
    classifier.pth    the final classifier (written last: its presence marks a finished run)
    metrics.jsonl     loss, train accuracy, held-out accuracy per epoch

Resume is exact on the CPU: the batch order and the augmentations of epoch ``e`` are drawn
from generators seeded with ``(seed, e)`` (data loading in the main process when workers=0).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dejavu import DejavuError, formats
from dejavu.analysis.metrics import Scores, scores_from_logits
from dejavu.attack.embed import ImageCrops, default_workers
from dejavu.audit.config import AuditConfig
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from dejavu.io import atomic_torch_save, atomic_write_text, safe_torch_load
from dejavu.ssl.model import ModelSpec, SSLModel
from dejavu.ssl.optim import build_optimizer, lr_at, set_lr
from dejavu.utils import progress

CLASSIFIER_METHOD = "crop-classifier"


@dataclass
class CropSet:
    """Crops of the classifier's images: global indices, PIL boxes and labels."""

    indices: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    images: list | None = None  # decoded PIL crops (clf_cache_crops), else read from disk


@dataclass
class ClassifierResult:
    """What :func:`train_classifier` returns."""

    path: Path  # classifier.pth
    info: dict[str, Any]  # held-out accuracy, sizes, epochs


def holdout_split(labels: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (train, held-out): ``round(frac * n_c)`` of each class held out (at least
    one where a class has two or more crops and ``frac > 0``, never all of a class).

    Args:
        labels: the class of each crop.
        frac: share of each class held out, in [0, 1) (``clf_holdout``; 0: none).
        seed: seed of the per-class permutation.

    Returns:
        (training positions, held-out positions) into ``labels``, each sorted.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        pos = rng.permutation(np.nonzero(labels == c)[0])
        n_h = round(frac * len(pos))
        if frac > 0 and len(pos) >= 2:
            n_h = min(max(1, n_h), len(pos) - 1)
        held.append(pos[:n_h])
        train.append(pos[n_h:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


class SquareJpeg:
    """The crop as DejaVuOSS saves it (``crop_images.py``): its test transform (resize the short
    side to 256/224 of S, centre S x S), normalized and un-normalized (``InverseTransform``),
    ``(x * 255).astype(uint8)`` (truncating), saved as JPEG at PIL's default quality 75 and read
    back. PIL image -> PIL image; picklable for data-loading workers."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img):
        import io

        from PIL import Image
        from torchvision import transforms as T

        x = eval_transform(self.size)(img)  # resize, centre square, ToTensor, Normalize
        x = T.Normalize([0.0, 0.0, 0.0], [1 / s for s in IMAGENET_STD])(x)
        x = T.Normalize([-m for m in IMAGENET_MEAN], [1.0, 1.0, 1.0])(x)
        a = (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG")
        buf.seek(0)
        return Image.open(buf).convert("RGB")


def input_op(cfg: AuditConfig, image_size: int):
    """The classifier's input step before its transform: :class:`SquareJpeg` for
    ``clf_input: square``, else None (the crop rectangle as it is)."""
    return SquareJpeg(image_size) if cfg.clf_input == "square" else None


def with_input(op, transform):
    """``transform`` preceded by the input step ``op`` (None: ``transform``)."""
    from torchvision import transforms as T

    return transform if op is None else T.Compose([op, transform])


def train_transform(image_size: int, augment: str, scale_min: float):
    """The classifier's training transform.

    Args:
        image_size: output side (px).
        augment: ``crop`` (random resized crop with area scale in ``(scale_min, 1)`` and a
            horizontal flip), ``ssl`` (DejaVuOSS's: the SSL pipeline's first view, i.e. that
            crop and flip, colour jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale p 0.2, Gaussian
            blur kernel (5, 9) sigma 0.1-2) or ``none`` (the evaluation transform).
        scale_min: smallest area share of the random resized crop (in (0, 1]).

    Returns:
        A torchvision transform, PIL image -> normalized tensor (ImageNet mean and std).
    """
    from torchvision import transforms as T

    if augment == "none":
        return eval_transform(image_size)
    crop = [T.RandomResizedCrop(image_size, scale=(scale_min, 1.0), antialias=True), T.RandomHorizontalFlip()]
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment == "ssl":  # blur after Normalize, as DejaVuOSS (both linear: the order does not matter)
        jitter = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(0.2)]
        return T.Compose(crop + jitter + norm + [T.GaussianBlur((5, 9), (0.1, 2.0))])
    return T.Compose(crop + norm)


def build_classifier(cfg: AuditConfig, num_classes: int) -> nn.Module:
    """A fresh crop classifier: an :class:`dejavu.ssl.model.SSLModel` with a classifier head.

    Args:
        cfg: the audit's settings (``clf_arch``, ``clf_projector``).
        num_classes: outputs of the classifier head.

    Returns:
        The untrained network (on the CPU).
    """

    model = SSLModel(ModelSpec(cfg.clf_arch, cfg.clf_projector, num_classes))
    if cfg.clf_head == "linear":  # torchvision's fc on the features (DejaVuOSS)
        model.classifier = nn.Sequential(nn.Linear(model.embed_dim, num_classes))
    return model


def logits_of(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Class logits with gradients (``SSLModel.embed`` runs under no_grad).

    Args:
        model: an :class:`SSLModel` with a classifier head.
        x: a batch of images (n, 3, H, W), on the model's device.

    Returns:
        Logits (n, num_classes).
    """
    return model.classifier(model.projector(model.backbone(x)))


def num_outputs(model: Any) -> int:
    """Number of classes of an :class:`SSLModel` with a classifier head (its last layer's outputs)."""
    return int(model.classifier[-1].out_features)


class MemoryCrops(Dataset):
    """``(transform(crop), position)`` from crops decoded once and kept in memory (small
    sets: the synthetic default re-reads its ~1000 crops every epoch otherwise).
    """

    def __init__(self, images: list, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), i


def decode_crops(crops: CropSet, index) -> list:
    """Decode every crop once (``clf_cache_crops``), with a progress bar.

    Args:
        crops: the crops (dataset indices and PIL boxes).
        index: the dataset's image index (paths).

    Returns:
        The cropped RGB PIL images, in the order of ``crops``.
    """

    return [
        load_rgb(index.path(int(g))).crop(tuple(b))
        for g, b in progress(zip(crops.indices, crops.boxes.tolist()), desc="decode crops", total=len(crops.indices))
    ]


def _loader(
    crops: CropSet,
    pos: np.ndarray,
    index,
    transform,
    batch_size: int,
    workers: int,
    shuffle_seed: int | None,
    device: str,
):
    from torch.utils.data import DataLoader

    ds: Dataset
    if crops.images is not None:
        ds = MemoryCrops([crops.images[int(p)] for p in pos], transform)
    else:
        ds = ImageCrops.of(index, crops.indices[pos], crops.boxes[pos], transform)
    gen = None
    if shuffle_seed is not None:
        gen = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=gen,
        num_workers=workers,
        pin_memory=str(device).startswith("cuda"),
    )


@torch.no_grad()
def accuracy(
    model: nn.Module,
    crops: CropSet,
    pos: np.ndarray,
    index,
    image_size: int,
    batch_size: int,
    workers: int,
    device: str,
    op=None,
) -> float:
    """Top-1 accuracy on the crops at positions ``pos`` (evaluation transform).

    Args:
        model: the classifier (put in eval mode).
        crops: the crops; ``pos`` indexes them.
        pos: positions of the evaluated crops (e.g. the held-out split).
        index: the dataset's image index (paths of crops not kept in memory).
        image_size: side (px) of the evaluation transform.
        batch_size: crops per batch.
        workers: data-loading processes (0: the main process).
        device: torch device string.
        op: the input step (:func:`input_op`) for crops not kept in memory.

    Returns:
        The share of crops whose argmax is the label; NaN when ``pos`` is empty.
    """

    if len(pos) == 0:
        return float("nan")
    model.eval()
    labels = torch.as_tensor(crops.labels[pos])
    right = 0
    tf = with_input(op, eval_transform(image_size))
    for x, i in _loader(crops, pos, index, tf, batch_size, workers, None, device):
        pred = logits_of(model, x.to(device)).argmax(1).cpu()
        right += int((pred == labels[i]).sum())
    return right / len(pos)


def _optimizer(cfg: AuditConfig, model: nn.Module) -> torch.optim.Optimizer:
    shim = SimpleNamespace(
        optimizer=cfg.clf_optimizer,
        effective_lr=cfg.clf_lr,
        weight_decay=cfg.clf_weight_decay,
        momentum=cfg.clf_momentum,
        lars_eta=0.001,
    )
    return build_optimizer(shim, [model])


def _start(out: Path, cfg: AuditConfig, model: nn.Module, opt, crops: CropSet, resume: bool) -> tuple[int, list]:
    """Epochs done and metric rows so far: from ``last.pth`` when resuming, else 0."""
    last = out / "last.pth"
    if not last.is_file():
        return 0, []
    if not resume:
        raise DejavuError(
            f"{last}: an unfinished classifier training exists; pass --resume to continue it or --force to start over"
        )
    st = safe_torch_load(last)
    if st.get("train_config") != cfg.classifier_config():
        diff = sorted(k for k, v in cfg.classifier_config().items() if (st.get("train_config") or {}).get(k) != v)
        raise DejavuError(f"{last}: cannot resume, the classifier settings differ in {', '.join(diff)}")
    if not np.array_equal(np.asarray(st["indices"].numpy()), crops.indices):
        raise DejavuError(f"{last}: cannot resume, it was trained on other crops")
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    return int(st["epoch"]), list(st.get("history") or [])


@torch.enable_grad()
def train_classifier(
    cfg: AuditConfig,
    index,
    crops: CropSet,
    num_classes: int,
    image_size: int,
    out: Path,
    device: str,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
) -> ClassifierResult:
    """Train the crop classifier into ``out`` (see the module docstring).

    Args:
        cfg: the audit's settings; the ``clf_*`` keys, ``seed`` and ``workers`` are used.
        index: the dataset's image index (:class:`dejavu.data.imagefolder.DatasetIndex`).
        crops: the training crops; ``cfg.clf_holdout`` of each class is held out for the
            held-out accuracy. With ``cfg.clf_cache_crops`` they are decoded into ``crops.images``.
        num_classes: the classifier head's outputs (the dataset's classes).
        image_size: side (px) the crops are resized to.
        out: the training folder (``OUT/classifier``), created if needed.
        device: torch device string (``cpu``, ``cuda:0``...).
        resume: continue from ``out/last.pth``; without it an unfinished run there is refused.
        meta: goes into the final checkpoint's config (train set, npc, fingerprint...).

    Returns:
        The path of ``classifier.pth`` and its info (epochs, split sizes, accuracies, loss).

    Raises:
        DejavuError: no training crop left after the split, an unfinished run without
            ``resume`` (or one with other settings or crops), a non-finite loss.
    """

    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    tr, ho = holdout_split(crops.labels, cfg.clf_holdout, cfg.seed)
    if len(tr) == 0:
        raise DejavuError(
            f"the classifier's training set has no crop left after the held-out split ({len(crops.indices)})"
        )
    op = input_op(cfg, image_size)
    if cfg.clf_cache_crops and crops.images is None:
        crops.images = decode_crops(crops, index)
        if op is not None:  # deterministic: applied once
            crops.images, op = [op(im) for im in crops.images], None
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg, num_classes).to(device)
    opt = _optimizer(cfg, model)
    start, history = _start(out, cfg, model, opt, crops, resume)
    tf = with_input(op, train_transform(image_size, cfg.clf_augment, cfg.clf_scale_min))
    for epoch in progress(range(start, cfg.clf_epochs), desc="crop classifier", total=cfg.clf_epochs - start):
        loader = _loader(crops, tr, index, tf, cfg.clf_batch_size, workers, cfg.seed * 100003 + epoch, device)
        row = _train_epoch(model, opt, loader, torch.as_tensor(crops.labels[tr]), cfg, epoch, start, out, device)
        if epoch + 1 == cfg.clf_epochs or (cfg.clf_snapshot_every and (epoch + 1) % cfg.clf_snapshot_every == 0):
            row["heldout_acc"] = accuracy(model, crops, ho, index, image_size, cfg.clf_batch_size, workers, device, op)
            atomic_torch_save(out / f"model_ep{epoch + 1}.pth", _ckpt(model, epoch + 1, cfg, image_size, meta, row))
        history.append(row)
        _save_state(out, model, opt, epoch + 1, cfg, crops, history)
    final = history[-1]
    info = {
        "epochs": cfg.clf_epochs,
        "n_train": len(tr),
        "n_heldout": len(ho),
        "heldout_acc": final.get("heldout_acc"),
        "train_acc": final["train_acc"],
        "loss": final["loss"],
        "arch": cfg.clf_arch,
        "projector": cfg.clf_projector,
        "image_size": image_size,
    }
    path = out / "classifier.pth"
    atomic_torch_save(path, _ckpt(model, cfg.clf_epochs, cfg, image_size, meta, info))
    return ClassifierResult(path, info)


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader,
    labels: torch.Tensor,
    cfg: AuditConfig,
    epoch: int,
    start: int,
    out: Path,
    device: str,
) -> dict[str, Any]:
    """One epoch over ``loader`` (``(x, position in labels)`` batches); returns its metric row."""

    steps = len(loader)
    total, warm = cfg.clf_epochs * steps, cfg.clf_warmup_epochs * steps
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.clf_label_smoothing)
    model.train()
    torch.manual_seed(cfg.seed * 100003 + epoch)  # this epoch's augmentations, replayed on resume
    loss_sum = right = seen = 0.0
    for j, (x, i) in enumerate(loader):
        set_lr(opt, lr_at(epoch * steps + j, total, warm, cfg.clf_lr))
        y = labels[i].to(device)
        logits = logits_of(model, x.to(device))
        loss = loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise DejavuError(
                f"{out}: classifier loss is {loss.item()} at epoch {epoch + 1}; last.pth keeps epoch {start}; lower clf_lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        right += float((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": right / seen}


def _save_state(
    out: Path, model: nn.Module, opt, epochs_done: int, cfg: AuditConfig, crops: CropSet, history: list
) -> None:
    """``metrics.jsonl`` and the resume state ``last.pth`` after an epoch."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    atomic_torch_save(
        out / "last.pth",
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epochs_done,
            "train_config": cfg.classifier_config(),
            "indices": torch.as_tensor(crops.indices),
            "history": history,
        },
    )


def _ckpt(
    model: nn.Module, epoch: int, cfg: AuditConfig, image_size: int, meta: dict[str, Any] | None, info: dict[str, Any]
) -> dict[str, Any]:
    meta = dict(meta or {})
    fingerprint = meta.pop("fingerprint", None)
    config = {
        "method": CLASSIFIER_METHOD,
        "arch": cfg.clf_arch,
        "projector": cfg.clf_projector,
        "num_classes": num_outputs(model),
        "image_size": int(image_size),
        **cfg.classifier_config(),
        **meta,
        "metrics": info,
    }
    return {
        "format": formats.CHECKPOINT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "config": config,
        "fingerprint": fingerprint,
    }


def is_finished(out: Path) -> bool:
    """Whether ``out`` holds a finished classifier (``classifier.pth``, written last)."""
    return (out / "classifier.pth").is_file()


def classifier_dir_clean(out: Path) -> None:
    """Remove a previous classifier run (``--force``): the ``.pth`` and ``.jsonl`` files of ``out``."""
    if out.is_dir():
        for f in out.iterdir():
            if f.is_file() and (f.suffix in (".pth", ".jsonl")):
                os.unlink(f)


def classifier_scores(logits: np.ndarray, labels: np.ndarray, index: np.ndarray, confidence: str) -> Scores:
    """The classifier's prediction (argmax) and correctness, with its confidence.

    Args:
        logits: (n, num_classes) classifier logits.
        labels: (n,) true classes.
        index: (n,) dataset indices of the crops.
        confidence: ``neg_entropy`` = sum p log p of the softmax (natural log, the KNN attack's
            scale) or ``max_prob`` = the largest softmax probability.

    Returns:
        The classifier's :class:`~dejavu.analysis.metrics.Scores`.
    """
    s = scores_from_logits(logits, labels, index)
    lg = np.asarray(logits, np.float64)
    z = lg - lg.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    p = np.exp(logp)
    conf = (p * logp).sum(1) if confidence == "neg_entropy" else p.max(1)
    return dataclasses.replace(s, conf=conf)


def unanimous(refs: list[Scores]) -> Scores:
    """Several classifiers as one for the sample test: right only where ALL are right
    (DejaVuOSS's correlation set: crops that every classifier gets right); prediction and
    confidence are the first one's.

    Args:
        refs: the classifiers' scores on the same examples (at least one).

    Returns:
        :class:`~dejavu.analysis.metrics.Scores` with ``correct1``/``correct5`` the product of theirs.
    """
    c1, c5 = np.ones(len(refs[0].index)), np.ones(len(refs[0].index))
    for r in refs:
        if not np.array_equal(r.index, refs[0].index):
            raise ValueError("classifiers scored different examples")
        c1, c5 = c1 * r.correct1, c5 * r.correct5
    return dataclasses.replace(refs[0], correct1=c1, correct5=c5)
