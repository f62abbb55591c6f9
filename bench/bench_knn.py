"""Benchmark the attack's hot spots: exact KNN (torch vs faiss), periphery crops, metrics.

Speed targets (not asserted in tests; check by hand on a quiet machine):
  * KNN 20k x 2048 public vs 2k queries, k=100: < 10 s per backend on 1 CPU thread.
  * periphery crop: > 10k images/s for ImageNet-like box counts (1-5 boxes).
  * compute_all on 2 x 30k attacked examples, 1000 classes, k=100, 1000 bootstrap: < 60 s.

Usage: python bench/bench_knn.py [--public 20000 --dim 2048 --queries 2000 --k 100 --threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--public", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metrics-n", type=int, default=30000)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(a.threads)
    except ImportError:
        faiss = None
    from dejavu.analysis.metrics import compute_all, scores_from_neighbours
    from dejavu.attack.crops import periphery_crop
    from dejavu.attack.knn import knn

    rng = np.random.default_rng(0)
    pub = rng.normal(size=(a.public, a.dim)).astype(np.float32)
    q = rng.normal(size=(a.queries, a.dim)).astype(np.float32)
    res = {}
    for backend in ("torch", "faiss") if faiss is not None else ("torch",):
        t = time.perf_counter()
        _, i = knn(q, pub, a.k, backend=backend, device=a.device)
        res[backend] = (time.perf_counter() - t, i)
        print(f"knn {backend:5s}: {res[backend][0]:7.2f} s  ({a.queries} x {a.public} x {a.dim}, k={a.k})")
    if "faiss" in res:
        same = np.mean([len(set(x) & set(y)) / a.k for x, y in zip(res["torch"][1], res["faiss"][1])])
        print(f"neighbour-set agreement torch vs faiss: {same:.6f}")

    n = 20000
    W = H = 400
    boxes = [rng.uniform(0, 400, size=(rng.integers(1, 6), 2)) for _ in range(n)]
    boxes = [np.concatenate([np.minimum(b[:, :1], b[:, 1:]), np.minimum(b[:, 1:], b[:, :1]) * 0.5,
                             np.maximum(b[:, :1], b[:, 1:]), np.maximum(b[:, 1:], b[:, :1])], 1) for b in boxes]
    t = time.perf_counter()
    ok = sum(periphery_crop(b, W, H, 100).ok for b in boxes)
    dt = time.perf_counter() - t
    print(f"periphery crop: {n / dt:,.0f} images/s ({ok}/{n} attackable at min 100 px)")

    C, k, m = 1000, 100, a.metrics_n
    pairs = {}
    for y in "AB":
        idx = np.arange(m) + (0 if y == "A" else m)
        lab = rng.integers(0, C, m)
        for x in "AB":
            nl = np.where(rng.random((m, k)) < 0.3, lab[:, None], rng.integers(0, C, (m, k)))
            pairs[f"{x}_attk_{y}"] = scores_from_neighbours(nl, lab, idx, k, C)
    t = time.perf_counter()
    compute_all(pairs, C, n_boot=1000)
    print(f"compute_all: {time.perf_counter() - t:.2f} s (2 x {m} examples, {C} classes, 1000 bootstrap)")


if __name__ == "__main__":
    main()
