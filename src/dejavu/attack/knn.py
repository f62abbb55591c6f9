"""Exact k-nearest neighbours in squared L2 (DESIGN 2.4): a blocked torch backend and faiss.

Both return ``(distances (n, k) float32, indices (n, k) int64)`` sorted by increasing
distance; ties in distance are ordered by public index (the torch backend sorts them so;
faiss usually does), so two backends agree up to exact/rounding-level ties.

Torch backend: ``|q|^2 - 2 q.p + |p|^2`` over blocks of queries x blocks of public
embeddings, keeping a running top-k per query, so memory is
``O(block_q * (block_p + k))`` whatever the public set size (500k x 8192 stays on disk /
in a memmap; only one public block is on the device at a time).
"""

from __future__ import annotations

import numpy as np

from dejavu import DejavuError
from dejavu.utils import progress

BACKENDS = ("torch", "faiss")


def _sort_ties(d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, index): deterministic order among equal distances."""
    order = np.lexsort((i, d), axis=-1) if d.size else np.zeros(d.shape, dtype=np.int64)
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def knn_torch(queries: np.ndarray, public: np.ndarray, k: int, device: str = "cpu",
              block_q: int = 4096, block_p: int = 65536, desc: str = "knn") -> tuple[np.ndarray, np.ndarray]:
    import torch

    nq, npub = len(queries), len(public)
    k = min(k, npub)
    dist_out = np.empty((nq, k), dtype=np.float32)
    idx_out = np.empty((nq, k), dtype=np.int64)
    if nq == 0 or k == 0:
        return dist_out, idx_out
    # squared norms of the public set, once
    pub_sq = []
    for s in range(0, npub, block_p):
        pb = torch.from_numpy(np.array(public[s:s + block_p], dtype=np.float32)).to(device)
        pub_sq.append((pb * pb).sum(1))
    pub_sq_t = torch.cat(pub_sq)
    n_blocks = ((nq + block_q - 1) // block_q) * ((npub + block_p - 1) // block_p)
    bar = progress(range(n_blocks), desc=desc, total=n_blocks)
    it = iter(bar)
    with torch.no_grad():
        for qs in range(0, nq, block_q):
            q = torch.from_numpy(np.array(queries[qs:qs + block_q], dtype=np.float32)).to(device)
            q_sq = (q * q).sum(1, keepdim=True)
            best_d = torch.full((len(q), 0), float("inf"), device=device)
            best_i = torch.zeros((len(q), 0), dtype=torch.int64, device=device)
            for ps in range(0, npub, block_p):
                next(it, None)
                pb = torch.from_numpy(np.array(public[ps:ps + block_p], dtype=np.float32)).to(device)
                d = q_sq - 2.0 * (q @ pb.T) + pub_sq_t[ps:ps + len(pb)][None, :]
                d.clamp_(min=0.0)
                cand_d = torch.cat([best_d, d], 1)
                cand_i = torch.cat([best_i, torch.arange(ps, ps + len(pb), device=device).expand(len(q), -1)], 1)
                kk = min(k, cand_d.shape[1])
                best_d, pos = torch.topk(cand_d, kk, dim=1, largest=False, sorted=False)
                best_i = torch.gather(cand_i, 1, pos)
            d_np, i_np = _sort_ties(best_d.cpu().numpy(), best_i.cpu().numpy())
            dist_out[qs:qs + len(q)] = d_np
            idx_out[qs:qs + len(q)] = i_np
    for _ in it:
        pass
    return dist_out, idx_out


def knn_faiss(queries: np.ndarray, public: np.ndarray, k: int, device: str = "cpu",
              block_q: int = 16384, desc: str = "knn") -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError:
        raise DejavuError("--knn faiss needs the faiss package (pip install faiss-cpu, or faiss-gpu)") from None
    npub = len(public)
    k = min(k, npub)
    d = public.shape[1]
    index = faiss.IndexFlatL2(d)
    if str(device).startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        res = faiss.StandardGpuResources()
        dev = int(str(device).split(":")[1]) if ":" in str(device) else 0
        index = faiss.index_cpu_to_gpu(res, dev, index)
    for s in range(0, npub, 262144):
        index.add(np.ascontiguousarray(public[s:s + 262144], dtype=np.float32))
    nq = len(queries)
    dist_out = np.empty((nq, k), dtype=np.float32)
    idx_out = np.empty((nq, k), dtype=np.int64)
    for s in progress(range(0, nq, block_q), desc=desc, total=(nq + block_q - 1) // block_q):
        dd, ii = index.search(np.ascontiguousarray(queries[s:s + block_q], dtype=np.float32), k)
        dist_out[s:s + len(dd)], idx_out[s:s + len(dd)] = _sort_ties(dd, ii.astype(np.int64))
    return dist_out, idx_out


def knn(queries: np.ndarray, public: np.ndarray, k: int, backend: str = "torch", device: str = "cpu",
        **kw) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 k-NN of ``queries`` among ``public`` with the chosen backend."""
    if backend not in BACKENDS:
        raise DejavuError(f"unknown KNN backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if queries.ndim != 2 or public.ndim != 2 or (len(queries) and queries.shape[1] != public.shape[1]):
        raise DejavuError(f"KNN: query/public embeddings have incompatible shapes {queries.shape} vs {public.shape}")
    if k < 1:
        raise DejavuError(f"KNN: k must be >= 1, got {k}")
    fn = knn_torch if backend == "torch" else knn_faiss
    return fn(queries, public, k, device=device, **kw)
