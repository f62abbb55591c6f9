"""Projected time of the paper-scale attack from rates measured here (issue 14.3).

Workload (one model pair, as in the paper): P public images and two attacked sets of C
background crops each. Every image is decoded once and forwarded through both models
(ResNet-101 + 8192-8192-8192 projector at 224 px, as ``dejavu attack`` does: bf16 autocast
and channels_last on CUDA, fp32 elsewhere); each model's 2C crop embeddings search its P
public embeddings (exact KNN, k = 100, the attack's backend).

Measured on this machine, each on its own:
1. forward: images/s of one model on ready tensors (the device's pure compute);
2. decode + evaluation transform: images/s on ONE core through the attack's own batch
   builder (``ImageCrops.uint8_batch``) on generated ImageNet-sized JPEGs (500 x 375, q90):
   full images (the public set, draft decoding where exact) and background crops;
3. KNN: seconds per (query, public) pair at d = 8192 with the attack's backend.

Projection: decoding overlaps the forward (a background thread or DataLoader workers), so
one device's wall is max(forward, decode / cores) + KNN; a node with G devices and N cores
divides each part by its resources. The measured rates are printed beside the projection
so that it can be checked, and the table is appended to bench/RESULTS.md.

Usage: python bench/bench_paper_projection.py [--device cuda] [--node-gpus 8 --node-cores 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _machine import cpu_name  # bench/_machine.py (run as python bench/<name>.py)
from bench_jpeg import make_set  # the ImageNet-sized generated JPEGs

from dejavu.attack.embed import ImageCrops, autocast_dtype
from dejavu.attack.knn import knn, resolve_backend
from dejavu.data.transforms import eval_transform
from dejavu.ssl.model import ModelSpec, SSLModel


def forward_rate(device: str, n: int, batch: int, arch: str, projector: str) -> float:
    """Images/s of one model's projector embedding on ready tensors (after a warm-up)."""
    model = SSLModel(ModelSpec(arch, projector, 0)).eval().to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(device)

    def run(batches: int) -> None:
        with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            for _ in range(batches):
                model.embed(x, "projector").float()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    run(1)
    batches = max(1, n // batch)
    t = time.perf_counter()
    run(batches)
    return batches * batch / (time.perf_counter() - t)


def decode_rate(paths: list[Path], crops: bool) -> float:
    """Images/s on one core of the attack's decode + evaluation transform (uint8 batches)."""
    rng = np.random.default_rng(0)
    boxes = None
    if crops:  # background crops: a box-free band, about 25-60% of each side
        boxes = []
        for _ in paths:  # inside 375 x 375, so within landscape and portrait images alike
            cw, ch = int(375 * rng.uniform(0.25, 0.6)), int(375 * rng.uniform(0.25, 0.6))
            boxes.append((0, 375 - ch, cw, 375))
    ds, _, _ = ImageCrops(paths, boxes, eval_transform(224)).deferred_normalize()
    ds.uint8_batch(0, min(4, len(ds)))  # warm-up
    t = time.perf_counter()
    ds.uint8_batch(0, len(ds))
    return len(ds) / (time.perf_counter() - t)


def knn_pair_seconds(device: str, n_q: int, n_p: int, dim: int) -> float:
    """Seconds per (query, public) pair of the attack's exact KNN (k = 100) at ``dim``."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_q, dim), dtype=np.float32)
    p = rng.standard_normal((n_p, dim), dtype=np.float32)
    backend = resolve_backend("auto", device)
    knn(q[:8], p[:256], 10, backend=backend, device=device)  # warm-up
    t = time.perf_counter()
    knn(q, p, 100, backend=backend, device=device)
    return (time.perf_counter() - t) / (n_q * n_p)


def project(rates: dict[str, float], public: int, crops: int, devices: int, cores: int) -> dict[str, float]:
    """Seconds per part and in all for the workload on ``devices`` devices and ``cores`` cores."""
    images = public + 2 * crops
    fwd = 2 * images / rates["forward"] / devices
    dec = (public / rates["decode_full"] + 2 * crops / rates["decode_crop"]) / cores
    knn_s = 2 * (2 * crops) * public * rates["knn_pair_s"] / devices
    return {"forward": fwd, "decode": dec, "knn": knn_s, "total": max(fwd, dec) + knn_s}


def _fmt(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--public", type=int, default=509_000, help="public images of the paper's attack")
    ap.add_argument("--crops", type=int, default=272_000, help="attacked crops per set (A and B)")
    ap.add_argument("--arch", default="resnet101")
    ap.add_argument("--projector", default="8192-8192-8192")
    ap.add_argument("--n-forward", type=int, default=None, help="images timed (default: 2048 CUDA, 16 CPU)")
    ap.add_argument("--n-jpeg", type=int, default=48, help="generated ImageNet-sized JPEGs decoded")
    ap.add_argument("--node-gpus", type=int, default=8)
    ap.add_argument("--node-cores", type=int, default=96)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    n_fwd = args.n_forward or (2048 if cuda else 16)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_set(Path(tmp), args.n_jpeg)
        rates = {
            "forward": forward_rate(args.device, n_fwd, 256 if cuda else 8, args.arch, args.projector),
            "decode_full": decode_rate(paths, crops=False),
            "decode_crop": decode_rate(paths, crops=True),
            "knn_pair_s": knn_pair_seconds(args.device, 4096 if cuda else 256, 65536 if cuda else 8192, 8192),
        }
    here_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    here = project(rates, args.public, args.crops, 1, here_cores)
    node = project(rates, args.public, args.crops, args.node_gpus, args.node_cores)
    dev = torch.cuda.get_device_name(0) if cuda else cpu_name()
    lines = [
        f"## bench_paper_projection.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {dev}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
        "",
        f"Measured: {args.arch} + {args.projector} forward {rates['forward']:.1f} img/s "
        f"({'bf16, channels_last' if cuda else 'fp32'}); decode + eval transform on one core "
        f"{rates['decode_full']:.0f} img/s (full 500x375) and {rates['decode_crop']:.0f} img/s (crops); "
        f"KNN {rates['knn_pair_s'] * 1e9:.2f} ns per (query, public) pair at d 8192 "
        f"({resolve_backend('auto', args.device)}).",
        f"Workload: {args.public:,} public + 2 x {args.crops:,} crops, 2 models.",
        "",
        f"| part | this machine (1 {args.device.split(':')[0]}, {here_cores} cores) | "
        f"node ({args.node_gpus} such devices, {args.node_cores} cores) |",
        "|---|---|---|",
        *(f"| {k} | {_fmt(here[k])} | {_fmt(node[k])} |" for k in ("forward", "decode", "knn", "total")),
        "",
        "(decode overlaps the forward: total = max(forward, decode) + knn)",
        "",
    ]
    print("\n".join(lines))
    if not args.no_append:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
