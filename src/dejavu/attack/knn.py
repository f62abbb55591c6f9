"""Exact k-nearest neighbours in squared L2 (DESIGN 2.4): a streaming torch backend and faiss.

Both return ``(distances (n, k) float32, indices (n, k) int64)`` sorted by increasing
distance, ties in distance by public index, and both give the same neighbours.

Streaming: the public set is read once, in blocks of ``block_p`` rows (a memmapped
embedding cache is never loaded whole, so a public set larger than RAM works); each block
is searched for every query and merged into a running top-``k'`` per query (torch:
``torch.topk`` over the kept candidates and the block's; faiss: ``faiss.knn`` per block
merged by ``faiss.ResultHeap``). Memory: the queries, ``n x k'`` candidates and one
public block.

Exact order: the block search computes ``|q|^2 - 2 q.p + |p|^2`` in float32, which
reorders near-ties (relative gaps around 1e-6). Each query keeps ``k' = k + margin``
candidates, which are then re-ranked by ``sum((q - p)^2)`` in float64. A row is accepted
only if no point outside its candidates can beat its k-th exact distance given the
float32 error measured on the candidates themselves; the rare rows that fail are searched
again over the whole public set in float64.
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

from dejavu import DejavuError
from dejavu.utils import progress

BACKENDS = ("auto", "torch", "faiss")
# "auto", chosen by measurement (bench/bench_knn.py, bench/RESULTS.md): faiss on the CPU
# (faster than torch's matmul + topk there), torch on CUDA unless faiss has GPU support.
DEFAULT_BACKEND = "auto"
BLOCK_P = 32768  # public rows per streamed block (32768 x 2048 float32 = 256 MiB)
_RERANK_CELLS = 2**20  # float64 elements per re-ranking step (8 MiB)


def _margin(k: int) -> int:
    return max(8, k // 4)


def _sort_ties(d: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, index): deterministic order among equal distances."""
    order = np.lexsort((i, d), axis=-1) if d.size else np.zeros(d.shape, dtype=np.int64)
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def check_finite(block: np.ndarray, what: str, start: int = 0) -> None:
    """Refuse embeddings holding NaN or inf: every distance to them is NaN, so the "nearest"
    neighbours would be whatever rows come first, and the score meaningless.

    Args:
        block: (n, d) embeddings (rows ``start ..`` of the array they come from).
        what: names them in the message.
        start: the first row's number in that array.

    Raises:
        DejavuError: naming the first non-finite row.
    """
    ok = np.isfinite(block)
    if not ok.all():
        row = start + int(np.flatnonzero(~ok.all(axis=1))[0])
        raise DejavuError(
            f"{what}: embedding row {row} is not finite (NaN or inf): the model diverged or overflows, "
            "or the embedding cache is damaged (delete it); no neighbours computed"
        )


def release_pages(arr: np.ndarray) -> None:
    """Unmap the pages of a memory-mapped array that this process has read: they stay in the
    page cache (reading them again is a memory copy), but no longer count in the process's
    resident memory, so streaming a cache file of any size holds one block.

    Args:
        arr: a ``np.memmap`` (or a view of one); anything else is left alone.
    """
    mm: object = None
    a: object = arr
    while a is not None and mm is None:  # a plain view of a memmap: its base holds the map
        mm, a = getattr(a, "_mmap", None), getattr(a, "base", None)
    if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):  # a closed map, or no madvise here
            mm.madvise(mmap.MADV_DONTNEED)


def _blocks(n: int, block: int):
    return [(s, min(n, s + block)) for s in range(0, n, block)]


def _torch_candidates(
    queries: np.ndarray, public: np.ndarray, kc: int, device: str, block_q: int, block_p: int, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """Running top-``kc`` over public blocks (each read once), float32 distances."""
    import torch

    dtype = torch.float32
    nq = len(queries)
    best_d = torch.full((nq, 0), float("inf"), dtype=dtype, device=device)
    best_i = torch.zeros((nq, 0), dtype=torch.int64, device=device)
    q_all = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device, dtype)
    q_sq = (q_all * q_all).sum(1, keepdim=True)
    for ps, pe in progress(_blocks(len(public), block_p), desc=desc):
        blk = np.array(public[ps:pe], dtype=np.float32)
        release_pages(public)
        check_finite(blk, f"{desc}: public set", ps)
        pb = torch.from_numpy(blk).to(device, dtype)
        p_sq = (pb * pb).sum(1)[None, :]
        ids = torch.arange(ps, pe, device=device)
        new_d, new_i = [], []
        for qs, qe in _blocks(nq, block_q):
            d = (q_sq[qs:qe] - 2.0 * (q_all[qs:qe] @ pb.T) + p_sq).clamp_(min=0.0)
            cand_d = torch.cat([best_d[qs:qe], d], 1)
            cand_i = torch.cat([best_i[qs:qe], ids.expand(qe - qs, -1)], 1)
            top_d, pos = torch.topk(cand_d, min(kc, cand_d.shape[1]), dim=1, largest=False, sorted=False)
            new_d.append(top_d)
            new_i.append(torch.gather(cand_i, 1, pos))
            del d, cand_d, cand_i
        best_d, best_i = torch.cat(new_d), torch.cat(new_i)
        del blk, pb, p_sq  # one public block alive at a time, not two
    return best_d.float().cpu().numpy(), best_i.cpu().numpy()


def _faiss_candidates(
    queries: np.ndarray, public: np.ndarray, kc: int, device: str, block_p: int, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """``faiss.knn`` per public block, merged by ``faiss.ResultHeap`` (each block read once)."""
    try:
        import faiss
    except ImportError:
        raise DejavuError("--knn faiss needs the faiss package (pip install faiss-cpu, or faiss-gpu)") from None
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(q), kc)
    gpu = str(device).startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    res = faiss.StandardGpuResources() if gpu else None
    for ps, pe in progress(_blocks(len(public), block_p), desc=desc):
        pb = np.array(public[ps:pe], dtype=np.float32)
        release_pages(public)
        check_finite(pb, f"{desc}: public set", ps)
        kk = min(kc, pe - ps)
        if gpu:
            d, i = faiss.knn_gpu(res, q, pb, kk)  # type: ignore[arg-type]  # res is set when gpu
        else:
            d, i = faiss.knn(q, pb, kk)
        heap.add_result(d, i + ps)
        del pb  # one public block alive at a time, not two
    heap.finalize()
    return heap.D, heap.I


def _float64_candidates(
    queries: np.ndarray, public: np.ndarray, kc: int, block_p: int, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``kc`` by float64 distances, ties by index (for the few rows the fast pass
    cannot certify; exact ties at the cut keep the smaller indices)."""
    q = np.asarray(queries, np.float64)
    q_sq = (q * q).sum(1, keepdims=True)
    best_d = np.zeros((len(q), 0))
    best_i = np.zeros((len(q), 0), np.int64)
    for ps, pe in progress(_blocks(len(public), block_p), desc=desc):
        pb = np.array(public[ps:pe], np.float64)
        release_pages(public)
        d = np.maximum(q_sq - 2.0 * (q @ pb.T) + (pb * pb).sum(1)[None, :], 0.0)
        cand_d = np.concatenate([best_d, d], 1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(ps, pe), d.shape)], 1)
        order = np.lexsort((cand_i, cand_d), axis=-1)[:, :kc]
        best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
        del pb, d, cand_d, cand_i
    return best_d, best_i


def _exact_sq_dists(q: np.ndarray, public: np.ndarray, cand: np.ndarray, block_p: int = BLOCK_P) -> np.ndarray:
    """float64 ``sum((q - p)^2)`` of each query to each of its candidates (n, c).

    The public set is read in blocks, in order, and each block serves the (query, candidate)
    pairs that fall in it: a memmap is streamed as by the search (gathering candidate rows
    straight from the map would fault in page-cache pages all over the file, a resident
    size growing with the public set)."""
    import torch

    n, c = cand.shape
    out = np.empty((n, c), np.float64)
    flat_out, flat = out.reshape(-1), cand.reshape(-1)
    order = np.argsort(flat, kind="stable")
    ids = flat[order]
    step = max(1, _RERANK_CELLS // max(1, q.shape[1]))
    for ps, pe in _blocks(len(public), block_p):
        a, b = (int(x) for x in np.searchsorted(ids, [ps, pe]))
        if a == b:
            continue
        blk = np.array(public[ps:pe], np.float32)
        release_pages(public)
        for s, e in _blocks(b - a, step):
            sel = order[a + s : a + e]
            pp = torch.from_numpy(blk[ids[a + s : a + e] - ps].astype(np.float64))
            qq = torch.from_numpy(np.asarray(q[sel // c], np.float64))
            diff = pp - qq
            flat_out[sel] = (diff * diff).sum(-1).numpy()
        del blk
    return out


def _rerank(
    queries: np.ndarray, public: np.ndarray, cand_i: np.ndarray, cand_d32: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact (float64) top-k among each row's candidates; returns (d64, idx, ok) where
    ``ok`` says the row's candidates provably contain its exact k nearest."""
    d64 = _exact_sq_dists(queries, public, cand_i)
    d_s, i_s = _sort_ties(d64, cand_i)
    if cand_i.shape[1] >= len(public):
        ok = np.ones(len(cand_i), bool)
    else:
        err = np.abs(cand_d32.astype(np.float64) - d64).max(1)
        scale = np.abs(d64).max(1) + 1e-30
        tol = 4.0 * err + 1e-6 * scale
        ok = d_s[:, k - 1] + tol < cand_d32.max(1)
    return d_s[:, :k], i_s[:, :k], ok


def resolve_backend(backend: str, device: str) -> str:
    """The backend ``auto`` stands for on ``device`` (see :data:`DEFAULT_BACKEND`).

    Args:
        backend: ``auto``, ``torch`` or ``faiss``.
        device: where the search runs (``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        ``torch`` or ``faiss``: faiss on CPU when installed; on CUDA faiss only with GPUs.
    """
    if backend != "auto":
        return backend
    try:
        import faiss
    except ImportError:
        return "torch"
    if str(device).startswith("cuda"):
        return "faiss" if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0 else "torch"
    return "faiss"


def _search(
    queries: np.ndarray, public: np.ndarray, kc: int, backend: str, device: str, block_q: int, block_p: int, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    if backend == "faiss":
        return _faiss_candidates(queries, public, kc, device, block_p, desc)
    return _torch_candidates(queries, public, kc, device, block_q, block_p, desc)


def knn(
    queries: np.ndarray,
    public: np.ndarray,
    k: int,
    backend: str = DEFAULT_BACKEND,
    device: str = "cpu",
    block_q: int = 4096,
    block_p: int = BLOCK_P,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 k-NN of ``queries`` among ``public`` (see the module docstring):
    :func:`knn_exact`, same arguments and errors, with the distances returned as float32.

    Returns:
        (distances (n, k) float32, indices (n, k) int64 into ``public``), nearest first,
        ties by index.
    """
    d, i = knn_exact(queries, public, k, backend, device, block_q, block_p, desc)
    return d.astype(np.float32), i


def merge_topk(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row by (distance, index): how the exact top-k lists of disjoint
    parts of the public set merge into the top-k of their union (:mod:`dejavu.attack.dist`).

    Args:
        d: (n, m) float64 exact distances (``inf`` pads a short list).
        i: (n, m) int64 public indices, unique within a row.
        k: neighbours kept.

    Returns:
        ``(d, i)`` of shape (n, min(k, m)), nearest first, ties by index.
    """
    order = np.lexsort((i, d), axis=-1)[:, :k] if d.size else np.zeros((len(d), 0), np.int64)
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def knn_exact(
    queries: np.ndarray,
    public: np.ndarray,
    k: int,
    backend: str = DEFAULT_BACKEND,
    device: str = "cpu",
    block_q: int = 4096,
    block_p: int = BLOCK_P,
    desc: str = "knn",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` with the exact float64 distances: what the distributed search merges.

    Args:
        queries: (n, d) embeddings.
        public: (N, d) embeddings; a memmap is streamed, never loaded whole.
        k: neighbours per query (at most N).
        backend: ``torch``, ``faiss`` (same results) or ``auto`` (:func:`resolve_backend`).
        device: torch device (``cuda`` also puts faiss on the GPU when faiss has one).
        block_q: queries per distance block (torch backend).
        block_p: public rows per streamed block.
        desc: progress-bar label.
    Returns:
        (distances (n, k) float64, indices (n, k) int64 into ``public``), nearest first,
        ties by index.

    Raises:
        DejavuError: bad shapes or ``k``, or a NaN/inf in the queries or the public set.
    """
    if backend not in BACKENDS:
        raise DejavuError(f"unknown KNN backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if queries.ndim != 2 or public.ndim != 2 or (len(queries) and queries.shape[1] != public.shape[1]):
        raise DejavuError(f"KNN: query/public embeddings have incompatible shapes {queries.shape} vs {public.shape}")
    if k < 1:
        raise DejavuError(f"KNN: k must be >= 1, got {k}")
    check_finite(queries, f"{desc}: queries")  # the public set: block by block, as it is read
    k = min(k, len(public))
    if len(queries) == 0 or k == 0:
        return np.empty((len(queries), k), np.float64), np.empty((len(queries), k), np.int64)
    kc = min(len(public), k + _margin(k))
    cd, ci = _search(queries, public, kc, resolve_backend(backend, device), device, block_q, block_p, desc)
    d, i, ok = _rerank(queries, public, ci, cd, k)
    bad = np.flatnonzero(~ok)
    if len(bad):  # candidates may miss a neighbour: search these rows again in float64
        q = np.asarray(queries[bad])
        cd2, ci2 = _float64_candidates(q, public, kc, block_p, desc + " (exact)")
        d[bad], i[bad], _ = _rerank(q, public, ci2, cd2, k)
    return d, i.astype(np.int64)
