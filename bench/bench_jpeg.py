"""ImageNet-sized JPEG decoding (issue 14.2), on a set generated here in a temp dir
(500 x 375, quality 90, photo-like content).

Tables:
1. decode + RandomResizedCrop(224) images/s on one core: PIL, PIL draft (not valid for
   random crops -- shown for scale), torchvision.io.decode_jpeg on the CPU, and batched
   decode_jpeg on CUDA when available.
2. evaluation path (resize round(256/224*S), centre-crop S): full vs draft decode,
   images/s and the draft tolerance (max / mean abs pixel difference in [0, 1] units).
3. DataLoader workers (0..cpu count) for decode + RRC: images/s; the best is printed.

Usage: python bench/bench_jpeg.py [--n 96] [--no-append]
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _machine import cpu_name  # bench/_machine.py (run as python bench/<name>.py)

from dejavu.data.dataset import load_rgb
from dejavu.data.fastjpeg import load_rgb_reduced
from dejavu.data.transforms import eval_transform, resize_size


def photo_like(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    f = rng.uniform(2, 9, 3)
    img = np.stack([np.sin(f[c] * xx + c) * 0.5 + 0.5 * np.cos(f[2 - c] * yy - c) for c in range(3)], -1)
    for _ in range(20):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.02, 0.12)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(-1, 1, 3)
    img = np.clip(img * 0.5 + 0.5 + rng.normal(0, 0.03, img.shape), 0, 1)
    return Image.fromarray((img * 255).astype(np.uint8))


def make_set(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        w, h = (500, 375) if i % 4 else (375, 500)  # ImageNet's typical sizes, some portrait
        p = root / f"img_{i:04d}.JPEG"
        photo_like(w, h, i).save(p, quality=90)
        paths.append(p)
    return paths


def rate(fn, items, reps: int = 1) -> float:
    fn(items[0])
    t = time.perf_counter()
    for _ in range(reps):
        for it in items:
            fn(it)
    return reps * len(items) / (time.perf_counter() - t)


def decode_table(paths: list[Path]) -> list[tuple[str, float]]:
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2 as T

    rrc = T.Compose([T.ToImage(), T.RandomResizedCrop(224, antialias=True)])
    rows = [
        ("PIL decode + RRC224", rate(lambda p: rrc(load_rgb(p)), paths)),
        ("PIL draft(224) decode + RRC224 (not exact for RRC)", rate(lambda p: rrc(load_rgb_reduced(p, 224)), paths)),
        ("torchvision.io.decode_jpeg CPU + RRC224", rate(lambda p: rrc(decode_jpeg(read_file(str(p)))), paths)),
    ]
    if torch.cuda.is_available():
        data = [read_file(str(p)) for p in paths]
        rrc_t = T.RandomResizedCrop(224, antialias=True)
        for _ in range(2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            imgs = decode_jpeg(data, device="cuda")
            out = torch.stack([rrc_t(im) for im in imgs])
            torch.cuda.synchronize()
        rows.append((f"decode_jpeg CUDA batched ({len(data)}) + RRC224", len(data) / (time.perf_counter() - t)))
        del out
    return rows


def eval_table(paths: list[Path]) -> list[tuple[str, float, float, float, float]]:
    rows = []
    for size in (64, 112, 160, 224):
        tf, r = eval_transform(size), resize_size(size)
        full = rate(lambda p, tf=tf: tf(load_rgb(p)), paths)
        fast = rate(lambda p, tf=tf, r=r: tf(load_rgb_reduced(p, r)), paths)
        d = torch.stack([(tf(load_rgb_reduced(p, r)) - tf(load_rgb(p))).abs() for p in paths[:32]])
        d = d * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)  # back to [0, 1] pixel units
        rows.append((f"eval {size} px (resize {r})", full, fast, float(d.max()), float(d.mean())))
    return rows


def workers_table(paths: list[Path]) -> list[tuple[int, float]]:
    from torchvision.transforms import v2 as T

    from dejavu.attack.embed import ImageCrops

    tf = T.Compose([T.ToImage(), T.RandomResizedCrop(224, antialias=True), T.ToDtype(torch.float32, scale=True)])
    ds = ImageCrops(paths, [(0, 0, *Image.open(p).size) for p in paths], tf)  # boxes: full decode
    rows = []
    for w in range((os.cpu_count() or 1) + 1):
        dl = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=w)
        t = time.perf_counter()
        for _ in dl:
            pass
        rows.append((w, len(ds) / (time.perf_counter() - t)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_set(Path(tmp), a.n)
        dec, ev, wk = decode_table(paths), eval_table(paths), workers_table(paths)
    lines = ["| decode + crop, 1 core | images/s |", "|---|---|"]
    lines += [f"| {n} | {r:.0f} |" for n, r in dec]
    lines += [
        "",
        "| evaluation transform, 1 core | full decode img/s | draft img/s | speed-up | max abs diff | mean abs diff |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {f:.0f} | {d:.0f} | {d / f:.2f}x | {mx:.3f} | {mn:.4f} |" for n, f, d, mx, mn in ev]
    best = max(wk, key=lambda r: r[1])
    lines += ["", "| DataLoader workers (decode + RRC224, full decode) | images/s |", "|---|---|"]
    lines += [f"| {w}{' (best)' if (w, r) == best else ''} | {r:.0f} |" for w, r in wk]
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(
                f"\n## bench_jpeg.py — {stamp}, {dev}, {os.cpu_count()} cores, {a.n} generated "
                f"500x375 q90 JPEGs, torch {torch.__version__}\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
