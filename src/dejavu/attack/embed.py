"""Batched embeddings for the attack, several models per decoded image, cached on disk.

Every image (public image or background crop) is decoded and transformed once, and the batch goes
through every model that needs it; with 0 DataLoader workers one background thread builds the
uint8 batches ahead of the forward (:func:`_prefetched`). Public-set embeddings are cached under
``cache_dir/<key>.npy`` (:func:`cache_key`: checkpoint, public indices, transform, decoder,
precision, kind), used only when the ``<key>.json`` describes that key and the array's digest
matches (:class:`CachedEmbedder`), and written batch by batch under a temporary name
(:class:`NpyRowWriter`; under torchrun each rank its rows, :mod:`dejavu.attack.dist`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dejavu import DejavuError
from dejavu.attack import dist
from dejavu.attack.knn import release_pages
from dejavu.data.fastjpeg import DECODE_DESC, check_decode, draft_side, load_rgb, load_rgb_reduced
from dejavu.io import atomic_write_json, write_error
from dejavu.io import index_hash as _index_hash
from dejavu.utils import progress

if TYPE_CHECKING:
    from dejavu.data.imagefolder import DatasetIndex
    from dejavu.ssl.checkpoint import LoadedModel


def content_digest(arr: np.ndarray) -> str:
    """sha256 of an embedding array's shape, dtype and up to 4096 evenly spaced rows (reading
    all of a 16 GB cache file on every lookup would cost more than it protects)."""
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    if len(arr):
        rows = np.unique(np.linspace(0, len(arr) - 1, min(len(arr), 4096)).astype(np.int64))
        h.update(np.ascontiguousarray(arr[rows]).tobytes())
    return h.hexdigest()


def index_hash(indices: np.ndarray) -> str:
    """The cache key's hash of an index list (24 hex digits: :func:`dejavu.io.index_hash`)."""

    return _index_hash(indices, 24)


def cache_key(
    ckpt_sha256: str,
    indices: np.ndarray,
    transform_desc: str,
    kind: str,
    fingerprint_id: str = "",
    decode: str = "exact",
    precision: str = "fp32",
) -> dict:
    """What identifies a cached public embedding: any change to one of these is a new entry.

    Args:
        ckpt_sha256: the checkpoint file's SHA-256.
        indices: the public set's dataset indices.
        transform_desc: the evaluation transform's description.
        kind: ``projector``, ``backbone`` or ``logits``.
        fingerprint_id: the dataset's fingerprint.
        decode: ``exact`` or ``draft`` (:mod:`dejavu.data.fastjpeg`).
        precision: the forward's resolved precision, ``fp32`` or ``bf16``
            (:func:`resolved_precision`; ``auto`` is resolved first, so a CPU attack never
            reuses bf16 embeddings of a GPU one).

    Returns:
        ``{"key": 32 hex digits, **the fields hashed}``.
    """
    desc = {
        "checkpoint_sha256": ckpt_sha256,
        "index_sha256": index_hash(indices),
        "n": int(len(indices)),
        "transform": transform_desc,
        "decode": DECODE_DESC[check_decode(decode)],
        "precision": precision,
        "embed": kind,
        "dataset": fingerprint_id,
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]
    return {"key": key, **desc}


class ImageCrops(Dataset):
    """``(transform(crop of image), position)`` for images ``paths[i]`` and PIL boxes
    ``boxes[i]`` (None = the full image). Every image is decoded in full (as the original);
    with ``draft=True``, full JPEGs are decoded in draft mode when the transform's resize
    allows it (:mod:`dejavu.data.fastjpeg`; crops always in full)."""

    def __init__(
        self,
        paths: Sequence[os.PathLike | str],
        boxes: Sequence[tuple[int, int, int, int] | None] | None,
        transform: Callable,
        draft: bool = False,
    ):
        self.paths = list(paths)
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        self.transform = transform
        self.draft_side = draft_side(transform) if draft else None
        self.head: Callable | None = None  # set by deferred_normalize(): items are uint8

    @classmethod
    def of(cls, index: DatasetIndex, indices: np.ndarray, boxes: np.ndarray, transform: Callable) -> ImageCrops:
        """The crops ``boxes`` ((n, 4) PIL boxes) of the images ``indices`` of ``index``."""
        return cls([index.path(i) for i in indices], [tuple(b) for b in np.asarray(boxes).tolist()], transform)

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, lo: int, hi: int) -> ImageCrops:
        """Items ``lo .. hi-1`` as an :class:`ImageCrops` numbered from 0."""
        out = copy.copy(self)
        out.paths, out.boxes = self.paths[lo:hi], self.boxes[lo:hi]
        return out

    def __getitem__(self, i: int):
        if self.boxes[i] is None:
            img = load_rgb_reduced(self.paths[i], self.draft_side)
        else:
            img = load_rgb(self.paths[i]).crop(self.boxes[i])
        if self.head is not None:
            from torchvision.transforms.functional import pil_to_tensor

            return pil_to_tensor(self.head(img)), i
        return self.transform(img), i

    def _head_array(self, i: int) -> np.ndarray:
        """Item ``i`` through the transform's head (no ToTensor + Normalize): HWC uint8."""
        if self.boxes[i] is None:
            img = load_rgb_reduced(self.paths[i], self.draft_side)
        else:
            img = load_rgb(self.paths[i]).crop(self.boxes[i])
        assert self.head is not None
        ops = self.head.transforms  # type: ignore[attr-defined]  # a Compose (deferred_normalize)
        crop = _center_crop_size(ops[-1]) if ops else None
        for op in ops[:-1] if crop is not None else ops:
            img = op(img)
        a = np.asarray(img)
        if crop is None:
            return a
        (ch, cw), (h, w) = crop, a.shape[:2]
        if ch > h or cw > w:  # CenterCrop pads: let it
            return np.asarray(ops[-1](img))
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))  # torchvision's center_crop
        return a[top : top + ch, left : left + cw]

    def uint8_batch(self, lo: int, hi: int) -> torch.Tensor:
        """Items ``lo .. hi-1`` of a :meth:`deferred_normalize` copy as one contiguous uint8
        ``(n, C, H, W)`` batch: the values ``torch.stack([self[i][0] ...])`` gives, without a
        tensor per image (each image is written once into the batch's array).

        Args:
            lo: first item.
            hi: one past the last item.

        Returns:
            The ``(hi - lo, C, H, W)`` uint8 tensor.
        """
        first = self._head_array(lo)
        buf = np.empty((hi - lo, *first.shape), np.uint8)
        buf[0] = first
        for j in range(1, hi - lo):
            a = self._head_array(lo + j)
            if a.shape != first.shape:
                raise DejavuError(f"{self.paths[lo + j]}: transformed to {a.shape}, the batch's first to {first.shape}")
            buf[j] = a
        return torch.from_numpy(buf).permute(0, 3, 1, 2).contiguous()

    def deferred_normalize(self) -> tuple[ImageCrops, tuple[float, ...], tuple[float, ...]] | None:
        """A copy whose items are uint8 (the transform without its final ToTensor +
        Normalize) and that (mean, std), so the batch is normalized on the device: the same
        float ops, 4x less to copy. None when the transform does not end that way."""
        from torchvision import transforms as T

        ops = list(getattr(self.transform, "transforms", []))
        if len(ops) < 2 or not isinstance(ops[-2], T.ToTensor) or not isinstance(ops[-1], T.Normalize):
            return None
        ds = copy.copy(self)
        ds.head = T.Compose(ops[:-2])
        return ds, tuple(ops[-1].mean), tuple(ops[-1].std)


def _center_crop_size(op: Any) -> tuple[int, int] | None:
    """``(h, w)`` of a torchvision ``CenterCrop`` (done on the array, the same pixels as
    the op: a slice instead of a PIL crop per image), else None."""
    from torchvision import transforms as T

    if not isinstance(op, T.CenterCrop):
        return None
    size = op.size if isinstance(op.size, (tuple, list)) else (op.size, op.size)
    return (int(size[0]), int(size[1] if len(size) > 1 else size[0]))


def default_workers(device: str) -> int:
    if str(device).startswith("cuda"):
        return min(8, os.cpu_count() or 1)
    return 0


def resolved_precision(device: str, precision: str = "auto") -> str:
    """``fp32`` or ``bf16``: what ``precision`` (``auto``, ``bf16``, ``fp32``) means on ``device``
    (:func:`autocast_dtype`); recorded in results.json and in the embedding cache key."""
    return "bf16" if autocast_dtype(device, precision) is not None else "fp32"


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of the attack's forward passes: ``auto`` = bf16 on CUDA, fp32
    (no autocast) elsewhere; ``bf16`` / ``fp32`` force it. Embeddings are stored in fp32.

    Args:
        device: where the forward runs.
        precision: ``auto``, ``bf16`` or ``fp32``.

    Returns:
        ``torch.bfloat16``, or None for fp32 (no autocast).

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r}: choose auto, bf16 or fp32")
    if precision == "bf16" or (precision == "auto" and str(device).startswith("cuda")):
        return torch.bfloat16
    return None


@torch.no_grad()
def embed_dataset(
    models: Sequence[torch.nn.Module],
    dataset: Dataset,
    kind: str,
    batch_size: int = 256,
    device: str = "cpu",
    workers: int | None = None,
    desc: str = "embed",
    outs: Sequence[Any] | None = None,
    precision: str = "auto",
    poll: Callable[[], None] | None = None,
) -> list[np.ndarray]:
    """Embed ``dataset`` with every model in ``models`` (one decode per image).

    On CUDA: bf16 autocast (``precision``), channels_last, pinned host memory, and
    DataLoader workers decoding ahead of the GPU (prefetch) so decode and compute overlap.

    Args:
        models: the models; each batch is decoded once and forwarded through all of them.
        dataset: the images (:class:`ImageCrops` gets uint8 batches normalized on the device).
        kind: ``projector``, ``backbone`` or ``logits``.
        batch_size: images per forward.
        device: ``cpu``, ``cuda``, ``cuda:N``.
        workers: DataLoader processes (0: one decoding thread in this process; None: 8 on
            CUDA, 0 on CPU).
        desc: progress-bar label.
        outs: preallocated float32 arrays (or :class:`NpyRowWriter`) to fill, one per model.
        precision: autocast (:func:`autocast_dtype`).
        poll: called after each batch; it may raise (e.g. the error of work running beside
            this loop), which stops the embedding.

    Returns:
        One float32 ``(len(dataset), d)`` array per model (``outs`` when given).
    """
    workers = default_workers(device) if workers is None else workers
    cuda = str(device).startswith("cuda")
    split = dataset.deferred_normalize() if isinstance(dataset, ImageCrops) else None
    if split is not None:
        dataset = split[0]
        mean = torch.tensor(split[1], device=device).view(1, -1, 1, 1)
        std = torch.tensor(split[2], device=device).view(1, -1, 1, 1)
    n = len(dataset)  # type: ignore[arg-type]  # our datasets are sized
    batches = _batches(dataset, n, batch_size, workers, cuda, split is not None)
    results: list[np.ndarray | None] = list(outs) if outs is not None else [None] * len(models)
    for m in models:
        m.eval().to(device)
        if cuda:
            m.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, precision)
    dev_type = "cuda" if cuda else "cpu"
    total = (n + batch_size - 1) // batch_size
    with contextlib.closing(batches):  # stops the decoding thread if a forward pass fails
        for x, lo, hi in progress(batches, desc=desc, total=total):
            x = x.to(device, non_blocking=True)
            if split is not None:  # as ToTensor + Normalize: x / 255, then (x - mean) / std
                x = x.float().div_(255).sub_(mean).div_(std)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            for j, m in enumerate(models):
                with torch.autocast(dev_type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    e = m.embed(x, kind)  # type: ignore[operator]  # SSLModel.embed
                arr = e.float().cpu().numpy()
                out = results[j]
                if out is None:
                    out = results[j] = np.empty((n, arr.shape[1]), dtype=np.float32)
                out[lo:hi] = arr
            if poll is not None:
                poll()
    if n == 0:
        return [np.zeros((0, 0), np.float32) for _ in models]
    return [r for r in results]  # type: ignore[misc]


def _batches(
    dataset: Dataset, n: int, batch_size: int, workers: int, cuda: bool, uint8: bool
) -> Generator[tuple[torch.Tensor, int, int], None, None]:
    """``(batch, lo, hi)`` for items ``lo .. hi-1`` of ``dataset``, in order.

    ``workers == 0`` and an :class:`ImageCrops` of uint8 items (``uint8``): batches built
    by :meth:`ImageCrops.uint8_batch` in one background thread (:func:`_prefetched`);
    otherwise a DataLoader with ``workers`` processes."""
    if workers == 0 and uint8 and isinstance(dataset, ImageCrops):
        make = dataset.uint8_batch
        return _prefetched((lambda lo, hi: make(lo, hi).pin_memory()) if cuda else make, n, batch_size)
    extra: dict[str, Any] = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=cuda, **extra)
    return ((x, int(pos[0]), int(pos[-1]) + 1) for x, pos in loader)


def _prefetched(
    make: Callable[[int, int], torch.Tensor], n: int, batch_size: int, depth: int = 2
) -> Generator[tuple[torch.Tensor, int, int], None, None]:
    """``(make(lo, hi), lo, hi)`` for consecutive batches of ``range(n)``, built by one
    background thread up to ``depth`` batches ahead of the consumer, so that decoding
    overlaps the forward pass (PIL's JPEG decoder and resize, and torch's kernels, release
    the GIL). Ours rather than a DataLoader worker: a thread needs no process start and
    no copy of each batch between processes, which cost more than they save at small
    scale (bench/bench_attack.py). An exception in the thread is raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                if not put((make(lo, hi), lo, hi)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            put(e)
            return
        put(None)

    thread = threading.Thread(target=work, name="dejavu-decode", daemon=True)
    interval = sys.getswitchinterval()
    # The forward pass takes the GIL back after each kernel; at Python's default 5 ms switch
    # interval it waits behind the decoding thread's Python code (PIL's header parsing):
    # 1 ms made the embedding ~5% faster here (bench/RESULTS.md). Restored below.
    sys.setswitchinterval(min(interval, 0.001))
    thread.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


class NpyRowWriter:
    """Rows of an existing ``.npy`` float32 file written in place with ``os.pwrite``: what
    :func:`embed_dataset` fills (``out[lo:hi] = rows``) without mapping the file, so memory
    stays one batch whatever the file's size (``dejavu.io.atomic_save_npy`` would buffer the
    whole array: 500k x 8192 float32 is 16 GB). Rows are numbered from ``row0``.

    Args:
        path: the ``.npy`` file (header and size already written: :meth:`create`).
        row0: the file row of this writer's row 0 (a rank's first row).
    """

    def __init__(self, path: Path, row0: int = 0):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        self.shape, self.offset, self.row0 = arr.shape, int(arr.offset), row0
        del arr
        self.path = path
        self.fd = os.open(path, os.O_WRONLY)

    @staticmethod
    def create(path: Path, shape: tuple[int, int], name: Path | None = None) -> None:
        """Write the header of a float32 ``shape`` array and size the file, its blocks reserved
        on the disk first: a disk that fills is then one error here (naming ``name``, the file
        being made), not a failure half-way through the embedding."""
        try:
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()
            if hasattr(os, "posix_fallocate"):
                with open(path, "r+b") as f:
                    os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
        except OSError as e:
            Path(path).unlink(missing_ok=True)  # no temporary file left behind
            raise write_error(name or path, e) from None

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        lo = self.row0 + (rows.start or 0)
        data: np.ndarray = np.ascontiguousarray(value, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.shape[1] or lo + len(data) > self.shape[0]:
            raise DejavuError(f"{self.path}: rows {lo}..{lo + len(data)} of shape {data.shape} do not fit {self.shape}")
        view = memoryview(data.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # a buffer
        pos = self.offset + lo * self.shape[1] * 4
        while len(view):
            done = os.pwrite(self.fd, view, pos)
            view, pos = view[done:], pos + done

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class CachedEmbedder:
    """Public-set embeddings of several models, reusing ``cache_dir`` when possible."""

    cache_dir: Path | None
    rejected: list[str] = field(default_factory=list)  # cache files found unusable (recomputed)

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.cache_dir is not None
        return self.cache_dir / f"{key}.npy", self.cache_dir / f"{key}.json"

    def lookup(self, key: dict) -> np.ndarray | None:
        if self.cache_dir is None:
            return None
        npy, meta = self._paths(key["key"])
        if not npy.is_file():
            return None
        try:
            stored = json.loads(meta.read_text())
            if not isinstance(stored, dict) or {k: stored.get(k) for k in key} != key:
                return self._reject(npy, f"{meta.name} describes another key")
        except (OSError, ValueError):
            return self._reject(npy, f"{meta.name} missing or unreadable")
        try:
            arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            return self._reject(npy, f"truncated or not a .npy array ({str(e).splitlines()[0]})")
        if arr.ndim != 2 or arr.shape[0] != key["n"] or arr.dtype != np.float32:
            return self._reject(npy, f"holds a {arr.dtype} {arr.shape} array, expected float32 ({key['n']}, d)")
        if stored.get("content_sha256") != content_digest(arr):
            return self._reject(npy, "content differs from the recorded digest (a foreign or damaged file)")
        if not np.isfinite(arr[:: max(1, len(arr) // 4096)]).all():  # all of it: checked by the KNN
            return self._reject(npy, "holds NaN or inf values")
        return arr

    def _reject(self, npy: Path, why: str) -> np.ndarray | None:
        """Warn that a cache entry is not used; returns None (nothing found) for ``lookup``."""
        msg = f"{npy}: embedding cache entry not used ({why}); recomputing"
        self.rejected.append(msg)
        print(f"dejavu: warning: {msg}", file=sys.stderr)
        return None

    def embed_public(
        self,
        models: Sequence[torch.nn.Module],
        keys: Sequence[dict],
        paths: Sequence[Path],
        transform: Callable,
        kind: str,
        batch_size: int,
        device: str,
        workers: int | None,
        poll: Callable[[], None] | None = None,
        decode: str = "exact",
        precision: str = "auto",
    ) -> tuple[list[np.ndarray], list[bool]]:
        """The public set's embeddings under each model, from the cache where present.

        Args:
            models: the models (the same checkpoint twice is embedded once).
            keys: each model's :func:`cache_key` dict.
            paths: the public images, in public-set order.
            transform: the evaluation transform.
            kind: ``projector``, ``backbone`` or ``logits``.
            batch_size: images per forward.
            device: where the forward runs.
            workers: decoding workers (see :func:`embed_dataset`).
            poll: called after each batch (see :func:`embed_dataset`).
            decode: ``exact`` (full decode) or ``draft`` (:mod:`dejavu.data.fastjpeg`).
            precision: the forward's autocast (:func:`autocast_dtype`).

        Returns:
            ``(one float32 (n, d) array per model, was-cached flag per model)``; cached
            arrays are memory-mapped.
        """
        got: list[Any] = self._lookup_all(keys)  # arrays, or _Local rows (torchrun, no cache)
        first: dict[str, int] = {}  # the same checkpoint twice (same key) is embedded once
        for j, k in enumerate(keys):
            first.setdefault(k["key"], j)
        todo = [j for j, g in enumerate(got) if g is None and first[keys[j]["key"]] == j]
        bounds = dist.batch_bounds(len(paths), batch_size)  # [(0, n)] in one process
        lo, hi = bounds[dist.current().rank]
        if todo:
            ds = ImageCrops(paths, None, transform, draft=check_decode(decode) == "draft")
            todo_models, todo_keys = [models[j] for j in todo], [keys[j] for j in todo]
            if self.cache_dir is None:  # in memory: each rank its own rows
                fresh: list[Any] = embed_dataset(
                    todo_models,
                    dist.shard_dataset(ds, lo, hi) if len(bounds) > 1 else ds,
                    kind,
                    batch_size,
                    device,
                    workers,
                    "public embeddings",
                    poll=poll,
                    precision=precision,
                )
                fresh = [_Local(e) for e in fresh] if len(bounds) > 1 else fresh
            else:
                fresh = self._embed_into_cache(
                    todo_models, todo_keys, ds, kind, batch_size, device, workers, poll, precision, (lo, hi)
                )
            for j, e in zip(todo, fresh):
                got[j] = e
        for j, k in enumerate(keys):
            if got[j] is None:
                got[j] = got[first[k["key"]]]
        was_cached = [first[k["key"]] not in todo for k in keys]
        if len(bounds) == 1:
            return [np.asarray(g) for g in got], was_cached
        shares = [g.rows if isinstance(g, _Local) else np.asarray(g)[lo:hi] for g in got]
        return [dist.sharded(s, bounds) for s in shares], was_cached  # type: ignore[misc]

    def _lookup_all(self, keys: Sequence[dict]) -> list[np.ndarray | None]:
        """:meth:`lookup` of each key; under torchrun rank 0 decides and the others open the
        files it found (every rank must take the same path)."""
        if not dist.current().distributed:
            return [self.lookup(k) for k in keys]
        hits = dist.broadcast_object([self.lookup(k) is not None for k in keys] if dist.is_main() else None)
        return [_open_shared(self._paths(k["key"])[0]) if h else None for k, h in zip(keys, hits)]

    def _embed_into_cache(
        self, models, keys, ds, kind, batch_size, device, workers, poll, precision="auto", rows=None
    ) -> list[np.ndarray]:
        """Embed into temporary files (rows ``rows`` of them: this rank's; default all), then
        publish each atomically with its metadata (rank 0, once every rank has written)."""
        assert self.cache_dir is not None
        lo, hi = rows if rows is not None else (0, len(ds))
        tmps = []
        if dist.is_main():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            for m, k in zip(models, keys):
                npy, _ = self._paths(k["key"])
                tmps.append(npy.with_name(f".{npy.name}.{os.getpid()}.tmp"))
                NpyRowWriter.create(tmps[-1], (len(ds), _embed_dim(m, kind, ds, device)), name=npy)
        tmps = dist.broadcast_object(tmps)
        got = []
        try:
            outs = [_open_writer(t, lo) for t in tmps]
            try:
                embed_dataset(
                    models,
                    dist.shard_dataset(ds, lo, hi) if (lo, hi) != (0, len(ds)) else ds,
                    kind,
                    batch_size,
                    device,
                    workers,
                    desc="public embeddings",
                    outs=outs,
                    poll=poll,
                    precision=precision,
                )
            finally:
                for w in outs:
                    w.close()
            dist.barrier()  # every rank's rows are in the files
            for k, tmp in zip(keys, tmps):
                npy, meta = self._paths(k["key"])
                if dist.is_main():
                    os.replace(tmp, npy)
                    arr = np.load(npy, mmap_mode="r", allow_pickle=False)
                    atomic_write_json(meta, {**k, "content_sha256": content_digest(arr)})
                    release_pages(arr)
                dist.barrier()
                got.append(_open_shared(npy))
        finally:
            if dist.is_main():
                for tmp in tmps:
                    if tmp.exists():
                        tmp.unlink()
        return got


@dataclass
class _Local:
    """A rank's own rows of the public set (the cache off: nothing to open)."""

    rows: np.ndarray


def _open_writer(tmp: Path, row0: int) -> NpyRowWriter:
    try:
        return NpyRowWriter(tmp, row0)
    except OSError as e:
        raise DejavuError(
            f"{tmp}: cannot open the embedding cache file rank 0 created ({e.strerror}): under torchrun/SLURM "
            "the cache folder (--cache-dir) must be on a file system every rank sees"
        ) from None


def _open_shared(npy: Path) -> np.ndarray:
    """A cache file another rank may have written, memory-mapped."""
    try:
        return np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DejavuError(
            f"{npy}: cannot read the embedding cache file ({str(e).splitlines()[0]}): under torchrun/SLURM "
            "the cache folder (--cache-dir) must be on a file system every rank sees"
        ) from None


@torch.no_grad()
def _embed_dim(model: torch.nn.Module, kind: str, ds: Dataset, device: str) -> int:
    x, _ = ds[0]
    model.eval().to(device)
    return int(model.embed(x.unsqueeze(0).to(device), kind).shape[1])  # type: ignore[operator]


def embed_rows(
    models: Sequence[Any], dataset: Any, kind: str, batch_size: int, device: str, *args: Any, **kw: Any
) -> list[np.ndarray] | list[dist.Sharded]:
    """:func:`embed_dataset` (same arguments), each rank embedding its
    :func:`dejavu.attack.dist.batch_bounds`.

    Returns:
        One array per model (one process), or one :class:`~dejavu.attack.dist.Sharded` per model.
    """
    if not dist.current().distributed:
        return embed_dataset(models, dataset, kind, batch_size, device, *args, **kw)
    bounds = dist.batch_bounds(len(dataset), batch_size)
    lo, hi = bounds[dist.current().rank]
    got = embed_dataset(models, dist.shard_dataset(dataset, lo, hi), kind, batch_size, device, *args, **kw)
    return [dist.sharded(g, bounds) for g in got]


class EmbedSettings(Protocol):
    """The settings of a public embedding (:class:`dejavu.attack.config.AttackConfig`,
    :class:`dejavu.audit.config.AuditConfig`)."""

    embed: str
    decode: str
    precision: str
    batch_size: int
    workers: int | None


def embed_cache_dir(cache_dir: str | os.PathLike | None, out: Path) -> Path | None:
    """The public-embedding cache of a stage writing ``out``: ``cache_dir``; None (the
    default): ``out/../.embed_cache``; ``""``: no cache."""
    if cache_dir == "":
        return None
    return Path(cache_dir) if cache_dir is not None else out.parent / ".embed_cache"


def public_embeddings(
    lms: Sequence[LoadedModel],
    index: DatasetIndex,
    public: np.ndarray,
    transform: Callable,
    tdesc: str,
    cfg: EmbedSettings,
    device: str,
    cache_dir: Path | None,
    poll: Callable[[], None] | None = None,
) -> tuple[list[np.ndarray], list[bool]]:
    """The public set's embeddings under each model, through the cache (the attack's two
    models, the audit's one); under torchrun each rank its share (:class:`CachedEmbedder`).

    Args:
        lms: the models. index: the dataset. public: the public set's dataset indices.
        transform: the evaluation transform; tdesc: its description (a part of the cache key).
        cfg: the embedding's settings. device: where the forward runs.
        cache_dir: the cache (:func:`embed_cache_dir`); None: none.
        poll: called after each batch (:func:`embed_dataset`).

    Returns:
        ``(one (n, d) array per model, was-cached flag per model)``.
    """
    prec = resolved_precision(device, cfg.precision)
    keys = [cache_key(lm.sha256, public, tdesc, cfg.embed, index.fingerprint.id, cfg.decode, prec) for lm in lms]
    models, paths = [lm.model for lm in lms], [index.path(i) for i in public]
    return CachedEmbedder(cache_dir).embed_public(
        models, keys, paths, transform, cfg.embed, cfg.batch_size, device, cfg.workers, poll, cfg.decode, cfg.precision
    )
