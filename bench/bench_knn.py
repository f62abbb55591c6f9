"""Benchmark exact KNN (torch vs faiss, both streamed) and its peak memory.

1. Speed, side by side in one run: both backends on the same in-memory embeddings
   (their results must be identical), the ratio faiss/torch choosing the default backend.
2. Memory: each backend run in a fresh subprocess on a memmapped ``.npy`` public set
   (the embedding cache's format), streamed in blocks and, for contrast, as one block
   (what an unblocked search holds). Reported: peak anonymous RSS (sampled every 5 ms;
   file-backed pages of the memmap are page cache, reclaimable, and not counted), then
   extrapolated linearly in N to the paper's 500k x 2048.

Usage: python bench/bench_knn.py [--public 20000 --dim 2048 --queries 1000 --k 100 --threads 1
       --mem-public 50000 --mem-queries 500 --block 8192]
Appends a table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _child(args: argparse.Namespace) -> None:
    """Run one search on the memmap and print the peak anonymous RSS (KiB) as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from dejavu.attack.knn import knn

    pub = np.load(args.child, mmap_mode="r")
    q = np.random.default_rng(1).normal(size=(args.mem_queries, pub.shape[1])).astype(np.float32)
    knn(q[:2], np.asarray(pub[:200]), 5, backend="torch")  # warm-up: thread pools, BLAS workspaces
    knn(q[:2], np.asarray(pub[:200]), 5, backend="faiss")
    base = _rss_anon_kib()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_anon_kib())
            time.sleep(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    if args.backend == "faiss-index":  # the previous path: the whole public set added to an index
        import faiss

        index = faiss.IndexFlatL2(pub.shape[1])
        index.add(np.ascontiguousarray(pub, dtype=np.float32))
        index.search(q, args.k)
    else:
        knn(q, pub, args.k, backend=args.backend, block_p=args.block)
    dt = time.perf_counter() - t0
    stop.set()
    t.join()
    print(json.dumps({"base_kib": base, "peak_kib": peak[0], "seconds": dt}))


def _memory(args: argparse.Namespace, path: str) -> list[dict]:
    rows = []
    for backend, block in (
        ("torch", args.block),
        ("torch", args.mem_public),
        ("faiss", args.block),
        ("faiss-index", args.mem_public),
    ):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            path,
            "--backend",
            backend,
            "--block",
            str(block),
            "--k",
            str(args.k),
            "--mem-queries",
            str(args.mem_queries),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(
            cmd, check=True, capture_output=True, text=True, env={**os.environ, "DEJAVU_NO_PROGRESS": "1"}
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        extra_mib = (r["peak_kib"] - r["base_kib"]) / 1024
        rows.append({"backend": backend, "block": block, "extra_mib": extra_mib, "seconds": r["seconds"]})
    return rows


def _speed(args: argparse.Namespace) -> dict[str, float]:
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        sys.exit("faiss is needed for the side-by-side comparison")
    from dejavu.attack.knn import knn

    rng = np.random.default_rng(0)
    pub = rng.normal(size=(args.public, args.dim)).astype(np.float32)
    q = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    times, idx = {}, {}
    for backend in ("torch", "faiss"):
        t = time.perf_counter()
        _, idx[backend] = knn(q, pub, args.k, backend=backend)
        times[backend] = time.perf_counter() - t
    assert np.array_equal(idx["torch"], idx["faiss"]), "backends disagree"
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--public", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-public", type=int, default=50000)
    ap.add_argument("--mem-queries", type=int, default=500)
    ap.add_argument("--block", type=int, default=8192)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to bench/RESULTS.md")
    a = ap.parse_args()
    if a.child:
        return _child(a)

    times = _speed(a)
    lines = ["| backend | time (s) | ratio to torch |", "|---|---|---|"]
    for b, t in times.items():
        lines.append(f"| {b} | {t:.2f} | {t / times['torch']:.2f} |")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "public.npy")
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(a.mem_public, a.dim))
        for s in range(0, a.mem_public, 8192):
            mm[s : s + 8192] = np.random.default_rng(s).normal(size=(min(8192, a.mem_public - s), a.dim))
        mm.flush()
        del mm
        mem = _memory(a, path)
    scale = 500_000 / a.mem_public
    note = (
        f"Peak extra anonymous memory, {a.mem_queries} queries x {a.mem_public} x {a.dim} public "
        f"(memmap), k={a.k}; extrapolated to 500k x 2048: streamed runs hold one block whatever N; "
        "one-block runs scale with N."
    )
    lines += [
        "",
        note,
        "",
        "| backend | block rows | extra MiB | time (s) | extrapolated MiB at 500k x 2048 |",
        "|---|---|---|---|---|",
    ]
    for r in mem:
        streamed = r["block"] < a.mem_public
        # streamed: bounded by the block, constant in N; otherwise scaled with N (an upper bound:
        # the fixed overhead is scaled too)
        est = r["extra_mib"] if streamed else r["extra_mib"] * scale * 2048 / a.dim
        kind = (
            " (streamed)"
            if streamed
            else (
                " (whole set in a faiss index: the previous path)" if r["backend"] == "faiss-index" else " (one block)"
            )
        )
        lines.append(f"| {r['backend']} | {r['block']}{kind} | {r['extra_mib']:.0f} | {r['seconds']:.2f} | {est:.0f} |")
    head = (
        f"\n## bench_knn ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {a.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f})\n\n"
        f"Speed: {a.queries} queries x {a.public} public x {a.dim}, k={a.k} (identical neighbours).\n\n"
    )
    text = head + "\n".join(lines) + "\n"
    print(text)
    if not a.no_append:
        with open(RESULTS, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
