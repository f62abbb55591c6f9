"""The SSL training loop: snapshots, exact resume, metrics, AMP, DDP.

``train(cfg, paths, index_file, out)`` trains ``cfg.method`` on the images of ``index_file``
and writes ``OUT/config.json``, ``model_ep{E}.pth``, ``last.pth`` (the resume state, after each
epoch's ``metrics.jsonl`` row) and ``metrics.jsonl`` (docs/CONTRACTS.md). Seeds, threads and the
online kNN are docs/DESIGN.md §7.1's: the initial weights depend on the training seed only and
every epoch is re-seeded (:func:`_seed_epoch`), so a resumed CPU run ends with an uninterrupted
run's weights. A NaN/inf loss stops the run, ``last.pth`` keeping the last good epoch. The
optional monitor, TensorBoard and FFCV sources are passed in (docs/DESIGN.md §6 "Layers").
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dejavu import DejavuError, UsageError
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dejavu.device import choose_device
from dejavu.formats import CHECKPOINT
from dejavu.io import (
    abspath,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_can_write,
    index_hash,
    locks_output,
    safe_torch_load,
)
from dejavu.partition import find_partition, load_index_file, parse_index_name
from dejavu.ssl.augment import build_views
from dejavu.ssl.backbones import zero_init_residuals
from dejavu.ssl.batch_augment import BatchViews
from dejavu.ssl.config import TrainConfig, resume_mismatch, train_seed
from dejavu.ssl.data import (
    ImageSource,
    LoaderImages,
    MemoryImages,
    StoredImages,
    Views,
    choose_mode,
    decode_all,
    epoch_permutation,
    plan_batches,
)
from dejavu.ssl.ddp import DistInfo, convert_sync_batchnorm, current, init_distributed
from dejavu.ssl.methods.base import Method, StepInfo
from dejavu.ssl.model import ModelSpec, SSLModel
from dejavu.ssl.optim import build_optimizer, lr_at, set_lr
from dejavu.ssl.registry import get_method
from dejavu.train_step import NonFiniteLoss, amp_dtype, autocast, check_finite, make_scaler, optimizer_step
from dejavu.utils import progress, seed_everything, set_torch_threads


@dataclass
class TrainResult:
    out: Path
    snapshots: list[Path]
    last: Path
    metrics: dict[str, Any]  # the final epoch's metrics row
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainable(nn.Module):
    """Model + method in one module, so DDP synchronises both (e.g. BYOL's predictor)."""

    def __init__(self, model: SSLModel, method: Method):
        super().__init__()
        self.model = model
        self.method = method

    def forward(
        self, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Args:
            views: the batch's views on the device.
            labels: (n,) int64 labels.
            info: the step, total steps and epoch.

        Returns:
            ``(loss, logs)`` of the method.
        """
        return self.method(self.model, views, labels, info)


@dataclass
class Engine:
    cfg: TrainConfig
    model: SSLModel
    method: Method
    trainable: nn.Module  # Trainable, or DDP(Trainable)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    dinfo: DistInfo

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return amp_dtype(self.device, self.cfg.amp)


def build_engine(
    cfg: TrainConfig, device: torch.device, dinfo: DistInfo | None = None, seed: int | None = None
) -> Engine:
    """Seeded model + method + optimizer on ``device``; DDP-wrapped when distributed.

    Args:
        cfg: the run's settings.
        device: the training device.
        dinfo: the process group (default: the current one).
        seed: the training seed; the initial weights depend only on it (None: ``cfg.seed``).

    Returns:
        An :class:`Engine` (model, method, the module to train, optimizer, grad scaler).
    """
    dinfo = dinfo or current()

    seed_everything(cfg.seed if seed is None else seed)  # init depends only on the seed
    classes = cfg.num_classes if get_method(cfg.method).needs_classifier else 0
    model = SSLModel(ModelSpec(cfg.arch, cfg.projector, classes))
    if cfg.zero_init_residual:
        zero_init_residuals(model.backbone)
    method = get_method(cfg.method)(model, cfg)
    trainable: nn.Module = Trainable(model, method)
    if dinfo.distributed:
        trainable = convert_sync_batchnorm(trainable, device.type)
        assert isinstance(trainable, Trainable)
        model, method = trainable.model, trainable.method
    trainable.to(device)
    if device.type == "cuda" and cfg.channels_last:
        trainable.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, [model, method])
    scaler = make_scaler(device, amp_dtype(device, cfg.amp))
    if dinfo.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        trainable = DDP(trainable, device_ids=ids)
    return Engine(cfg, model, method, trainable, opt, scaler, device, dinfo)


def train_step(eng: Engine, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo) -> float:
    """One optimisation step at the scheduled lr (:func:`dejavu.train_step.optimizer_step`).

    Args:
        eng: from :func:`build_engine`.
        views: the batch's views (CPU or device tensors).
        labels: the batch's labels.
        info: the global step, total steps and epoch.

    Returns:
        The loss averaged over ranks; :class:`NonFiniteLoss` if it is NaN or infinite.
    """
    cfg = eng.cfg
    lr = lr_at(info.step, info.total_steps, info.warmup_steps, cfg.effective_lr, cfg.final_lr_ratio)
    set_lr(eng.optimizer, lr)
    nb = eng.device.type == "cuda"
    views = [v.to(eng.device, non_blocking=nb) for v in views]
    if eng.device.type == "cuda" and cfg.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    labels = labels.to(eng.device, non_blocking=nb)
    with autocast(eng.device, eng.amp_dtype):
        loss, _logs = eng.trainable(views, labels, info)
    value = loss.detach().float().clone()
    if eng.dinfo.distributed:
        import torch.distributed as dist

        dist.all_reduce(value)
        value /= eng.dinfo.world_size
    v = check_finite(float(value))
    optimizer_step(loss, eng.optimizer, eng.scaler, cfg.clip_grad)
    eng.method.after_step(eng.model, info)
    return v


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    _name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, _gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(x) for x in state]},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate((s["python"]["version"], tuple(s["python"]["state"]), None))
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """torch, numpy and python seeded from ``(training seed, epoch, rank)`` (the batch order from
    ``(seed, epoch)``: :func:`epoch_permutation`): a resumed run replays the same augmentations."""
    s = (int(seed) * 1_000_003 + int(epoch) * 1009 + int(rank)) % (2**63)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)


# ---------------------------------------------------------------- kNN


@torch.no_grad()
def _embed_backbone(model: SSLModel, images: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = (images[i : i + batch].float() / 255 - mean) / std
        out.append(model.backbone(x.to(device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def knn_top1(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> float:
    """Weighted kNN classifier on cosine similarity (DINO's evaluation protocol).

    Args:
        bank: (N, d) reference features.
        bank_labels: (N,) their labels.
        query: (n, d) the evaluated features.
        query_labels: (n,) their labels.
        k: neighbours voting.
        temperature: votes weighted by ``exp(sim / temperature)``.
        num_classes: default the largest label + 1.

    Returns:
        The top-1 accuracy over the queries.
    """
    bank = torch.nn.functional.normalize(bank, dim=1)
    query = torch.nn.functional.normalize(query, dim=1)
    c = num_classes or int(max(bank_labels.max(), query_labels.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(query), 1024):
        sim = query[i : i + 1024] @ bank.T
        w, j = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), c).scatter_add_(1, bank_labels[j], (w / temperature).exp())
        correct += int((votes.argmax(1) == query_labels[i : i + 1024]).sum())
    return correct / max(1, len(query))


class KNNEval:
    """Decodes bank (train) and query (val) images once at image_size (centre crop)."""

    def __init__(
        self,
        index: DatasetIndex,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        image_size: int,
        train_images: torch.Tensor | None = None,
    ):
        self.bank = (
            train_images if train_images is not None else decode_all(index, train_idx, image_size, "decode kNN bank")
        )
        self.bank_labels = torch.as_tensor(index.targets[train_idx], dtype=torch.long)
        self.query = decode_all(index, val_idx, image_size, "decode kNN val")
        self.query_labels = torch.as_tensor(index.targets[val_idx], dtype=torch.long)
        self.num_classes = len(index.classes)

    def __call__(self, model: SSLModel, device, k: int) -> float:
        was = model.training
        model.eval()
        try:
            b = _embed_backbone(model, self.bank, device)
            q = _embed_backbone(model, self.query, device)
        finally:
            model.train(was)
        return knn_top1(b, self.bank_labels, q, self.query_labels, k=k, num_classes=self.num_classes)


# ---------------------------------------------------------------- main entry


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` up to epoch ``upto`` (a resumed run drops those past its checkpoint)."""
    if not path.is_file():
        return []
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if int(r.get("epoch", 0)) <= upto]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class TrainRun:
    """What one ``train`` call works on (filled by :func:`_open_run`; what an :class:`EpochHook` opens with)."""

    cfg: TrainConfig
    out: Path
    index_file: Path
    index: DatasetIndex
    idx: np.ndarray
    dinfo: DistInfo
    device: torch.device
    ckpt: dict[str, Any] | None  # the last.pth being resumed
    paths: DataPaths
    force: bool  # train()'s: start over (unless resuming)
    threads: int = 1
    seed: int = 0  # the training seed (dejavu.ssl.config.train_seed)

    @property
    def last_path(self) -> Path:
        return self.out / "last.pth"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"


# TrainConfig switches whose work train() leaves to the epoch hooks its caller passes
HOOKED_SETTINGS = ("monitor", "tensorboard")


class EpochHook(Protocol):
    """Work besides training, on the main rank: :meth:`open` once before the first epoch,
    :meth:`after_epoch` after each (before the row is written, so it may add keys to it)."""

    setting: str  # the TrainConfig switch it serves (HOOKED_SETTINGS)

    def open(self, run: TrainRun) -> None: ...

    def after_epoch(self, model: SSLModel, row: dict[str, Any]) -> None: ...


def _check_hooks(cfg: TrainConfig, hooks: Sequence[EpochHook]) -> None:
    missing = [s for s in HOOKED_SETTINGS if getattr(cfg, s) and s not in {h.setting for h in hooks}]
    if missing:
        raise UsageError(
            f"TrainConfig.{' and '.join(missing)} is on but train() got no hook for it: pass "
            "epoch_hooks=dejavu.monitor.train_hook.epoch_hooks(cfg), as dejavu train does"
        )


def _check_resumable(ckpt: dict[str, Any], run: TrainRun) -> None:
    last_path, cfg = run.last_path, run.cfg
    fp = ckpt.get("fingerprint") or {}
    if fp.get("id") != run.index.fingerprint.id:
        raise DejavuError(
            f"{last_path}: was trained on dataset {fp.get('id')} but this dataset is "
            f"{run.index.fingerprint.id}; cannot resume"
        )
    diff = resume_mismatch(ckpt.get("config") or {}, cfg)
    saved_seed = (ckpt.get("config") or {}).get("train_seed", (ckpt.get("config") or {}).get("seed"))
    if saved_seed is not None and int(saved_seed) != run.seed and not any(d.startswith("seed ") for d in diff):
        diff.append(
            f"training seed (saved {saved_seed}, now {run.seed} for design={cfg.design}; a run written "
            "before the independent design: --set design=coupled)"
        )
    if diff:
        raise DejavuError(
            f"{last_path}: cannot resume, config differs in "
            + "; ".join(diff)
            + " (use the run's config, or --force to start over)"
        )
    saved_idx = (ckpt.get("config") or {}).get("index_sha256")
    if saved_idx and saved_idx != index_hash(run.idx):
        raise DejavuError(
            f"{last_path}: cannot resume, it was trained on a different index file "
            f"({(ckpt.get('config') or {}).get('index_file')})"
        )


def check_out(out: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run without --force/--resume (also before a SLURM submission)."""
    if not resume:
        if (out / "last.pth").exists() and not force:
            raise DejavuError(
                f"{out}: a training run exists here; pass --resume to continue it or --force to start over"
            )
        check_can_write(out, force=force)


def _prepare_out(run: TrainRun, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run without --force/--resume; clear it with --force."""
    check_out(run.out, resume, force)
    if run.dinfo.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        if force and not resume:
            for p in list(run.out.glob("model_ep*.pth")) + [run.last_path, run.metrics_path]:
                if p.exists():
                    p.unlink()


def _choose_threads(cfg: TrainConfig, ckpt: dict[str, Any] | None, device: torch.device) -> int:
    """Torch CPU threads of this run, never chosen by timing: DEJAVU_THREADS, else
    ``cfg.threads``, else the count recorded by the run being resumed, else
    :func:`dejavu.utils.choose_threads`'s default. Floating-point results depend on it, so a
    resumed run reuses its own."""
    saved = (ckpt or {}).get("torch_threads")
    want = cfg.threads or (int(saved) if saved else None)
    n = set_torch_threads(want)
    if saved and int(saved) != n and device.type == "cpu":
        print(
            f"warning: resuming with {n} torch threads, the run used {saved}; the result will not be "
            "bit-identical to an uninterrupted run",
            file=sys.stderr,
        )
    return n


def _open_run(
    cfg: TrainConfig, paths: DataPaths, index_file, out, resume: bool, force: bool, device, index: DatasetIndex | None
) -> TrainRun:
    """Validate, set up the process group/device/threads, load the index, check resume."""
    cfg = dataclasses.replace(cfg)
    cfg.validate()
    dev_type = (
        "cuda" if (device is None and torch.cuda.is_available()) or str(device or "").startswith("cuda") else "cpu"
    )
    dinfo = init_distributed(dev_type)
    dev = choose_device(None if device is None else str(device), dinfo.local_rank)
    index = index or scan_imagefolder(paths.images)
    idx = load_index_file(Path(index_file), index)
    if get_method(cfg.method).needs_classifier and cfg.num_classes == 0:
        cfg.num_classes = len(index.classes)
    run = TrainRun(cfg, abspath(out), abspath(index_file), index, idx, dinfo, dev, None, paths, force)
    run.seed = train_seed(cfg.seed, parse_index_name(index_file)[1], cfg.design)
    if resume and run.last_path.is_file():
        run.ckpt = safe_torch_load(run.last_path)
        _check_resumable(run.ckpt, run)
    _prepare_out(run, resume=resume, force=force)
    run.threads = _choose_threads(cfg, run.ckpt, dev)
    return run


def _restore(eng: Engine, ckpt: dict[str, Any] | None) -> tuple[int, int]:
    """Load model, method, optimizer, scaler and RNG from ``last.pth``; (start epoch, step)."""
    if ckpt is None:
        return 0, 0
    eng.model.load_state_dict(ckpt["model"])
    eng.method.load_state_dict(ckpt["extra"])
    eng.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        eng.scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]), int(ckpt["step"])


@dataclass
class _Data:
    source: ImageSource
    batch: int
    steps: int
    num_views: int

    def views(self, cfg: TrainConfig, epoch: int, device: torch.device) -> Views:
        """This epoch's view transforms: ``cfg.augment`` at the ramped resolution (the
        supervised baseline takes view 1 only); with ``augment_backend: device`` the same
        views applied to whole batches on the training device (:mod:`dejavu.ssl.batch_augment`)."""
        views = build_views(cfg.augment, cfg.resolution(epoch), self.num_views, base_size=cfg.image_size)
        if cfg.augment_backend == "device":
            return BatchViews(views, device)
        return views


def _build_data(run: TrainRun, num_views: int, images: StoredImages | None = None) -> _Data:
    cfg = run.cfg
    src: ImageSource
    if images is not None:  # e.g. a beton read through FFCV (dejavu.ffcv.loader.BetonImages)
        src = images.open(run.index, run.idx, cfg.num_workers)
    elif choose_mode(cfg.data_mode, len(run.idx), cfg.image_size) == "memory":
        src = MemoryImages(run.index, run.idx, cfg.image_size)
    else:
        src = LoaderImages(run.index, run.idx, cfg.num_workers, run.device.type == "cuda")
    batch, steps = plan_batches(len(run.idx), cfg.batch_size, run.dinfo.world_size)
    return _Data(src, batch, steps, num_views)


def _build_knn(run: TrainRun, data: _Data, part: Path | None) -> KNNEval | None:
    if run.cfg.knn_every <= 0 or part is None or not run.dinfo.is_main:
        return None
    val = load_index_file(part / "val_set.npy", run.index)
    images = data.source.images if isinstance(data.source, MemoryImages) else None
    return KNNEval(run.index, run.idx, val, run.cfg.image_size, images)


def _run_config(run: TrainRun, data: _Data, part: Path | None) -> dict[str, Any]:
    """``config.json``: the config plus what the run was made of (threads included)."""
    npc, which = parse_index_name(run.index_file)
    return {
        **run.cfg.to_dict(),
        "npc": npc,
        "set": which,
        "train_seed": run.seed,
        "index_file": str(run.index_file),
        "index_sha256": index_hash(run.idx),
        "num_images": len(run.idx),
        "effective_lr": run.cfg.effective_lr,
        "global_batch": data.batch,
        "steps_per_epoch": data.steps,
        "world_size": run.dinfo.world_size,
        "torch_threads": run.threads,
        "fingerprint": run.index.fingerprint.to_dict(),
        "partition": str(part) if part else None,
    }


def _train_epoch(eng: Engine, run: TrainRun, data: _Data, e: int, step: int) -> tuple[list[float], int]:
    """One epoch; returns (losses, global step after it). A non-finite loss stops the run."""
    cfg = eng.cfg
    _seed_epoch(run.seed, e, run.dinfo.rank)
    order = epoch_permutation(len(run.idx), run.seed, e)
    total, warmup = data.steps * cfg.epochs, data.steps * cfg.warmup_epochs
    losses = []
    views_t = data.views(cfg, e, run.device)
    for views, labels in data.source.epoch(
        order, data.batch, data.steps, run.dinfo.rank, run.dinfo.world_size, views_t
    ):
        try:
            losses.append(train_step(eng, views, labels, StepInfo(step, total, e, warmup)))
        except NonFiniteLoss as err:
            last_ep = _saved_epoch(run.last_path)
            raise DejavuError(
                f"{run.out}: loss became {err.args[0]} at epoch {e + 1}, step {step}; training stopped. "
                + (
                    f"Last good checkpoint kept: {run.last_path} (epoch {last_ep})."
                    if last_ep is not None
                    else "No checkpoint was written yet."
                )
                + " Try a lower lr or amp=none."
            ) from None
        step += 1
    return losses, step


def _save_epoch(eng: Engine, run: TrainRun, ckpt_config: dict[str, Any], epoch: int, step: int) -> Path | None:
    """Snapshot (every snapshot_every epochs and at the end) and ``last.pth``; the snapshot path."""
    ck = {
        "format": CHECKPOINT,
        "model": eng.model.state_dict(),
        "epoch": epoch,
        "config": ckpt_config,
        "fingerprint": run.index.fingerprint.to_dict(),
        "extra": eng.method.state_dict(),
    }
    snap = None
    if epoch % run.cfg.snapshot_every == 0 or epoch == run.cfg.epochs:
        snap = run.out / f"model_ep{epoch}.pth"
        atomic_torch_save(snap, ck)
    atomic_torch_save(
        run.last_path,
        {
            **ck,
            "optimizer": eng.optimizer.state_dict(),
            "scaler": eng.scaler.state_dict(),
            "step": step,
            "rng": _rng_state(),
            "world_size": run.dinfo.world_size,
            "torch_threads": run.threads,
        },
    )
    return snap


def _epoch_row(
    eng: Engine, run: TrainRun, data: _Data, knn: KNNEval | None, e: int, losses: list[float], step: int, dt: float
) -> dict[str, Any]:
    """The ``metrics.jsonl`` row of 0-based epoch ``e`` (online kNN every ``knn_every`` epochs)."""
    cfg = run.cfg
    row = {
        "epoch": e + 1,
        "loss": float(np.mean(losses)),
        "lr": eng.optimizer.param_groups[0]["lr"],
        "images_per_s": data.batch * data.steps / dt if dt > 0 else None,
        "seconds": dt,
        "step": step,
        "resolution": cfg.resolution(e),
    }
    if knn is not None and ((e + 1) % cfg.knn_every == 0 or e + 1 == cfg.epochs):
        row["knn_top1"] = knn(eng.model, run.device, cfg.knn_k)
    return row


def _existing_snapshots(out: Path, upto: int) -> list[Path]:
    def ep(p: Path) -> int:
        return int(re.findall(r"\d+", p.stem)[-1])

    return [p for p in sorted(out.glob("model_ep*.pth"), key=ep) if ep(p) <= upto]


@locks_output("train")
def train(
    cfg: TrainConfig,
    paths: DataPaths,
    index_file: str | os.PathLike,
    out: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    device: str | torch.device | None = None,
    index: DatasetIndex | None = None,
    images: StoredImages | None = None,
    epoch_hooks: Sequence[EpochHook] = (),
) -> TrainResult:
    """Train one model; see the module docstring for what is written.

    Args:
        cfg: the run's settings.
        paths: the dataset.
        index_file: the training images (a ``.npy`` of dataset indices).
        out: the run folder.
        resume: continue from ``OUT/last.pth`` (a fresh start if there is none, so a
            requeued job that never reached its first checkpoint simply starts).
        force: discard an existing run in OUT and start over.
        device: cpu/cuda (default: cuda when available).
        index: the scanned dataset, if already at hand.
        images: read the training images from this store instead of the JPEGs (e.g.
            ``dejavu.ffcv.loader.BetonImages(FILE)``: ``dejavu train --loader ffcv``).
        epoch_hooks: run on the main rank after each epoch, in order; every switch of
            :data:`HOOKED_SETTINGS` that ``cfg`` turns on needs its hook
            (``dejavu.monitor.train_hook.epoch_hooks(cfg)`` builds them).

    Returns:
        A :class:`TrainResult` (snapshots, last.pth, the metrics history).

    Raises:
        UsageError: ``cfg`` turns on a hooked setting whose hook was not passed.
    """
    _check_hooks(cfg, epoch_hooks)
    run = _open_run(cfg, paths, index_file, out, resume, force, device, index)
    cfg = run.cfg
    eng = build_engine(cfg, run.device, run.dinfo, seed=run.seed)
    start_epoch, step = _restore(eng, run.ckpt)
    data = _build_data(run, type(eng.method).num_views, images)
    part = find_partition(run.index_file)
    knn = _build_knn(run, data, part)
    run_config = _run_config(run, data, part)
    run_config["train_beton"] = images.path if images is not None else None
    ckpt_config = {k: v for k, v in run_config.items() if k != "fingerprint"}
    if run.dinfo.is_main:
        atomic_write_json(run.out / "config.json", run_config)
    history = _read_metrics(run.metrics_path, start_epoch) if run.ckpt is not None else []
    snapshots = _existing_snapshots(run.out, start_epoch)
    for hook in epoch_hooks if run.dinfo.is_main else ():
        hook.open(run)
    epochs = range(start_epoch, cfg.epochs)
    bar = progress(epochs, desc=f"train {cfg.method}", total=len(epochs)) if run.dinfo.is_main else epochs
    eng.trainable.train()
    row: dict[str, Any] = history[-1] if history else {}
    for e in bar:
        t0 = time.perf_counter()
        losses, step = _train_epoch(eng, run, data, e, step)
        row = _epoch_row(eng, run, data, knn, e, losses, step, time.perf_counter() - t0)
        if run.dinfo.is_main:
            for hook in epoch_hooks:
                hook.after_epoch(eng.model, row)
            history.append(row)
            _write_metrics(run.metrics_path, history)
            snap = _save_epoch(eng, run, ckpt_config, e + 1, step)
            snapshots = [p for p in snapshots if p != snap] + ([snap] if snap else [])
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}", **({"knn": f"{row['knn_top1']:.3f}"} if "knn_top1" in row else {})
                )
        if run.dinfo.distributed:
            import torch.distributed as dist

            dist.barrier()
    return TrainResult(
        out=run.out, snapshots=snapshots, last=run.last_path, metrics=row, epochs_done=cfg.epochs, history=history
    )


def _saved_epoch(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(safe_torch_load(path).get("epoch"))
    except Exception:  # only used to phrase an error message
        return None
