"""Training data for the SSL loop: two sources with the same batching.

* :class:`MemoryImages` -- for small sets (the synthetic default, <= ~2 GB decoded):
  every image is decoded **once** into a uint8 tensor and augmented from there each
  epoch, in the main process. Re-reading and decoding JPEGs every epoch costs more
  than the whole step for 32 px images on a CPU; keeping augmentation in the main
  process also makes runs (and ``--resume``) bit-exact on the CPU.
* :class:`LoaderImages` -- for ImageNet-scale sets: a ``DataLoader`` with workers
  decoding JPEGs (PIL) and applying the same ``torchvision.transforms.v2`` views.

Batching: the order of epoch ``e`` is a permutation drawn from a generator seeded by
``(seed, e)`` -- identical on every rank and independent of history, so a resumed
run sees the same batches. The global batch is cut into ``world_size`` equal slices,
one per rank; the last incomplete batch is dropped (BatchNorm and the batch losses
need full batches). A set smaller than ``batch_size`` is used as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from dejavu import DejavuError
from dejavu.data.dataset import IndexedImages
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.imagefolder import DatasetIndex
from dejavu.ssl.batch_augment import BatchViews
from dejavu.utils import progress

# the views of an epoch: per-image transforms, or BatchViews (applied to whole batches on the device)
Views = Sequence[Callable] | BatchViews


class ImageSource(Protocol):
    """Where a run's training batches come from: :class:`MemoryImages`, :class:`LoaderImages`, or a
    source opened by a :class:`StoredImages` (e.g. ``dejavu.ffcv.loader.FFCVImages``)."""

    def epoch(
        self, order: torch.Tensor, batch: int, steps: int, rank: int, world: int, views: Views
    ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]: ...


class StoredImages(Protocol):
    """Training images read from a store of their own instead of the JPEGs (the caller's choice,
    e.g. ``dejavu.ffcv.loader.BetonImages`` for ``dejavu train --loader ffcv``)."""

    path: str  # the store, recorded as ``train_beton`` in config.json

    def open(self, index: DatasetIndex, idx: np.ndarray, num_workers: int) -> ImageSource:
        """The source of the run's images ``idx`` (the index file's, in order)."""
        ...


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training positions in one epoch, the same on every rank.

    Args:
        n: training images.
        seed: the run's seed.
        epoch: the 0-based epoch.

    Returns:
        (n,) int64 permutation of ``0..n-1``.
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def plan_batches(n: int, batch_size: int, world_size: int) -> tuple[int, int]:
    """(global batch, steps per epoch).

    Args:
        n: training images.
        batch_size: the requested global batch (capped at ``n``).
        world_size: number of processes.

    Returns:
        ``(batch, steps)``; the last ``n % batch`` images of each epoch's order are dropped.

    Raises:
        DejavuError: the batch is not divisible by ``world_size``, or holds fewer than 2 images.
    """
    b = min(batch_size, n)
    if b % world_size:
        raise DejavuError(f"batch_size {b} is not divisible by the number of processes ({world_size})")
    if b < 2:
        raise DejavuError(f"need at least 2 training images per batch, got {n} image(s)")
    return b, n // b


def decode_all(index: DatasetIndex, idx: np.ndarray, image_size: int, desc: str = "decode") -> torch.Tensor:
    """uint8 (N, 3, S, S): short side resized to S (if needed), centre-cropped to S.

    Args:
        index: the dataset.
        idx: int64 dataset indices to decode, in order.
        image_size: side S in pixels.
        desc: progress-bar label.

    Returns:
        The decoded images, row ``i`` for ``idx[i]``.
    """
    from torchvision.transforms import v2 as T

    fit = T.Compose([T.ToImage(), T.Resize(image_size, antialias=True), T.CenterCrop(image_size)])
    out = torch.empty((len(idx), 3, image_size, image_size), dtype=torch.uint8)
    for i, g in enumerate(progress(idx, desc=desc, total=len(idx))):
        img = load_rgb(index.path(int(g)))
        t = T.functional.pil_to_tensor(img)
        if t.shape[1:] != (image_size, image_size):
            t = fit(t)
        out[i] = t
    return out


class MemoryImages:
    def __init__(self, index: DatasetIndex, idx: np.ndarray, image_size: int):
        self.images = decode_all(index, idx, image_size, desc="decode train images")
        self.labels = torch.as_tensor(index.targets[idx], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(
        self, order: torch.Tensor, batch: int, steps: int, rank: int, world: int, views: Views
    ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """One epoch's batches from the images decoded in memory.

        Args:
            order: (n,) int64 permutation of the training positions (:func:`epoch_permutation`).
            batch: global batch size (divisible by ``world``).
            steps: steps in the epoch.
            rank: this process's rank.
            world: number of processes; each takes its ``batch // world`` slice of every batch.
            views: a :class:`BatchViews` (applied to the uint8 batch), or per-image transforms.

        Yields:
            ``(views, labels)``: one tensor per view and (per,) int64 labels.
        """
        per = batch // world
        for s in range(steps):
            sel = order[s * batch + rank * per : s * batch + (rank + 1) * per]
            imgs = self.images[sel]
            if isinstance(views, BatchViews):  # batched on the training device
                vs = views(imgs)
            else:
                vs = [torch.stack([t(im) for im in imgs]) for t in views]
            yield vs, self.labels[sel]


class _ViewsDataset(torch.utils.data.Dataset):
    def __init__(self, index, idx, views):
        self.base = IndexedImages(index, idx, None)
        self.views = views

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label, _ = self.base[i]
        return [t(img) for t in self.views], label


class LoaderImages:
    def __init__(self, index: DatasetIndex, idx: np.ndarray, num_workers: int, pin_memory: bool):
        self.index, self.idx = index, idx
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.labels = torch.as_tensor(index.targets[idx], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.idx)

    def epoch(
        self, order: torch.Tensor, batch: int, steps: int, rank: int, world: int, views: Views
    ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """One epoch's batches decoded by a ``DataLoader`` (``num_workers`` processes).

        Args:
            order: (n,) int64 permutation of the training positions (:func:`epoch_permutation`).
            batch: global batch size (divisible by ``world``).
            steps: steps in the epoch.
            rank: this process's rank.
            world: number of processes; each takes its ``batch // world`` slice of every batch.
            views: a :class:`BatchViews` (workers decode and crop, the rest on the device), or
                per-image transforms.

        Yields:
            ``(views, labels)``: one tensor per view and (per,) int64 labels.
        """
        per = batch // world
        sampler = [order[s * batch + rank * per : s * batch + (rank + 1) * per].tolist() for s in range(steps)]
        batched = views if isinstance(views, BatchViews) else None  # workers decode + crop, the rest on the device
        per_image = batched.worker_transforms() if batched is not None else views
        dl = torch.utils.data.DataLoader(
            _ViewsDataset(self.index, self.idx, per_image),
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        for vs, labels in dl:
            yield (batched.finish(vs) if batched is not None else vs), labels


def choose_mode(mode: str, n: int, image_size: int) -> str:
    """Where training images come from: ``mode`` unless ``"auto"``, which keeps them decoded in
    memory when they fit in 2 GiB as uint8 and ``image_size`` <= 96, else a loader.

    Args:
        mode: ``"auto"`` or an explicit mode (returned as is).
        n: training images.
        image_size: side in pixels.

    Returns:
        The mode (``"memory"`` or ``"loader"`` for ``auto``).
    """
    if mode != "auto":
        return mode
    return "memory" if n * 3 * image_size * image_size <= 2 * 1024**3 and image_size <= 96 else "loader"
