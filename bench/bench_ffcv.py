"""Training-input throughput: the FFCV loader vs the torchvision loader, per core.

Both read the same generated ImageNet-sized images (about 500 x 375, JPEG quality 90;
FFCV from a beton written with --max-res 512 --quality 90) and produce the same two
224 px views per image (dejavu.ssl.augment presets), exactly as ``dejavu train`` consumes
them (``LoaderImages`` / ``FFCVImages``.epoch). One core each: torch 1 thread, the
torchvision path decodes in the main process (0 workers), FFCV with 1 thread. FFCV's
first epoch (numba compilation) is not timed.

Presets: ``crop`` = random resized crop + flip only (the decoding-bound part, which FFCV
does); ``paper`` = plus colour jitter, greyscale, blur, solarize (done in torch after
decoding on both paths).

Prints a table and appends it to bench/RESULTS.md.

Usage: python bench/bench_ffcv.py [--images 256 --batch 64 --epochs 2 --presets crop,paper --max-res 512,256]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(root: Path, n: int, classes: int = 4, seed: int = 0) -> None:
    """ImageNet-like JPEGs: smooth colour fields + texture, 500x375 or 375x500, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        c = root / "train" / f"n{i % classes:08d}"
        c.mkdir(parents=True, exist_ok=True)
        w, h = (500, 375) if i % 3 else (375, 500)
        low = rng.uniform(0, 255, size=(h // 25 + 1, w // 25 + 1, 3))
        img = np.kron(low, np.ones((25, 25, 1)))[:h, :w]
        img = np.clip(img + rng.normal(0, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(c / f"n{i % classes:08d}_{i}.JPEG", quality=90)


def _time_epochs(src, views, n: int, batch: int, epochs: int, warm: int) -> float:
    """Images per second over ``epochs`` timed epochs after ``warm`` untimed ones."""
    import torch

    from dejavu.ssl.data import epoch_permutation

    steps = n // batch
    done, t = 0, 0.0
    for e in range(warm + epochs):
        t0 = time.perf_counter()
        for vs, _ in src.epoch(epoch_permutation(n, 0, e), batch, steps, 0, 1, views):
            assert vs[0].shape[0] == batch and vs[0].dtype == torch.float32
        if e >= warm:
            t += time.perf_counter() - t0
            done += steps * batch
    return done / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--presets", default="crop,paper")
    ap.add_argument("--max-res", default="512,256", help="FFCV betons to compare (longer side, comma-separated)")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("DEJAVU_NO_PROGRESS", "1")
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.ffcv.betons import BetonOptions, write_beton
    from dejavu.ffcv.loader import FFCVImages
    from dejavu.ssl.augment import build_views
    from dejavu.ssl.data import LoaderImages

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root, a.images)
        index = scan_imagefolder(root / "train")
        idx = np.arange(len(index))
        res_list = [int(r) for r in a.max_res.split(",")]
        write_s = {}
        for r in res_list:
            t = time.perf_counter()
            write_beton(root / f"train{r}.beton", index, idx, BetonOptions(max_res=r, quality=90, workers=1))
            write_s[r] = time.perf_counter() - t
        rows = []
        for preset in a.presets.split(","):
            views = build_views(preset, a.size, 2)
            tv = _time_epochs(LoaderImages(index, idx, 0, False), views, len(idx), a.batch, a.epochs, 0)
            ff = [
                _time_epochs(
                    FFCVImages(root / f"train{r}.beton", index, idx, 1),
                    views,
                    len(idx),
                    a.batch,
                    a.epochs,
                    1,
                )
                for r in res_list
            ]
            rows.append((preset, tv, ff))
    head = (
        f"FFCV vs torchvision loader, one core, {a.images} images ~500x375 q90, two {a.size} px views, "
        f"batch {a.batch} ({platform.node()}, {platform.processor() or platform.machine()}, "
        f"{datetime.date.today()}; betons written at "
        + ", ".join(f"{a.images / write_s[r]:.0f} images/s (max-res {r})" for r in res_list)
        + " with 1 worker)"
    )
    cols = " | ".join(f"FFCV max-res {r} images/s | ratio" for r in res_list)
    lines = [
        head,
        "",
        f"| preset | torchvision images/s | {cols} |",
        "|---" * (2 + 2 * len(res_list)) + "|",
    ]
    for p, tv, ff in rows:
        lines.append(f"| {p} | {tv:.1f} | " + " | ".join(f"{f:.1f} | {f / tv:.2f}x" for f in ff) + " |")
    text = "\n".join(lines)
    print(text)
    if not a.no_results:
        res = Path(__file__).with_name("RESULTS.md")
        with open(res, "a") as f:
            f.write(
                ("" if res.exists() and res.stat().st_size else "# Benchmark results\n")
                + "\n## bench_ffcv.py\n\n"
                + text
                + "\n"
            )


if __name__ == "__main__":
    main()
