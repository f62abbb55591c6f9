"""``dejavu attack`` wall time vs the pure forward time of the same two models over the
same images (issue 14.3), at the demo scale (10 classes x 320 images, 32 px, npc 10,
smallcnn + 1024-1024 projector, k 20), on the CPU (or CUDA when available).

Breakdown, each part timed on its own over the attack's images: decode+crop (PIL, draft
for full images), transform (eval transform), forward (2 models, ready tensors), KNN
(4 model/set pairs), metrics (compute_all with the attack's bootstrap), rest (I/O, crop
geometry, setup = wall - sum).

Usage: python bench/bench_attack.py [--no-append] [--device cpu|cuda]
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

from dejavu.analysis.summary import compute_all
from dejavu.analysis.tables import pair_scores_from_arrays
from dejavu.attack.embed import autocast_dtype
from dejavu.attack.knn import knn
from dejavu.attack.run import AttackConfig, attack
from dejavu.data.dataset import load_rgb
from dejavu.data.fastjpeg import load_rgb_reduced
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.data.synth import SynthConfig, generate
from dejavu.data.transforms import eval_transform, resize_size
from dejavu.io import atomic_torch_save
from dejavu.partition import partition
from dejavu.ssl.model import ModelSpec, SSLModel

PROJ = "1024-1024"


def make_ckpt(path: Path, index, which: str, seed: int) -> Path:
    torch.manual_seed(seed)
    m = SSLModel(ModelSpec("smallcnn", PROJ, 0)).train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(64, 3, 32, 32))
    cfg = {"method": "vicreg", "arch": "smallcnn", "projector": PROJ, "image_size": 32, "npc": 10, "set": which}
    atomic_torch_save(
        path,
        {
            "format": "dejavu-ckpt/1",
            "model": m.eval().state_dict(),
            "epoch": 1,
            "config": cfg,
            "fingerprint": index.fingerprint.to_dict(),
        },
    )
    return path


def _t(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def breakdown(out: Path, index, models, device: str, k: int, n_boot: int) -> dict[str, float]:
    pub = np.load(out / "public_idxs.npy")
    items = [(index.path(int(g)), None) for g in pub]
    for y in "AB":
        idx, boxes = np.load(out / f"A_attk_{y}_attk_idxs.npy"), np.load(out / f"crops_{y}.npy")
        items += [(index.path(int(g)), tuple(b)) for g, b in zip(idx, boxes.tolist())]
    tf, r = eval_transform(32), resize_size(32)
    imgs: list = []
    dec = _t(lambda: imgs.extend(load_rgb_reduced(p, r) if b is None else load_rgb(p).crop(b) for p, b in items))
    xs: list = []
    tr = _t(lambda: xs.extend(tf(im) for im in imgs))
    x = torch.stack(xs)
    dtype = autocast_dtype(device)
    for m in models:
        m.eval().to(device)

    def fwd():
        with (
            torch.no_grad(),
            torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            for i in range(0, len(x), 256):
                xb = x[i : i + 256].to(device)
                for m in models:
                    m.embed(xb, "projector").float().cpu()

    fwd()  # warm-up
    fw = min(_t(fwd), _t(fwd))  # the faster of two runs (shared machine)
    with torch.no_grad():
        e = [
            [m.embed(x[i : i + 256].to(device), "projector").float().cpu().numpy() for i in range(0, len(x), 256)]
            for m in models
        ]
    e = [np.concatenate(v) for v in e]
    npub = len(pub)
    kn = _t(lambda: [knn(ej[npub:], ej[:npub], k, backend="torch", device=device) for ej in e for _ in "AB"])
    arrays = {}
    for name in ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B"):
        arrays[name] = {key: np.load(out / f"{name}_{key}.npy") for key in ("attk_idxs", "labels", "neighb_labels")}
    pairs = {n: pair_scores_from_arrays(a, k, len(index.classes)) for n, a in arrays.items()}
    me = _t(lambda: compute_all(pairs, len(index.classes), n_boot=n_boot, seed=0))
    return {"decode+crop": dec, "transform": tr, "forward": fw, "knn": kn, "metrics": me, "n_images": len(items)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("DEJAVU_THREADS", "1")))
    t0 = time.perf_counter()
    import torchvision.ops  # noqa: F401  (torchvision's first import pulls torch._dynamo: seconds)
    from torchvision import transforms  # noqa: F401

    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(
            root / "data",
            SynthConfig(classes=10, per_class=320, size=32, annotated_fraction=0.375, val_per_class=10, seed=0),
            force=True,
        )
        paths = DataPaths.resolve(data=root / "data")
        index = scan_imagefolder(paths.images)
        partition(paths, [10], root / "part", force=True, index=index)
        ck = [make_ckpt(root / f"{s}.pth", index, s, 0 if s == "A" else 1) for s in "AB"]
        walls = {}
        for w in range(min(2, os.cpu_count() or 1) + 1):  # DataLoader workers: chosen by measurement
            cfg = AttackConfig(npc=10, k=20, k_attk=20, device=a.device, workers=w, n_boot=a.n_boot)
            walls[w] = _t(
                lambda w=w, cfg=cfg: attack(
                    ck[0], ck[1], root / "part", paths, root / f"atk{w}", cfg=cfg, cache_dir="", index=index, force=True
                )
            )
        best = min(walls, key=walls.get)
        wall = walls[best]
        from dejavu.ssl.checkpoint import load_model

        models = [load_model(p).model for p in ck]
        parts = breakdown(root / f"atk{best}", index, models, a.device, 20, a.n_boot)
    n = parts.pop("n_images")
    rest = wall - sum(parts.values())
    lines = [f"| part ({n} images, 2 models, {a.device}) | seconds | share of wall |", "|---|---|---|"]
    for k, v in {**parts, "rest (I/O, crop geometry, checkpoint hashing, setup)": rest}.items():
        lines.append(f"| {k} | {v:.2f} | {v / wall:.0%} |")
    for w, t in walls.items():
        lines.append(
            f"| dejavu attack wall, {w} DataLoader worker(s){' (best)' if w == best else ''} | {t:.2f} | "
            f"wall / forward = {t / parts['forward']:.2f} |"
        )
    lines.append(
        f"| one-time imports before the attack (torch, torchvision, dejavu; not in wall) | {imports:.2f} | - |"
    )
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else cpu_name()
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(
                f"\n## bench_attack.py — {stamp}, {dev}, {torch.get_num_threads()} thread(s), demo scale, "
                f"torch {torch.__version__}\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
