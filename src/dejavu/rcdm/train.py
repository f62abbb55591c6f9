"""Train one RCDM for one frozen SSL model on the partition's public set (docs/DESIGN.md 2.8).

The RCDM learns ``p(image | representation)``: the representation is ``concat(backbone(x),
projector(x))`` of the full image through the SSL model's evaluation view (a supervised model:
its logits); the image is the same picture through the same view at the RCDM's resolution S
(short side ``int(256 * S / 224)``, centre crop S: the original's ``RCDM_utils.Transform``),
scaled to [-1, 1]. The representations are computed once and cached (``OUT/reps.npy``, keyed by
the checkpoint's sha256), the images kept in memory below ``cache_images_gb``. Training counts
optimizer steps over seeded epoch-wise permutations (``resume`` continues the stream): AdamW,
linear warm-up then a constant lr, gradient clipping, an EMA with warm-up ``min(decay,
(1+n)/(10+n))`` used for sampling, AMP on CUDA. Under torchrun each rank draws its own batches
(seed + rank, DDP) and rank 0 writes ``OUT/config.json``, ``metrics.jsonl``,
``rcdm_step{S}.pth`` and ``last.pth``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dejavu import DejavuError
from dejavu.config import from_dict, to_dict
from dejavu.data.dataset import IndexedImages
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.data.transforms import eval_transform
from dejavu.device import choose_device
from dejavu.io import (
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_json,
    check_can_write,
    index_hash,
    load_npy,
    locks_output,
    read_json,
)
from dejavu.partition import Partition
from dejavu.rcdm.model import FORMAT, RCDM, RCDMConfig, load_rcdm, make_scheduler, resolve_cond
from dejavu.ssl.checkpoint import LoadedModel, load_model
from dejavu.train_step import NonFiniteLoss, amp_dtype, autocast, check_finite, make_scaler, optimizer_step
from dejavu.utils import progress, seed_everything


@dataclass
class RCDMTrainResult:
    out: Path
    checkpoint: Path  # last.pth
    step: int
    losses: list[float] = field(default_factory=list)  # per-step training loss of this call
    seconds: float = 0.0  # wall time of the training loop of this call
    prep_seconds: float = 0.0  # representation / image caching
    num_train: int = 0


def rcdm_resize(size: int) -> int:
    """Short side before the centre crop of the RCDM view (the original's ``int(256 * S / 224)``)."""
    return int(256 * size / 224)


def describe_rcdm_view(size: int) -> str:
    return f"resize{rcdm_resize(size)}-bilinear-center{size}"


def _check_view(state: dict[str, Any] | None, size: int, last: Path) -> None:
    """A run is resumed only with the image view it was trained on."""
    stored = ((state or {}).get("data") or {}).get("rcdm_view")
    if stored and stored != describe_rcdm_view(size):
        raise DejavuError(
            f"{last}: was trained on images seen as {stored}, this version uses "
            f"{describe_rcdm_view(size)}; pass --force to start over"
        )


class _InputAndTarget:
    """Picklable transform: PIL image -> (SSL input, RCDM target as uint8 CHW), both the
    evaluation view (resize 256/224 of the size, centre crop)."""

    def __init__(self, ssl_size: int, rcdm_size: int):
        self.ssl = eval_transform(ssl_size)
        self.rcdm_size = rcdm_size

    def rcdm(self, img):
        from torchvision.transforms import functional as F

        img = F.resize(img, rcdm_resize(self.rcdm_size), interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        img = F.center_crop(img, self.rcdm_size)
        return F.pil_to_tensor(img)  # uint8 (3, S, S)

    def __call__(self, img):
        return self.ssl(img), self.rcdm(img)


class _TrainImages(torch.utils.data.Dataset):
    """``(uint8 image, position)`` from the in-memory cache or from disk."""

    def __init__(self, index, indices: np.ndarray, views: _InputAndTarget, cache: torch.Tensor | None):
        self.index, self.indices, self.views, self.cache = index, indices, views, cache

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, pos: int):
        if self.cache is not None:
            return self.cache[pos], pos

        return self.views.rcdm(load_rgb(self.index.path(int(self.indices[pos])))), pos


class _PermutationBatches(torch.utils.data.Sampler):
    """Endless epoch-wise random permutations cut into batches; its state resumes."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.bs = n, min(batch_size, n)
        self.g = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.g)
        self.pos = 0

    def state_dict(self) -> dict[str, Any]:
        return {"g": self.g.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.g.set_state(s["g"])
        self.perm, self.pos = s["perm"], int(s["pos"])

    def __iter__(self):
        while True:
            if self.pos + self.bs > self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.g), 0
            batch = self.perm[self.pos : self.pos + self.bs].tolist()
            self.pos += self.bs
            yield batch


def _embed_dataset(
    ssl_model,
    index,
    indices,
    views: _InputAndTarget,
    kind: str,
    device,
    batch_size: int,
    num_workers: int,
    keep_images: bool,
) -> tuple[np.ndarray, torch.Tensor | None]:

    ds = IndexedImages(index, indices, views)
    dl: torch.utils.data.DataLoader = torch.utils.data.DataLoader(
        ds,  # type: ignore[arg-type]  # a map-style dataset without the Dataset base class
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    reps, imgs = [], []
    ssl_model.to(device).eval()
    for (x, img), _y, _g in progress(dl, desc="rcdm: embedding the training set"):
        reps.append(ssl_model.embed(x.to(device), kind).float().cpu())
        if keep_images:
            imgs.append(img)
    return torch.cat(reps).numpy(), (torch.cat(imgs) if keep_images else None)


def _ema_avg_fn(decay: float):
    def fn(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(list(ema_params), list(params), 1.0 - d)  # fused in-place EMA update

    return fn


@dataclass
class _RCDMRun:
    """What one :func:`train_rcdm` call works on (filled by :func:`_open_run`)."""

    cfg: RCDMConfig
    out: Path
    partition: str
    paths: DataPaths
    index: DatasetIndex
    indices: np.ndarray
    loaded: LoadedModel
    state: dict[str, Any] | None  # the last.pth being resumed
    device: torch.device
    rank: int
    dist: bool
    kind: str = "both"  # the conditioning: both | logits
    ssl_size: int = 224

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def last(self) -> Path:
        return self.out / "last.pth"


@dataclass
class _Trainer:
    """The RCDM, its EMA, optimizer, grad scaler and batch sampler."""

    model: RCDM
    net: torch.nn.Module  # model, or DDP(model)
    ema: torch.optim.swa_utils.AveragedModel
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    sampler: _PermutationBatches
    alphas: torch.Tensor  # the DDPM schedule's cumulative alphas, on the device
    step: int = 0


def _prepare_out(out: Path, resume: bool, force: bool, main: bool) -> bool:
    """Refuse to overwrite without --force (clear it with --force); whether to resume."""
    last = out / "last.pth"
    if resume and not last.is_file():
        resume = False  # nothing to resume: start (a requeued job that never saved)
        if out.exists() and any(p.suffix == ".pth" for p in out.iterdir()) and not force:
            raise DejavuError(f"{out}: has snapshots but no last.pth to resume from; pass --force to start over")
    if not resume and main:
        check_can_write(out, force)
        if force and out.exists():
            for p in list(out.glob("rcdm_step*.pth")) + [
                last,
                out / "metrics.jsonl",
                out / "reps.npy",
                out / "reps.json",
            ]:
                if p.exists():
                    p.unlink()
    return resume


def _open_run(
    cfg: RCDMConfig,
    ssl_model: str | os.PathLike,
    partition: str | os.PathLike,
    data: Any,
    out: Path,
    resume: bool,
    force: bool,
    device: str | None,
    indices: np.ndarray | None,
) -> _RCDMRun:
    """Validate, resume state (its config, except ``steps``), dataset, partition, SSL model."""

    cfg.validate()
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    resume = _prepare_out(out, resume, force, rank == 0)
    dev = choose_device(device, torch.cuda.current_device() if torch.cuda.is_available() else local_rank)
    state = None
    if resume:
        state = load_rcdm(out / "last.pth").raw
        cfg = from_dict(RCDMConfig, {**state["config"], "steps": cfg.steps}, source=f"{out / 'last.pth'} config")
    paths = data if isinstance(data, DataPaths) else DataPaths.resolve(data=data)
    index = scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    indices = part.attack_public() if indices is None else indices
    indices = index.check_indices(np.asarray(indices), f"{partition} public set")
    run = _RCDMRun(
        cfg,
        out,
        str(partition),
        paths,
        index,
        indices,
        load_model(ssl_model, map_location="cpu"),
        state,
        dev,
        rank,
        dist,
    )
    _check_ssl(run, ssl_model)
    run.kind = resolve_cond(cfg, run.loaded.model)
    run.ssl_size = int(run.loaded.config.get("image_size") or 224)
    return run


def _check_ssl(run: _RCDMRun, ssl_model: str | os.PathLike) -> None:
    """A resumed run continues with the same view and SSL checkpoint, on the model's dataset."""
    _check_view(run.state, run.cfg.image_size, run.last)
    if run.state is not None and run.state["ssl"].get("sha256") != run.loaded.sha256:
        raise DejavuError(
            f"{run.last}: was trained on SSL checkpoint {run.state['ssl'].get('path')} "
            f"(sha256 {str(run.state['ssl'].get('sha256'))[:12]}), not {ssl_model}"
        )
    run.loaded.check_dataset(run.index, "SSL checkpoint")


def _representations(run: _RCDMRun) -> tuple[np.ndarray, torch.Tensor | None]:
    """The training set's representations (cached in ``OUT/reps.npy``) and, when they fit in
    ``cache_images_gb``, its RCDM-view images in memory."""
    cfg, out, n = run.cfg, run.out, len(run.indices)
    keep = n * 3 * cfg.image_size**2 <= cfg.cache_images_gb * 2**30
    key = {
        "ssl_sha256": run.loaded.sha256,
        "embed": run.kind,
        "ssl_image_size": run.ssl_size,
        "n": int(n),
        "indices_sha": index_hash(run.indices),
    }
    reps_file, reps_key = out / "reps.npy", out / "reps.json"
    reps = None
    if reps_file.is_file() and reps_key.is_file() and read_json(reps_key) == key:
        reps = load_npy(reps_file)
    cache = None
    if reps is None or keep:
        new_reps, cache = _embed_dataset(
            run.loaded.model,
            run.index,
            run.indices,
            _InputAndTarget(run.ssl_size, cfg.image_size),
            run.kind,
            run.device,
            cfg.ssl_batch_size,
            cfg.num_workers,
            keep,
        )
        reps = new_reps if reps is None else reps
        if run.main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(reps_file, reps)
            atomic_write_json(reps_key, key)
    run.loaded.model.cpu()
    return reps, cache


def _build_trainer(run: _RCDMRun, rep_t: torch.Tensor) -> _Trainer:
    """The RCDM (representation statistics set), EMA, AdamW, sampler; restored on resume."""
    cfg, dev, state = run.cfg, run.device, run.state
    model = RCDM(cfg, rep_t.shape[1])
    model.set_rep_stats(rep_t)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = _PermutationBatches(len(run.indices), cfg.batch_size, cfg.seed + run.rank)
    dtype = amp_dtype(dev, "auto" if cfg.amp else "none")
    scaler = make_scaler(dev, dtype)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        ema.n_averaged.fill_(int(state.get("ema_n", state["step"])))
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    model.to(dev)
    ema.to(dev)
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if run.dist
        else model
    )
    alphas = make_scheduler(cfg, "ddpm").alphas_cumprod.to(dev)
    return _Trainer(model, net, ema, opt, scaler, dtype, sampler, alphas, step)


def _meta(run: _RCDMRun, rep_dim: int) -> dict[str, Any]:
    """What every checkpoint of the run records (config, SSL model, data)."""
    ld, paths = run.loaded, run.paths
    ssl_info = {
        "path": str(ld.path),
        "sha256": ld.sha256,
        "epoch": ld.epoch,
        "config": ld.config,
        "embed": run.kind,
        "image_size": run.ssl_size,
    }
    return {
        "format": FORMAT,
        "config": to_dict(run.cfg),
        "rep_dim": int(rep_dim),
        "ssl": ssl_info,
        "fingerprint": run.index.fingerprint.to_dict(),
        "data": {
            "images": str(paths.images),
            "bboxes": str(paths.bboxes) if paths.bboxes else None,
            "partition": run.partition,
            "num_train": len(run.indices),
            "rcdm_view": describe_rcdm_view(run.cfg.image_size),
        },
    }


def _save(run: _RCDMRun, tr: _Trainer, meta: dict[str, Any]) -> None:
    """``rcdm_step{S}.pth`` (weights) and ``last.pth`` (plus optimizer, scaler, sampler, RNG)."""
    if not run.main:
        return
    weights = {
        "model": tr.model.state_dict(),
        "ema": tr.ema.module.state_dict(),
        "step": tr.step,
        "ema_n": int(tr.ema.n_averaged.item()),
    }
    atomic_torch_save(run.out / f"rcdm_step{tr.step}.pth", {**meta, **weights})
    atomic_torch_save(
        run.last,
        {
            **meta,
            **weights,
            "optimizer": tr.opt.state_dict(),
            "scaler": tr.scaler.state_dict(),
            "sampler": tr.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
    )


def _rcdm_step(run: _RCDMRun, tr: _Trainer, img: torch.Tensor, r: torch.Tensor) -> tuple[float, float]:
    """One denoising step (noise at a random timestep, MSE to it); returns (loss, lr)."""
    cfg, dev = run.cfg, run.device
    x0 = img.to(dev, non_blocking=True).float() / 127.5 - 1.0
    r = r.to(dev, non_blocking=True)
    noise = torch.randn_like(x0)
    t = torch.randint(0, cfg.diffusion_steps, (x0.shape[0],), device=dev)
    a = tr.alphas[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    lr = cfg.lr * min(1.0, (tr.step + 1) / max(1, cfg.warmup_steps))
    for g in tr.opt.param_groups:
        g["lr"] = lr
    with autocast(dev, tr.amp_dtype):
        pred = tr.net(xt, t, r)
    loss = torch.nn.functional.mse_loss(pred.float(), noise)
    try:
        value = check_finite(loss.item())
    except NonFiniteLoss:
        raise DejavuError(f"{run.out}: training diverged at step {tr.step} (loss {loss.item()}); lower lr") from None
    optimizer_step(loss, tr.opt, tr.scaler, cfg.grad_clip, tr.model.parameters())
    tr.ema.update_parameters(tr.model)
    tr.step += 1
    return value, lr


def _train_loop(
    run: _RCDMRun, tr: _Trainer, rep_t: torch.Tensor, cache: torch.Tensor | None, meta: dict[str, Any]
) -> list[float]:
    """Steps up to ``cfg.steps``: metrics every ``log_every``, snapshots every ``snapshot_every``."""

    cfg, out = run.cfg, run.out
    ds = _TrainImages(run.index, run.indices, _InputAndTarget(run.ssl_size, cfg.image_size), cache)
    # own generator: creating the iterator must not consume the global RNG (exact resume)
    dl = torch.utils.data.DataLoader(
        ds,
        batch_sampler=tr.sampler,
        num_workers=cfg.num_workers if cache is None else 0,
        generator=torch.Generator().manual_seed(cfg.seed + run.rank),
    )
    losses: list[float] = []
    window: list[float] = []
    t1 = time.time()
    tr.model.train()
    it = iter(dl)
    bar = progress(range(tr.step, cfg.steps), desc=f"rcdm: training {out.name}", total=cfg.steps - tr.step)
    for _ in bar:
        img, pos = next(it)
        loss, lr = _rcdm_step(run, tr, img, rep_t[pos])
        losses.append(loss)
        window.append(loss)
        if run.main and (tr.step % cfg.log_every == 0 or tr.step == cfg.steps):
            rec = {"step": tr.step, "loss": float(np.mean(window)), "lr": lr, "seconds": round(time.time() - t1, 3)}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            window = []
        if tr.step % cfg.snapshot_every == 0 and tr.step < cfg.steps:
            _save(run, tr, meta)
    return losses


@torch.enable_grad()  # callers (e.g. an attack run in the same process) may have disabled grad globally
@locks_output("rcdm train")
def train_rcdm(
    cfg: RCDMConfig,
    ssl_model: str | os.PathLike,
    partition: str | os.PathLike,
    data: Any,
    out: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    indices: np.ndarray | None = None,
) -> RCDMTrainResult:
    """Train (or resume) an RCDM for the SSL checkpoint ``ssl_model``.

    Args:
        cfg: the RCDM and its training. On resume the stored config is used, except
            ``steps`` (so a run can be extended).
        ssl_model: the frozen SSL checkpoint whose representations condition the RCDM.
        partition: the partition folder; its public set is the training set.
        data: a :class:`dejavu.data.imagefolder.DataPaths` or a dataset root (``ROOT/train``).
        out: the run folder.
        resume: continue from ``OUT/last.pth`` (a fresh start if absent).
        force: discard an existing run in OUT.
        device: cpu | cuda | cuda:N (default: cuda when available).
        indices: overrides the training set (dataset indices).

    Returns:
        A :class:`RCDMTrainResult` (last.pth, the step reached, this call's losses and times).
    """

    out = Path(out)
    run = _open_run(cfg, ssl_model, partition, data, out, resume, force, device, indices)
    seed_everything(run.cfg.seed + run.rank)
    t0 = time.time()
    reps, cache = _representations(run)
    prep = time.time() - t0
    rep_t = torch.from_numpy(np.asarray(reps, dtype=np.float32))
    tr = _build_trainer(run, rep_t)
    meta = _meta(run, rep_t.shape[1])
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {k: v for k, v in meta.items() if k != "format"})
    t1 = time.time()
    losses = _train_loop(run, tr, rep_t, cache, meta)
    seconds = time.time() - t1
    state = run.state
    if state is None or tr.step > int(state["step"]) or not (out / f"rcdm_step{tr.step}.pth").exists():
        _save(run, tr, meta)
    if run.dist:
        torch.distributed.barrier()
    return RCDMTrainResult(
        out=out,
        checkpoint=run.last,
        step=tr.step,
        losses=losses,
        seconds=seconds,
        prep_seconds=prep,
        num_train=len(run.indices),
    )
