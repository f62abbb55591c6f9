"""The attack across processes (torchrun, or SLURM tasks with ``--gpus-per-node N``): one process
per GPU, joined through :func:`dejavu.ssl.ddp.init_distributed`; without a distributed
environment every function here is the one-process path.

The files are byte-identical to one process's: each rank embeds whole batches of a contiguous
range (:func:`batch_bounds`: the batches one process would run), writes its public rows into the
one shared cache file (on a file system every rank sees) and searches only those rows
(:class:`Sharded`); :func:`knn` merges the ranks' exact top-k of each query block by (float64
distance, public index), and the top-k of a union is in the union of the parts' top-k. Rank 0
writes the files. Memory per rank: its crops' embeddings, one query block and one public block
(bench/bench_dist_knn.py, bench/RESULTS.md).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist

from dejavu import DejavuError
from dejavu.attack.knn import knn as knn1
from dejavu.attack.knn import knn_exact, merge_topk
from dejavu.ssl.ddp import DistInfo, current, init_distributed

QUERY_BLOCK = 16384  # queries per distributed search step (16384 x 8192 float32 = 512 MiB)


@dataclass
class Sharded:
    """Rows ``bounds[rank]`` of an ``(n, d)`` float32 array, held by this rank; the other
    ranks hold the other rows."""

    local: np.ndarray
    bounds: list[tuple[int, int]]
    _d: int | None = None

    @property
    def d(self) -> int:
        """The width, agreed by all ranks on first use (a collective: every rank asks at the
        same point, in the thread that runs the searches; a rank without rows has no width)."""
        if self._d is None:
            self._d = agree_dim(self.local)
            if len(self.local) == 0:
                self.local = np.zeros((0, self._d), np.float32)
        return self._d

    @property
    def n(self) -> int:
        return self.bounds[-1][1] if self.bounds else 0

    @property
    def start(self) -> int:
        return self.bounds[current().rank][0]


def setup(device: str | None) -> DistInfo:
    """Join the process group when torchrun / SLURM started several processes (idempotent;
    left at exit). Only rank 0 shows progress.

    Args:
        device: the attack's ``--device`` (None: CUDA when available): NCCL on CUDA, else gloo.

    Returns:
        This process's rank and the world size (one process: rank 0 of 1).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    fresh = not dist.is_initialized()
    info = init_distributed("cuda" if str(device).startswith("cuda") else "cpu")
    global _finished
    _finished = False  # a stage is running: an exit before finish() must not wait for the others
    if fresh:
        atexit.register(_leave)
    if not info.is_main:
        os.environ["DEJAVU_NO_PROGRESS"] = "1"
    return info


# True between a stage's finish() and the next setup(): every rank got there, so the exit can
# wait for the others before tearing the group down.
_finished = False


def finish() -> None:
    """A stage's last step on every rank: wait for the others (rank 0's files are written),
    and let the exit wait for them again before it leaves the group."""
    global _finished
    barrier()
    _finished = True


F = TypeVar("F", bound=Callable[..., Any])


def stage(device_of: Callable[[dict[str, Any]], str | None], no_grad: bool = True) -> Callable[[F], F]:
    """Decorator of a stage that torchrun / SLURM tasks may run on several ranks: join the
    group first (on the device ``device_of`` reads from the bound arguments), run without
    autograd (``no_grad``), then :func:`finish`. Outermost, so that a lock taken by rank 0
    alone (:func:`main_rank_out`) already knows the rank."""

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            setup(device_of(bound.arguments))
            with torch.no_grad() if no_grad else contextlib.nullcontext():
                res = fn(*args, **kwargs)
            finish()  # the other ranks wait for rank 0's files
            return res

        return cast(F, run)

    return deco


def _leave() -> None:

    if dist.is_initialized():
        # gloo tears a group down badly when a peer has already gone (a rare SIGABRT,
        # "terminate called without an active exception", seen under load): after a finished
        # stage, all ranks are alive here, so they meet once more and leave together. After an
        # error, another rank may never get here; then leave at once, as before.
        if _finished:
            dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes the files."""
    return current().is_main


def main_rank_out(args: dict[str, Any]) -> Any:
    """``locks_output(folder_of=...)`` of a stage writing its ``out`` argument: that folder on
    rank 0, None (no lock) on the other ranks (torchrun: rank 0 writes, rank 0 locks)."""
    return args["out"] if is_main() else None


def barrier() -> None:
    """Wait for every rank (nothing in one process)."""
    if current().distributed:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if not current().distributed:
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def batch_bounds(n: int, batch_size: int, world: int | None = None) -> list[tuple[int, int]]:
    """Each rank's rows ``[lo, hi)`` of ``n`` items: contiguous runs of whole batches of
    ``batch_size``, so each forward pass is one a single process would run.

    Args:
        n: items.
        batch_size: items per forward pass.
        world: ranks (default: the current world size).

    Returns:
        One ``(lo, hi)`` per rank, in rank order, covering ``0 .. n``.
    """
    world = current().world_size if world is None else world
    nb = -(-n // batch_size)
    cuts = [min(n, (r * nb // world) * batch_size) for r in range(world + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def shard_dataset(ds: Any, lo: int, hi: int) -> Any:
    """Items ``lo .. hi-1`` of ``ds`` as a dataset numbered from 0 (a dataset with its own
    ``rows(lo, hi)``, as :class:`~dejavu.attack.embed.ImageCrops`, keeps its fast batch path)."""
    if hasattr(ds, "rows"):
        return ds.rows(lo, hi)
    return _Rows(ds, lo, hi)


class _Rows:
    """``(x, i)`` for items ``lo + i`` of a dataset yielding ``(x, position)``."""

    def __init__(self, ds: Any, lo: int, hi: int):
        self.ds, self.lo, self.hi = ds, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.ds[self.lo + i][0], i


def agree_dim(local: np.ndarray) -> int:
    """The embedding width, known to every rank (a rank with no rows has none of its own)."""
    d = local.shape[1] if local.ndim == 2 and len(local) else 0
    if not current().distributed:
        return d
    t = torch.tensor([d], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def sharded(local: np.ndarray, bounds: list[tuple[int, int]]) -> Sharded:
    """This rank's rows as a :class:`Sharded` (no communication: the width is agreed on first use)."""
    return Sharded(local, bounds)


def _comm_device() -> str:

    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def _rows_block(x: Sharded, qs: int, qe: int):
    """Rows ``qs .. qe-1`` of ``x`` on every rank, each part sent by the rank holding it."""
    info = current()
    buf = torch.empty((qe - qs, x.d), dtype=torch.float32, device=_comm_device())
    for owner, (lo, hi) in enumerate(x.bounds):
        a, b = max(lo, qs), min(hi, qe)
        if a >= b:
            continue
        part = buf[a - qs : b - qs]
        if owner == info.rank:
            part.copy_(torch.from_numpy(np.ascontiguousarray(x.local[a - lo : b - lo], np.float32)))
        dist.broadcast(part, src=owner)
    return buf


def gather(x: np.ndarray | Sharded, block: int = QUERY_BLOCK) -> np.ndarray:
    """The whole array on rank 0 (``(n, 0)`` elsewhere: the other ranks write nothing).

    Args:
        x: an array (returned as it is) or a :class:`Sharded` one.
        block: rows sent per step.
    """
    if not isinstance(x, Sharded):
        return x
    main, d = current().is_main, x.d  # every rank agrees on the width
    out = np.empty((x.n, d if main else 0), np.float32)
    for qs in range(0, x.n, block):
        qe = min(x.n, qs + block)
        rows = _rows_block(x, qs, qe)
        if main:
            out[qs:qe] = rows.cpu().numpy()
    return out


def knn(
    queries: np.ndarray | Sharded,
    public: np.ndarray | Sharded,
    k: int,
    backend: str = "auto",
    device: str = "cpu",
    desc: str = "knn",
    block_q: int = QUERY_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (:func:`dejavu.attack.knn.knn`), searched by every rank over its part of
    the public set when they are :class:`Sharded` (see the module docstring).

    Args:
        queries: (n, d) embeddings, or this rank's share of them.
        public: (N, d) embeddings, or this rank's share of them.
        k: neighbours per query.
        backend: the KNN backend (:func:`dejavu.attack.knn.resolve_backend`).
        device: where each rank searches.
        desc: progress label.
        block_q: queries per distributed step.

    Returns:
        ``(distances (n, k) float32, indices (n, k) int64)`` as :func:`dejavu.attack.knn.knn`,
        on rank 0; ``(n, 0)`` arrays on the other ranks.
    """

    if not isinstance(queries, Sharded) or not isinstance(public, Sharded):
        if isinstance(queries, Sharded) or isinstance(public, Sharded):
            raise DejavuError("distributed KNN: queries and public set must both be sharded")
        return knn1(queries, public, k, backend=backend, device=device, desc=desc)
    if queries.d != public.d:  # first use: the widths are agreed here, in the searching thread
        raise DejavuError(f"KNN: query/public embeddings have incompatible widths {queries.d} vs {public.d}")
    if k < 1:
        raise DejavuError(f"KNN: k must be >= 1, got {k}")
    k = min(k, public.n)
    main = current().is_main
    out_d = np.empty((queries.n, k if main else 0), np.float32)
    out_i = np.empty((queries.n, k if main else 0), np.int64)
    for qs in range(0, queries.n, block_q):
        qe = min(queries.n, qs + block_q)
        d, i = _merged_block(_rows_block(queries, qs, qe).cpu().numpy(), public, k, backend, device, desc)
        if main:
            out_d[qs:qe], out_i[qs:qe] = d.astype(np.float32), i
    return out_d, out_i


def _merged_block(q: np.ndarray, public: Sharded, k: int, backend: str, device: str, desc: str):
    """The exact top-k of ``q`` over the whole public set: each rank's own top-k, padded to k
    with (inf, max index), gathered from every rank and merged by (distance, index)."""
    d, i = knn_exact(q, public.local, k, backend=backend, device=device, desc=desc)
    pad = k - d.shape[1]
    d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
    i = np.pad(i + public.start, ((0, 0), (0, pad)), constant_values=np.iinfo(np.int64).max)
    world, dev = current().world_size, _comm_device()
    parts = []
    for a in (d, i):
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        got = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(got, t)
        parts.append(torch.cat(got, 1).cpu().numpy())
    return merge_topk(parts[0], parts[1], k)
