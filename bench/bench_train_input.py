"""Training input vs pure compute (issue 14.1): step time per batch of

* ``compute``   -- forward+backward+optimizer on ready tensors of the same shape,
* ``batched``   -- uint8 batch -> :class:`dejavu.ssl.batch_augment.BatchViews` -> step,
* ``per_image`` -- uint8 batch -> torchvision v2 views one image at a time -> step,

measured side by side (interleaved rounds, median). Rows: the demo setting on the CPU
(VICReg, smallcnn 32 px, batch 100, ``mild``; plus the ``paper`` preset at that size);
with CUDA: ResNet-18 at 64 px and ResNet-50 at 224 px, bf16 autocast, channels_last,
with and without ``torch.compile`` (per-image only without compile: it is the slow path).

Usage: python bench/bench_train_input.py [--steps 6] [--no-append] [--cuda-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _machine import cpu_name  # bench/_machine.py (run as python bench/<name>.py)

from dejavu.ssl.augment import build_views
from dejavu.ssl.batch_augment import BatchViews
from dejavu.ssl.config import TrainConfig
from dejavu.ssl.methods.base import StepInfo
from dejavu.ssl.train import build_engine, train_step


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_setting(
    name: str, cfg: TrainConfig, dev: torch.device, steps: int, compile_: bool, per_image: bool = True
) -> dict:
    eng = build_engine(cfg, dev)
    if compile_:
        eng.trainable = torch.compile(eng.trainable)
    B, S = cfg.batch_size, cfg.image_size
    pool = torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8)
    if dev.type == "cuda":
        pool = pool.pin_memory()
    views = build_views(cfg.augment, S, 2)
    bv = BatchViews(views, dev)
    ready = [v.to(dev) for v in bv(pool)]
    info = StepInfo(0, 10**6, 0, 0)

    def compute():
        train_step(eng, ready, torch.zeros(B, dtype=torch.long), info)

    def batched():
        train_step(eng, bv(pool), torch.zeros(B, dtype=torch.long), info)

    def per_img():
        vs = [torch.stack([t(im) for im in pool]) for t in views]
        train_step(eng, vs, torch.zeros(B, dtype=torch.long), info)

    fns = {"compute": compute, "batched": batched}
    if per_image:
        fns["per_image"] = per_img
    for f in fns.values():  # warm-up (and compile)
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for k, f in fns.items():
            _sync(dev)
            t = time.perf_counter()
            f()
            _sync(dev)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "setting": name,
        "compute_ms": med["compute"] * 1e3,
        "batched_ms": med["batched"] * 1e3,
        "batched_ratio": med["batched"] / med["compute"],
    }
    if per_image:
        row.update(per_image_ms=med["per_image"] * 1e3, per_image_ratio=med["per_image"] / med["compute"])
    return row


def settings(cuda: bool, cuda_only: bool):
    if not cuda_only:
        demo = {"method": "vicreg", "arch": "smallcnn", "projector": "1024-1024", "image_size": 32, "batch_size": 100}
        yield "cpu demo vicreg smallcnn 32px b100 mild", TrainConfig(**demo, augment="mild"), "cpu", False
        yield "cpu demo vicreg smallcnn 32px b100 paper", TrainConfig(**demo, augment="paper"), "cpu", False
    if cuda:
        for comp in (False, True):
            r18 = TrainConfig(
                method="vicreg",
                arch="resnet18",
                projector="2048-2048",
                image_size=64,
                batch_size=256,
                augment="paper",
                amp="bf16",
                channels_last=True,
                optimizer="lars",
            )
            yield f"cuda resnet18 64px b256 paper bf16 cl compile={comp}", r18, "cuda", comp
            r50 = TrainConfig(
                method="vicreg",
                arch="resnet50",
                projector="8192-8192-8192",
                image_size=224,
                batch_size=128,
                augment="paper",
                amp="bf16",
                channels_last=True,
                optimizer="lars",
            )
            yield f"cuda resnet50 224px b128 paper bf16 cl compile={comp}", r50, "cuda", comp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--cuda-only", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name, cfg, dev, comp in settings(torch.cuda.is_available(), a.cuda_only):
        # the per-image path at 224 px is seconds per step: time it without compile only
        rows.append(bench_setting(name, cfg, torch.device(dev), a.steps, comp, per_image=not comp))
        print(rows[-1], flush=True)
    head = "| setting | compute ms | batched ms | batched / compute | per-image ms | per-image / compute |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        pi = f"{r['per_image_ms']:.1f} | {r['per_image_ratio']:.2f}" if "per_image_ms" in r else "- | -"
        lines.append(
            f"| {r['setting']} | {r['compute_ms']:.1f} | {r['batched_ms']:.1f} | {r['batched_ratio']:.2f} | {pi} |"
        )
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(
                f"\n## bench_train_input.py — {stamp}, {dev}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} thread(s), median of {a.steps} interleaved steps\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
