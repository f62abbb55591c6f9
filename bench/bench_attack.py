"""``dejavu attack`` wall time vs the pure forward time of the same two models over the
same images (issue 14.3), at the demo scale (10 classes x 320 images, 32 px, npc 10,
smallcnn + 1024-1024 projector, k 20), on the CPU (or CUDA when available); ``--arch``,
``--size`` and ``--per-class`` give more compute per image (e.g. resnet18 at 64 px).

Each attack (workers 0 = in-process batches decoded by one background thread, overlapping
the forward pass; 1, 2 = DataLoader worker processes) runs ``--repeat`` times (3), each run
right after a pure forward pass of the two models over the same images; the ratio is that
of each such pair (median over the runs): the machine is shared and its load changes
within seconds. The modules the attack imports lazily (faiss, the analysis) are imported
before, like torch: one-time costs of a process, reported on their own line.

Breakdown, each part timed on its own over the attack's images: crop geometry (image
headers + XML + crop search, beside the public embedding in the attack), decode + crop +
transform (uint8 batches as the attack builds them; overlapped with the forward when
workers = 0), forward (2 models, ready tensors), KNN (4 model/set pairs, the attack's
backend), metrics (compute_all with the attack's bootstrap); "not overlapped" = wall -
forward - knn - metrics: the decoding and crop geometry left on the critical path, I/O,
checkpoint loading and setup.

``--nproc 1,2`` (issue 23.3) runs instead the attack under ``torchrun --nproc_per_node N``
(gloo on the CPU, 1 thread per rank) for each N in one run: each rank alternates a pure
forward pass over its share of the attack's images (the batches the attack gives it) and
the attack, between barriers; it reports wall / forward per N, the per-rank rates, and a
PROJECTION for a node of 8 GPUs that scales the paper-scale one-GPU projection
(``--paper-minutes``, the estimate at the top of RESULTS.md) by the measured overhead of
the split.

Usage: python bench/bench_attack.py [--no-append] [--device cpu|cuda] [--arch A --size S]
       [--nproc 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from dejavu.analysis.tables import scores_from_arrays
from dejavu.attack.crops import default_min_crop_px
from dejavu.attack.embed import ImageCrops, autocast_dtype
from dejavu.attack.knn import knn
from dejavu.attack.run import AttackConfig, attack, compute_crops
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.data.synth import SynthConfig, generate
from dejavu.data.transforms import eval_transform
from dejavu.io import atomic_torch_save
from dejavu.partition import Partition, partition
from dejavu.ssl.model import ModelSpec, SSLModel

PROJ = "1024-1024"


def make_ckpt(path: Path, index, which: str, seed: int, arch: str = "smallcnn", size: int = 32) -> Path:
    torch.manual_seed(seed)
    m = SSLModel(ModelSpec(arch, PROJ, 0)).train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(16, 3, size, size))
    cfg = {"method": "vicreg", "arch": arch, "projector": PROJ, "image_size": size, "npc": 10, "set": which}
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


def attack_sets(out: Path, index, size: int) -> list[ImageCrops]:
    """The attack's image sets, read from its files: the public set, then the crops of A and B."""
    pub = np.load(out / "public_idxs.npy")
    sets = [ImageCrops([index.path(int(g)) for g in pub], None, eval_transform(size))]
    for y in "AB":
        idx, boxes = np.load(out / f"A_attk_{y}_attk_idxs.npy"), np.load(out / f"crops_{y}.npy")
        sets.append(
            ImageCrops([index.path(int(g)) for g in idx], [tuple(b) for b in boxes.tolist()], sets[0].transform)
        )
    return sets


def ready_tensor(sets, bounds=None) -> tuple[torch.Tensor, float]:
    """Normalized images of ``sets`` (rows ``bounds[i]`` of set i, default all) as the attack
    builds them, and the seconds spent decoding them into uint8 batches."""
    split = [ds.deferred_normalize() for ds in sets]
    bounds = bounds or [(0, len(s)) for s in sets]
    u8: list = []
    dec = _t(
        lambda: u8.extend(
            s.uint8_batch(i, min(hi, i + 256)) for (s, _, _), (lo, hi) in zip(split, bounds) for i in range(lo, hi, 256)
        )
    )
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in split[0][1:])
    if not u8:  # a rank without images (sets smaller than a batch per rank)
        return torch.zeros(0, 3, 1, 1), dec
    return torch.cat([b.float().div_(255).sub_(mean).div_(std) for b in u8]), dec


def forward_fn(models, x: torch.Tensor, device: str):
    """A pure forward pass of ``models`` over ``x`` in batches of 256, as the attack runs it."""
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

    return fwd


def breakdown(out: Path, index, paths, part_root: Path, models, device: str, size: int, k: int, n_boot: int):
    """Seconds per part over the attack's images (module docstring)."""
    pub = np.load(out / "public_idxs.npy")
    cfg = AttackConfig(npc=10)
    part, min_px = Partition.load(part_root), default_min_crop_px(paths.images)
    bbox = {y: part.load_set(10, f"bbox_{y}") for y in "AB"}
    geo = _t(lambda: [compute_crops(index, paths.annotation_dir, bbox[y], cfg, min_px) for y in "AB"])
    x, dec = ready_tensor(attack_sets(out, index, size))
    fwd = forward_fn(models, x, device)
    fwd()  # warm-up
    with torch.no_grad():
        e = [
            [m.embed(x[i : i + 256].to(device), "projector").float().cpu().numpy() for i in range(0, len(x), 256)]
            for m in models
        ]
    e = [np.concatenate(v) for v in e]
    npub = len(pub)
    kn = _t(lambda: [knn(ej[npub:], ej[:npub], k, device=device) for ej in e for _ in "AB"])
    arrays = {}
    for name in ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B"):
        arrays[name] = {key: np.load(out / f"{name}_{key}.npy") for key in ("attk_idxs", "labels", "neighb_labels")}
    pairs = {n: scores_from_arrays(a, k, len(index.classes)) for n, a in arrays.items()}
    me = _t(lambda: compute_all(pairs, len(index.classes), n_boot=n_boot, seed=0))
    parts = {"crop geometry (headers + XML)": geo, "decode+crop+transform (uint8 batches)": dec}
    return {**parts, "knn": kn, "metrics": me}, len(x), fwd


def attack_call(root: Path, index, paths, out: Path, device: str, workers: int, n_boot: int):
    """``dejavu attack`` of the two generated checkpoints, as a function of nothing."""
    cfg = AttackConfig(npc=10, k=20, k_attk=20, device=device, workers=workers, n_boot=n_boot)
    ck = [root / f"{s}.pth" for s in "AB"]
    return lambda: attack(ck[0], ck[1], root / "part", paths, out, cfg=cfg, cache_dir="", index=index, force=True)


def _child(a: argparse.Namespace) -> None:
    """One torchrun rank: a warm-up attack, then ``--repeat`` pairs (pure forward of this rank's
    share of the attack's images, the attack), each between barriers; writes its seconds."""
    from dejavu.attack import dist
    from dejavu.ssl.checkpoint import load_model

    info = dist.setup(a.device)
    root = Path(a.child)
    paths = DataPaths.resolve(data=root / "data")
    index = scan_imagefolder(paths.images)
    out = root / f"dist{info.world_size}"
    go = attack_call(root, index, paths, out, a.device, 0, a.n_boot)
    go()  # warm-up; its files give the images of the forward pass
    sets = attack_sets(out, index, a.size)
    x, _ = ready_tensor(sets, [dist.batch_bounds(len(s), 256)[info.rank] for s in sets])
    fwd = forward_fn([load_model(root / f"{s}.pth").model for s in "AB"], x, a.device)
    fwd()
    pairs = []
    for _ in range(a.repeat):
        dist.barrier()
        f = _t(fwd)
        dist.barrier()
        pairs.append((_t(go), f))
    Path(f"{a.result}.{info.rank}").write_text(json.dumps({"images": len(x), "pairs": pairs}))


def run_nproc(root: Path, n: int, a: argparse.Namespace) -> list[dict]:
    """``torchrun --nproc_per_node n`` of this script in child mode (gloo, 1 thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEJAVU_THREADS": "1", "DEJAVU_NO_PROGRESS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")])
    res = root / f"res{n}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", __file__]
    cmd += ["--child", str(root), "--result", str(res), "--repeat", str(a.repeat), "--size", str(a.size)]
    cmd += ["--device", a.device, "--n-boot", str(a.n_boot)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return [json.loads(Path(f"{res}.{r}").read_text()) for r in range(n)]


def nproc_table(recs: dict[int, list[dict]], proj: tuple[float, float]) -> str:
    """Wall / forward per process count, per-rank rates, and the 8-GPU projection."""
    lines = [
        "| procs | attack walls in order (s) | forward walls in order (s) | wall / forward: median (min, max) "
        "| forward img/s per rank | attack img/s per rank |",
        "|---:|---|---|---|---:|---:|",
    ]
    stat = {}
    for n, rr in recs.items():
        walls = [max(r["pairs"][i][0] for r in rr) for i in range(len(rr[0]["pairs"]))]
        fwds = [max(r["pairs"][i][1] for r in rr) for i in range(len(rr[0]["pairs"]))]
        q = sorted(w / f for w, f in zip(walls, fwds))
        images = sum(r["images"] for r in rr)
        f_rate = float(np.mean([r["images"] / np.median([f for _, f in r["pairs"]]) for r in rr if r["images"]]))
        a_rate = images / float(np.median(walls)) / n
        stat[n] = (float(np.median(q)), f_rate, a_rate)
        lines.append(
            f"| {n} | {' / '.join(f'{w:.2f}' for w in walls)} | {' / '.join(f'{f:.2f}' for f in fwds)} "
            f"| {stat[n][0]:.2f} ({q[0]:.2f}, {q[-1]:.2f}) | {f_rate:.0f} | {a_rate:.0f} |"
        )
    if 1 in stat and len(stat) > 1:
        n = max(stat)
        over = stat[n][0] / stat[1][0]  # the attack's extra cost per forward image when split over n ranks
        eff = stat[n][2] / stat[1][2]  # per-rank attack rate at n over 1 (CPU contention included)
        lo, hi = proj
        lines += [
            "",
            f"PROJECTION (not a measurement) for one node of 8 GPUs, from the per-rank rates above and the "
            f"paper-scale one-GPU projection ({lo:g}-{hi:g} min, the ESTIMATE at the top of this file; "
            f"bench_paper_projection.py replaces it with rates measured on a lent card). Each GPU rank runs "
            f"its share of the forward passes alone, so the forward scales by 8; what the split adds is the "
            f"attack's overhead per forward image, measured as (wall / forward at {n} procs) / (wall / forward "
            f"at 1) = {over:.2f}: 8-GPU node ≈ {lo:g}-{hi:g} min x {over:.2f} / 8 = "
            f"{lo * over / 8:.1f}-{hi * over / 8:.1f} min. Pessimistic bound from the per-rank attack rate "
            f"({stat[n][2]:.0f} vs {stat[1][2]:.0f} img/s per rank: efficiency {eff:.2f}, which also counts "
            f"{n} ranks sharing this machine's cores): {lo / (8 * eff):.1f}-{hi / (8 * eff):.1f} min. "
            f"Assumes the efficiency at {n} ranks holds at 8 and the KNN merge stays a small share.",
        ]
    return "\n".join(lines)


def dist_main(a: argparse.Namespace, root: Path, n_images: int) -> None:
    """The ``--nproc`` mode: every process count in one run, one after the other."""
    load = os.getloadavg()[0]
    recs = {n: run_nproc(root, n, a) for n in (int(v) for v in a.nproc.split(","))}
    load = f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    lo, hi = (float(v) for v in a.paper_minutes.split(","))
    table = nproc_table(recs, (lo, hi))
    print(table)
    if not a.no_append:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        images = sum(r["images"] for r in recs[min(recs)])
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(
                f"\n## bench_attack.py --nproc {a.nproc} — {stamp}, {cpu_name()}, {load}, 1 thread per rank "
                f"(gloo), {a.arch} {a.size}px, {images} attacked + public images of {n_images} generated, "
                f"2 models, {a.device}, torch {torch.__version__}\n\n"
                "`torchrun --nproc_per_node N` ranks, each: a warm-up attack, then per repeat a pure forward "
                "pass of the two models over its share of the attack's images (the batches the attack gives "
                "it), then the attack, each between barriers; walls = the slowest rank's; ratio of each pair, "
                f"median over pairs.\n\n{table}\n"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--arch", default="smallcnn")
    ap.add_argument("--size", type=int, default=32, help="image side of the generated set = evaluation size")
    ap.add_argument("--per-class", type=int, default=320)
    ap.add_argument("--repeat", type=int, default=3, help="attack runs per worker setting (the fastest counts)")
    ap.add_argument(
        "--nproc",
        default="",
        help="comma list, e.g. 1,2: the attack under torchrun --nproc_per_node N (gloo, 1 thread per rank) "
        "for each N, instead of the worker sweep and breakdown",
    )
    ap.add_argument(
        "--paper-minutes",
        default="18,22",
        help="the one-GPU paper-scale projection (min, max minutes) the 8-GPU projection scales",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("DEJAVU_THREADS", "1")))
    if a.child:
        return _child(a)
    t0 = time.perf_counter()
    import torchvision.ops  # noqa: F401  (torchvision's first import pulls torch._dynamo: seconds)
    from torchvision import transforms  # noqa: F401

    import dejavu.analysis.significance
    import dejavu.attack.control
    import dejavu.data.annotations  # noqa: F401
    from dejavu.attack.knn import resolve_backend

    resolve_backend("auto", a.device)  # imports faiss
    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(
            root / "data",
            SynthConfig(
                classes=10, per_class=a.per_class, size=a.size, annotated_fraction=0.375, val_per_class=10, seed=0
            ),
            force=True,
        )
        paths = DataPaths.resolve(data=root / "data")
        index = scan_imagefolder(paths.images)
        partition(paths, [10], root / "part", force=True, index=index)
        ck = [make_ckpt(root / f"{s}.pth", index, s, 0 if s == "A" else 1, a.arch, a.size) for s in "AB"]
        if a.nproc:
            return dist_main(a, root, len(index))

        def run(w: int) -> float:
            cfg = AttackConfig(npc=10, k=20, k_attk=20, device=a.device, workers=w, n_boot=a.n_boot)
            return _t(
                lambda: attack(
                    ck[0], ck[1], root / "part", paths, root / f"atk{w}", cfg=cfg, cache_dir="", index=index, force=True
                )
            )

        run(0)  # warm-up; its files feed the breakdown (the same whatever the workers)
        from dejavu.ssl.checkpoint import load_model

        models = [load_model(p).model for p in ck]
        parts, n, fwd = breakdown(root / "atk0", index, paths, root / "part", models, a.device, a.size, 20, a.n_boot)
        workers = range(min(2, os.cpu_count() or 1) + 1)  # DataLoader workers: chosen by measurement
        runs: dict[int, list[tuple[float, float]]] = {w: [] for w in workers}
        for _ in range(a.repeat):  # each attack right after a forward pass: the load they share is alike
            for w in workers:
                f = _t(fwd)
                runs[w].append((run(w), f))
    ratios = {w: sorted(t / f for t, f in r) for w, r in runs.items()}
    best = min(ratios, key=lambda w: float(np.median(ratios[w])))
    fw = min(f for r in runs.values() for _, f in r)
    wall = min(t for t, _ in runs[best])
    serial = wall - fw - parts["knn"] - parts["metrics"]
    setting = f"{a.arch} {a.size}px, {n} images, 2 models, {a.device}"
    lines = [f"| part ({setting}) | seconds | share of wall |", "|---|---|---|"]
    rows = {**parts, "forward (fastest)": fw}
    rows["not overlapped (fastest wall - forward - knn - metrics): decode left, I/O, checkpoints, setup"] = serial
    for k, v in rows.items():
        lines.append(f"| {k} | {v:.2f} | {v / wall:.0%} |")
    for w, r in runs.items():
        q = ratios[w]
        lines.append(
            f"| dejavu attack wall, {w} DataLoader worker(s){' (best)' if w == best else ''}, runs in order | "
            f"{' / '.join(f'{t:.2f}' for t, _ in r)} | wall / forward of the pass just before: median "
            f"{float(np.median(q)):.2f} (min {q[0]:.2f}, max {q[-1]:.2f}) |"
        )
    lines.append(
        f"| one-time imports before the attack (torch, torchvision, faiss, dejavu; not in wall) | {imports:.2f} | - |"
    )
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else cpu_name()
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write(
                f"\n## bench_attack.py — {stamp}, {dev}, {torch.get_num_threads()} thread(s), {setting}, "
                f"{a.per_class} per class, torch {torch.__version__}\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
