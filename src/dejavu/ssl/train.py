"""The SSL training loop: snapshots, exact resume, metrics, AMP, DDP.

``train(cfg, paths, index_file, out)`` trains ``cfg.method`` on the images listed in
``index_file`` and writes (DESIGN 3, docs/CONTRACTS.md)::

    OUT/config.json        TrainConfig + fingerprint + index_file + npc/set + world size
    OUT/model_ep{E}.pth    every snapshot_every epochs and at the final epoch
    OUT/last.pth           resume state: model, method extra (EMA teacher, DINO center),
                           optimizer, AMP scaler, global step, RNG states, epoch, config
    OUT/metrics.jsonl      one row per epoch: epoch, loss, lr, images_per_s, seconds,
                           and knn_top1 every knn_every epochs

Decisions:

* Initial weights depend only on ``cfg.seed`` (seeded right before the model is
  built), so the A and B runs of a pair start from the same weights.
* Every epoch re-seeds torch/numpy/python from ``(seed, epoch, rank)`` and draws its
  batch order from ``(seed, epoch)``. A resumed run therefore replays the same
  augmentations; on the CPU its final weights equal an uninterrupted run's
  (tested). RNG states are still saved in ``last.pth`` for completeness.
* ``last.pth`` is written (atomically) after every epoch, after ``metrics.jsonl``;
  on resume, metric rows past the checkpoint's epoch are dropped.
* A NaN/inf loss stops training at once; ``last.pth`` keeps the last good epoch.
* Online kNN (k=20, cosine similarity, votes weighted by exp(sim/0.07) as in DINO's
  evaluation) of the *backbone* features: bank = training images, queries = the
  partition's ``val_set.npy``, both with the evaluation transform.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dejavu import DejavuError
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_can_write,
    locks_output,
    safe_torch_load,
)
from dejavu.partition import load_index_file
from dejavu.ssl.config import TrainConfig, resume_mismatch
from dejavu.ssl.ddp import DistInfo, convert_sync_batchnorm, current, init_distributed
from dejavu.ssl.methods.base import Method, StepInfo
from dejavu.ssl.model import ModelSpec, SSLModel
from dejavu.ssl.optim import build_optimizer, lr_at, set_lr
from dejavu.ssl.registry import get_method
from dejavu.utils import progress

FORMAT = "dejavu-ckpt/1"


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

    def forward(self, views, labels, info):
        return self.method(self.model, views, labels, info)


@dataclass
class Engine:
    cfg: TrainConfig
    model: SSLModel
    method: Method
    trainable: nn.Module  # Trainable, or DDP(Trainable)
    optimizer: torch.optim.Optimizer
    scaler: Any
    device: torch.device
    dinfo: DistInfo

    @property
    def amp_dtype(self):
        if self.device.type != "cuda" or self.cfg.amp == "none":
            return None
        return torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16


def build_engine(cfg: TrainConfig, device: torch.device, dinfo: DistInfo | None = None) -> Engine:
    """Seeded model + method + optimizer on ``device``; DDP-wrapped when distributed."""
    dinfo = dinfo or current()
    from dejavu.utils import seed_everything

    seed_everything(cfg.seed)  # init depends only on the seed
    model = SSLModel(ModelSpec(cfg.arch, cfg.projector, cfg.num_classes if cfg.method == "supervised" else 0))
    method = get_method(cfg.method)(model, cfg)
    trainable: nn.Module = Trainable(model, method)
    if dinfo.distributed:
        trainable = convert_sync_batchnorm(trainable, device.type)
        model, method = trainable.model, trainable.method
    trainable.to(device)
    if device.type == "cuda" and cfg.channels_last:
        trainable.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, [model, method])
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.amp == "fp16")
    if dinfo.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        trainable = DDP(trainable, device_ids=ids)
    return Engine(cfg, model, method, trainable, opt, scaler, device, dinfo)


class NonFiniteLoss(Exception):
    pass


def train_step(eng: Engine, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo) -> float:
    """One optimisation step at the scheduled lr; returns the loss averaged over ranks."""
    cfg = eng.cfg
    lr = lr_at(info.step, info.total_steps, info.warmup_steps, cfg.effective_lr, cfg.final_lr_ratio)
    set_lr(eng.optimizer, lr)
    nb = eng.device.type == "cuda"
    views = [v.to(eng.device, non_blocking=nb) for v in views]
    if eng.device.type == "cuda" and cfg.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    labels = labels.to(eng.device, non_blocking=nb)
    dtype = eng.amp_dtype
    with torch.autocast(eng.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, _logs = eng.trainable(views, labels, info)
    value = loss.detach().float().clone()
    if eng.dinfo.distributed:
        import torch.distributed as dist

        dist.all_reduce(value)
        value /= eng.dinfo.world_size
    v = float(value)
    if not np.isfinite(v):
        raise NonFiniteLoss(v)
    eng.optimizer.zero_grad(set_to_none=True)
    eng.scaler.scale(loss).backward()
    if cfg.clip_grad > 0:
        eng.scaler.unscale_(eng.optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in eng.optimizer.param_groups for p in g["params"]], cfg.clip_grad)
    eng.scaler.step(eng.optimizer)
    eng.scaler.update()
    eng.method.after_step(eng.model, info)
    return v


# ---------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": [int(x) for x in state]},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate((s["python"]["version"], tuple(s["python"]["state"]), None))
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (int(seed) * 1_000_003 + int(epoch) * 1009 + int(rank)) % (2**63)
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)


def parse_index_name(index_file: str | os.PathLike) -> tuple[int | None, str | None]:
    """``.../<npc>_per_class/train_<A|B>.npy`` -> (npc, "A"|"B")."""
    p = Path(index_file)
    m = re.fullmatch(r"(\d+)_per_class", p.parent.name)
    s = re.fullmatch(r"train_([AB])", p.stem)
    return (int(m.group(1)) if m else None), (s.group(1) if s else None)


def _find_partition(index_file: Path) -> Path | None:
    for cand in (index_file.parent.parent, index_file.parent):
        if (cand / "manifest.json").is_file() and (cand / "val_set.npy").is_file():
            return cand
    return None


# ---------------------------------------------------------------- kNN


@torch.no_grad()
def _embed_backbone(model: SSLModel, images: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = (images[i:i + batch].float() / 255 - mean) / std
        out.append(model.backbone(x.to(device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
             k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> float:
    """Weighted kNN classifier on cosine similarity (DINO's evaluation protocol)."""
    bank = torch.nn.functional.normalize(bank, dim=1)
    query = torch.nn.functional.normalize(query, dim=1)
    c = num_classes or int(max(bank_labels.max(), query_labels.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for i in range(0, len(query), 1024):
        sim = query[i:i + 1024] @ bank.T
        w, j = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), c).scatter_add_(1, bank_labels[j], (w / temperature).exp())
        correct += int((votes.argmax(1) == query_labels[i:i + 1024]).sum())
    return correct / max(1, len(query))


class KNNEval:
    """Decodes bank (train) and query (val) images once at image_size (centre crop)."""

    def __init__(self, index: DatasetIndex, train_idx: np.ndarray, val_idx: np.ndarray, image_size: int,
                 train_images: torch.Tensor | None = None):
        from dejavu.ssl.data import decode_all

        self.bank = train_images if train_images is not None else decode_all(index, train_idx, image_size, "decode kNN bank")
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


def _pick_device(device: str | torch.device | None, dinfo: DistInfo) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DejavuError("--device cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", dinfo.local_rank)
    return device


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if int(r.get("epoch", 0)) <= upto]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@locks_output("train")
def train(cfg: TrainConfig, paths: DataPaths, index_file: str | os.PathLike, out: str | os.PathLike,
          resume: bool = False, force: bool = False, device: str | torch.device | None = None,
          index: DatasetIndex | None = None) -> TrainResult:
    """Train one model; see the module docstring for what is written.

    ``resume``: continue from ``OUT/last.pth`` (a fresh start if there is none, so a
    requeued job that never reached its first checkpoint simply starts);
    ``force``: discard an existing run in OUT and start over.
    """
    cfg = dataclasses.replace(cfg)
    cfg.validate()
    dev_type = "cuda" if (device is None and torch.cuda.is_available()) or str(device or "").startswith("cuda") else "cpu"
    dinfo = init_distributed(dev_type)
    device = _pick_device(device, dinfo)
    out = Path(out)
    index_file = Path(index_file)
    last_path = out / "last.pth"
    metrics_path = out / "metrics.jsonl"

    index = index or scan_imagefolder(paths.images)
    idx = load_index_file(index_file, index)
    npc, which = parse_index_name(index_file)
    if cfg.method == "supervised" and cfg.num_classes == 0:
        cfg.num_classes = len(index.classes)

    ckpt = None
    if resume and last_path.is_file():
        ckpt = safe_torch_load(last_path)
        fp = ckpt.get("fingerprint") or {}
        if fp.get("id") != index.fingerprint.id:
            raise DejavuError(f"{last_path}: was trained on dataset {fp.get('id')} but this dataset is "
                              f"{index.fingerprint.id}; cannot resume")
        diff = resume_mismatch(ckpt.get("config") or {}, cfg)
        if diff:
            raise DejavuError(f"{last_path}: cannot resume, config differs in " + "; ".join(diff)
                              + " (use the run's config, or --force to start over)")
        saved_idx = (ckpt.get("config") or {}).get("index_sha256")
        if saved_idx and saved_idx != _idx_hash(idx):
            raise DejavuError(f"{last_path}: cannot resume, it was trained on a different index file "
                              f"({(ckpt.get('config') or {}).get('index_file')})")
    elif not resume:
        if last_path.exists() and not force:
            raise DejavuError(f"{out}: a training run exists here; pass --resume to continue it or --force to start over")
        check_can_write(out, force=force)
    if dinfo.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if force and not resume:
            for p in list(out.glob("model_ep*.pth")) + [last_path, metrics_path]:
                if p.exists():
                    p.unlink()

    eng = build_engine(cfg, device, dinfo)
    method_cls = type(eng.method)
    start_epoch, step = 0, 0
    if ckpt is not None:
        eng.model.load_state_dict(ckpt["model"])
        eng.method.load_state_dict(ckpt["extra"])
        eng.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            eng.scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        _set_rng_state(ckpt["rng"])

    from dejavu.ssl.augment import build_views
    from dejavu.ssl.data import LoaderImages, MemoryImages, choose_mode, epoch_permutation, plan_batches

    preset = cfg.augment if method_cls.view_kind == "ssl" or cfg.augment in ("none",) else "crop"
    views_t = build_views(preset, cfg.image_size, method_cls.num_views)
    if cfg.augment_backend == "device":
        from dejavu.ssl.batch_augment import BatchViews

        views_t = BatchViews(views_t, device)
    mode = choose_mode(cfg.data_mode, len(idx), cfg.image_size)
    data = MemoryImages(index, idx, cfg.image_size) if mode == "memory" else \
        LoaderImages(index, idx, cfg.num_workers, device.type == "cuda")
    batch, steps = plan_batches(len(idx), cfg.batch_size, dinfo.world_size)
    total_steps = steps * cfg.epochs
    warmup_steps = steps * cfg.warmup_epochs

    knn = None
    part = _find_partition(index_file)
    if cfg.knn_every > 0 and part is not None and dinfo.is_main:
        val = load_index_file(part / "val_set.npy", index)
        knn = KNNEval(index, idx, val, cfg.image_size, data.images if mode == "memory" else None)

    run_config = {**cfg.to_dict(), "npc": npc, "set": which, "index_file": str(index_file),
                  "index_sha256": _idx_hash(idx), "num_images": int(len(idx)), "effective_lr": cfg.effective_lr,
                  "global_batch": batch, "steps_per_epoch": steps, "world_size": dinfo.world_size,
                  "fingerprint": index.fingerprint.to_dict(), "partition": str(part) if part else None}
    ckpt_config = {k: v for k, v in run_config.items() if k != "fingerprint"}
    if dinfo.is_main:
        atomic_write_json(out / "config.json", run_config)
    history = _read_metrics(metrics_path, start_epoch) if ckpt is not None else []
    snapshots = sorted(out.glob("model_ep*.pth"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    snapshots = [p for p in snapshots if int(re.findall(r"\d+", p.stem)[-1]) <= start_epoch]

    def base_ckpt(epoch: int) -> dict[str, Any]:
        return {"format": FORMAT, "model": eng.model.state_dict(), "epoch": epoch, "config": ckpt_config,
                "fingerprint": index.fingerprint.to_dict(), "extra": eng.method.state_dict()}

    epochs = range(start_epoch, cfg.epochs)
    bar = progress(epochs, desc=f"train {cfg.method}", total=len(epochs)) if dinfo.is_main else epochs
    eng.trainable.train()
    row: dict[str, Any] = history[-1] if history else {}
    for e in bar:
        _seed_epoch(cfg.seed, e, dinfo.rank)
        order = epoch_permutation(len(idx), cfg.seed, e)
        t0 = time.perf_counter()
        losses = []
        for views, labels in data.epoch(order, batch, steps, dinfo.rank, dinfo.world_size, views_t):
            info = StepInfo(step, total_steps, e, warmup_steps)
            try:
                losses.append(train_step(eng, views, labels, info))
            except NonFiniteLoss as err:
                last_ep = _saved_epoch(last_path)
                raise DejavuError(
                    f"{out}: loss became {err.args[0]} at epoch {e + 1}, step {step}; training stopped. "
                    + (f"Last good checkpoint kept: {last_path} (epoch {last_ep})." if last_ep is not None
                       else "No checkpoint was written yet.")
                    + " Try a lower lr or amp=none.") from None
            step += 1
        dt = time.perf_counter() - t0
        lr_now = eng.optimizer.param_groups[0]["lr"]
        row = {"epoch": e + 1, "loss": float(np.mean(losses)), "lr": lr_now,
               "images_per_s": batch * steps / dt if dt > 0 else None, "seconds": dt, "step": step}
        if knn is not None and ((e + 1) % cfg.knn_every == 0 or e + 1 == cfg.epochs):
            row["knn_top1"] = knn(eng.model, device, cfg.knn_k)
        if dinfo.is_main:
            history.append(row)
            _write_metrics(metrics_path, history)
            ck = base_ckpt(e + 1)
            if (e + 1) % cfg.snapshot_every == 0 or e + 1 == cfg.epochs:
                sp = out / f"model_ep{e + 1}.pth"
                atomic_torch_save(sp, ck)
                snapshots = [p for p in snapshots if p != sp] + [sp]
            atomic_torch_save(last_path, {**ck, "optimizer": eng.optimizer.state_dict(),
                                          "scaler": eng.scaler.state_dict(), "step": step,
                                          "rng": _rng_state(), "world_size": dinfo.world_size})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{row['loss']:.4f}", **({"knn": f"{row['knn_top1']:.3f}"} if "knn_top1" in row else {}))
        if dinfo.distributed:
            import torch.distributed as dist

            dist.barrier()
    return TrainResult(out=out, snapshots=snapshots, last=last_path, metrics=row,
                       epochs_done=cfg.epochs, history=history)


def _saved_epoch(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return int(safe_torch_load(path).get("epoch"))
    except Exception:  # noqa: BLE001 - only used to phrase an error message
        return None


def _idx_hash(idx: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
