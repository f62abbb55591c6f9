"""Train one RCDM for one frozen SSL model, on the partition's public set (DESIGN 2.8).

What is learned: ``p(image | representation)`` where the representation is
``concat(backbone(x), projector(x))`` of the *full* image ``x`` (eval transform at the SSL
model's resolution), or its logits for a supervised model; the image is the same picture
seen through the same evaluation view at the RCDM resolution S -- short side resized to
``int(256 * S / 224)`` (bilinear), centre crop S, as the original's ``RCDM_utils.Transform``
-- scaled to ``[-1, 1]``. So the RCDM draws what the SSL model sees.

Decisions:

* The SSL model is frozen, so the representations of the training set are computed once
  (one pass, progress bar) and cached in ``OUT/reps.npy`` (keyed by the SSL checkpoint's
  sha256 in ``OUT/reps.json``); the training loop never runs the SSL network. When the
  training images fit in ``cache_images_gb`` they are decoded once in the same pass and
  kept in memory as uint8 -- on a CPU this makes training cost only the UNet.
* Training is counted in optimizer steps (not epochs); batches are epoch-wise permutations
  from a seeded generator whose state is saved, so ``--resume`` continues the same stream.
* AdamW, linear warm-up then constant learning rate (guided-diffusion's recipe), gradient
  clipping, EMA of the weights with warm-up ``min(decay, (1+n)/(10+n))`` (so short CPU runs
  get a useful EMA), EMA weights used for sampling. AMP (bf16, or fp16 with a grad scaler)
  on CUDA when ``amp`` is on.
* Files: ``OUT/config.json``, ``OUT/metrics.jsonl``, ``OUT/rcdm_step{S}.pth`` (every
  ``snapshot_every`` steps and at the end; weights + config), ``OUT/last.pth`` (plus the
  optimizer, scaler and sampler state, for resume). All written atomically.

Scale: under ``torchrun`` or a SLURM job (one process per GPU; e.g. submitted with
``dejavu.launch`` / submitit, which set the usual ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``
variables), call this after ``torch.distributed.init_process_group``: the UNet is wrapped in
DistributedDataParallel, each rank draws its own batches (seed + rank), the effective batch
is ``batch_size * world_size``, and only rank 0 writes files. Requeued jobs pass ``resume``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dejavu import DejavuError
from dejavu.config import to_dict
from dejavu.io import (
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_json,
    check_can_write,
    load_npy,
    locks_output,
    read_json,
)
from dejavu.rcdm.model import FORMAT, RCDM, RCDMConfig, load_rcdm, make_scheduler, resolve_cond


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
        raise DejavuError(f"{last}: was trained on images seen as {stored}, this version uses "
                          f"{describe_rcdm_view(size)}; pass --force to start over")


class _ImagePair:
    """Picklable transform: PIL image -> (SSL input, RCDM target as uint8 CHW), both the
    evaluation view (resize 256/224 of the size, centre crop)."""

    def __init__(self, ssl_size: int, rcdm_size: int):
        from dejavu.data.transforms import eval_transform

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

    def __init__(self, index, indices: np.ndarray, pair: _ImagePair, cache: torch.Tensor | None):
        self.index, self.indices, self.pair, self.cache = index, indices, pair, cache

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, pos: int):
        if self.cache is not None:
            return self.cache[pos], pos
        from dejavu.data.dataset import load_rgb

        return self.pair.rcdm(load_rgb(self.index.path(int(self.indices[pos])))), pos


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


def _embed_dataset(ssl_model, index, indices, pair: _ImagePair, kind: str, device, batch_size: int, num_workers: int,
                   keep_images: bool) -> tuple[np.ndarray, torch.Tensor | None]:
    from dejavu.data.dataset import IndexedImages
    from dejavu.utils import progress

    ds = IndexedImages(index, indices, pair)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
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


def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("module."):]: v for k, v in sd.items() if k.startswith("module.")}


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

    ``data`` is a :class:`dejavu.data.imagefolder.DataPaths` or a dataset root (``ROOT/train``).
    ``indices`` overrides the training set (default: ``Partition.attack_public()``).
    On resume the stored config is used, except ``steps`` (so a run can be extended).
    """
    from dejavu.data.imagefolder import DataPaths, scan_imagefolder
    from dejavu.partition import Partition
    from dejavu.ssl.checkpoint import load_model
    from dejavu.utils import progress, seed_everything

    cfg.validate()
    out = Path(out)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    main = rank == 0
    last = out / "last.pth"
    if resume and not last.is_file():
        resume = False  # nothing to resume: start (a requeued job that never saved)
        if out.exists() and any(p.suffix == ".pth" for p in out.iterdir()) and not force:
            raise DejavuError(f"{out}: has snapshots but no last.pth to resume from; pass --force to start over")
    if not resume and main:
        check_can_write(out, force)
        if force and out.exists():
            for p in list(out.glob("rcdm_step*.pth")) + [last, out / "metrics.jsonl", out / "reps.npy", out / "reps.json"]:
                if p.exists():
                    p.unlink()
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)

    state: dict[str, Any] | None = None
    if resume:
        state = load_rcdm(last).raw
        from dejavu.config import from_dict

        stored = dict(state["config"])
        stored["steps"] = cfg.steps
        cfg = from_dict(RCDMConfig, stored, source=f"{last} config")

    paths = data if isinstance(data, DataPaths) else DataPaths.resolve(data=data)
    index = scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    if indices is None:
        indices = part.attack_public()
    indices = index.check_indices(np.asarray(indices), f"{partition} public set")
    loaded = load_model(ssl_model, map_location="cpu")
    _check_view(state, cfg.image_size, last)
    if state is not None and state["ssl"].get("sha256") != loaded.sha256:
        raise DejavuError(f"{last}: was trained on SSL checkpoint {state['ssl'].get('path')} "
                          f"(sha256 {str(state['ssl'].get('sha256'))[:12]}), not {ssl_model}")
    if loaded.fingerprint:
        index.fingerprint.check(loaded.fingerprint, what=f"SSL checkpoint {ssl_model}")
    kind = resolve_cond(cfg, loaded.model)
    ssl_size = int(loaded.config.get("image_size") or 224)
    seed_everything(cfg.seed + rank)
    t0 = time.time()

    # 1. representations (cached on disk) and images (cached in memory when small)
    pair = _ImagePair(ssl_size, cfg.image_size)
    n = len(indices)
    keep = n * 3 * cfg.image_size**2 <= cfg.cache_images_gb * 2**30
    key = {"ssl_sha256": loaded.sha256, "embed": kind, "ssl_image_size": ssl_size, "n": int(n),
           "indices_sha": _sha(indices)}
    reps_file, reps_key = out / "reps.npy", out / "reps.json"
    reps = None
    if reps_file.is_file() and reps_key.is_file() and read_json(reps_key) == key:
        reps = load_npy(reps_file)
    if reps is None or keep:
        new_reps, cache = _embed_dataset(loaded.model, index, indices, pair, kind, dev, cfg.ssl_batch_size,
                                         cfg.num_workers, keep)
        reps = new_reps if reps is None else reps
        if main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(reps_file, reps)
            atomic_write_json(reps_key, key)
    else:
        cache = None
    loaded.model.cpu()
    prep = time.time() - t0

    # 2. model, optimiser, EMA
    rep_t = torch.from_numpy(np.asarray(reps, dtype=np.float32))
    model = RCDM(cfg, rep_t.shape[1])
    model.set_rep_stats(rep_t)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=_ema_avg_fn(cfg.ema_decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = _PermutationBatches(n, cfg.batch_size, cfg.seed + rank)
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
    model.to(dev)
    ema.to(dev)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if dist else model
    sched = make_scheduler(cfg, "ddpm")
    alphas = sched.alphas_cumprod.to(dev)
    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if state is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])

    ssl_info = {"path": str(loaded.path), "sha256": loaded.sha256, "epoch": loaded.epoch,
                "config": loaded.config, "embed": kind, "image_size": ssl_size}
    meta = {"format": FORMAT, "config": to_dict(cfg), "rep_dim": int(rep_t.shape[1]), "ssl": ssl_info,
            "fingerprint": index.fingerprint.to_dict(),
            "data": {"images": str(paths.images), "bboxes": str(paths.bboxes) if paths.bboxes else None,
                     "partition": str(partition), "num_train": int(n),
                     "rcdm_view": describe_rcdm_view(cfg.image_size)}}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {k: v for k, v in meta.items() if k != "format"})

    def save(final: bool = False) -> None:
        if not main:
            return
        weights = {"model": model.state_dict(), "ema": ema.module.state_dict(), "step": step,
                   "ema_n": int(ema.n_averaged.item())}
        atomic_torch_save(out / f"rcdm_step{step}.pth", {**meta, **weights})
        atomic_torch_save(last, {**meta, **weights, "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                                 "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state()})

    # 3. the loop
    ds = _TrainImages(index, indices, pair, cache)
    # own generator: creating the iterator must not consume the global RNG (exact resume)
    dl = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers if cache is None else 0,
                                     generator=torch.Generator().manual_seed(cfg.seed + rank))
    losses: list[float] = []
    window: list[float] = []
    t1 = time.time()
    model.train()
    it = iter(dl)
    bar = progress(range(step, cfg.steps), desc=f"rcdm: training {out.name}", total=cfg.steps - step)
    for _ in bar:
        img, pos = next(it)
        x0 = img.to(dev, non_blocking=True).float() / 127.5 - 1.0
        r = rep_t[pos].to(dev, non_blocking=True)
        noise = torch.randn_like(x0)
        t = torch.randint(0, cfg.diffusion_steps, (x0.shape[0],), device=dev)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
            pred = net(xt, t, r)
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        if not math.isfinite(loss.item()):
            raise DejavuError(f"{out}: training diverged at step {step} (loss {loss.item()}); lower lr")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        ema.update_parameters(model)
        step += 1
        losses.append(loss.item())
        window.append(loss.item())
        if main and (step % cfg.log_every == 0 or step == cfg.steps):
            rec = {"step": step, "loss": float(np.mean(window)), "lr": lr, "seconds": round(time.time() - t1, 3)}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            window = []
        if step % cfg.snapshot_every == 0 and step < cfg.steps:
            save()
    seconds = time.time() - t1
    if state is None or step > int(state["step"]) or not (out / f"rcdm_step{step}.pth").exists():
        save(final=True)
    if dist:
        torch.distributed.barrier()
    return RCDMTrainResult(out=out, checkpoint=last, step=step, losses=losses, seconds=seconds, prep_seconds=prep,
                           num_train=int(n))


def _sha(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()[:16]

