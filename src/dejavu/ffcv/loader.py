"""Training views through FFCV (``dejavu train --loader ffcv --train-beton FILE``): :class:`BetonImages`
is what ``dejavu.ssl.train.train(images=...)`` takes, :class:`FFCVImages` the source it opens.

The batches are exactly those of the torchvision paths of :mod:`dejavu.ssl.data` (FFCV is given
the epoch's permutation and each rank's slice); per view, FFCV decodes and crops the stored
image and the rest of the view runs in torch (:func:`plan_views`). The differences from the
torchvision path (OpenCV resize, unseeded FFCV random numbers) and why each pipeline switches
once from compiled to non-compiled steps: docs/DESIGN.md §7.5.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dejavu import DejavuError
from dejavu.data.imagefolder import DatasetIndex
from dejavu.ffcv import require_ffcv
from dejavu.ffcv.betons import BetonFile, check_beton


def split_view(view) -> tuple[dict[str, Any], Any]:
    """Split a torchvision v2 training view into (FFCV geometric part, torch remainder).

    Returns:
        ``({"crop": ("random", size, scale, ratio) | ("center", size, ratio), "flip": p},
        remainder)`` where ``remainder`` is a ``v2.Compose`` for uint8 CHW tensors.
    """
    from torchvision.transforms import v2 as T

    ops = getattr(view, "transforms", None)
    if not isinstance(view, T.Compose) or ops is None:
        raise DejavuError(f"--loader ffcv needs torchvision v2 Compose training views, got {type(view).__name__}")
    geo: dict[str, Any] = {"crop": None, "flip": 0.0}
    rest = []
    for t in ops:
        if isinstance(t, T.ToImage):
            continue
        if isinstance(t, T.RandomResizedCrop):
            geo["crop"] = ("random", int(t.size[0]), tuple(t.scale), tuple(t.ratio))
        elif isinstance(t, T.Resize):
            pass  # with CenterCrop: the evaluation-style view (preset "none")
        elif isinstance(t, T.CenterCrop):
            geo["crop"] = ("center", int(t.size[0]), 224 / 256)
        elif isinstance(t, T.RandomHorizontalFlip):
            geo["flip"] = float(t.p)
        else:
            rest.append(t)
    if geo["crop"] is None:
        raise DejavuError("--loader ffcv: the training view has no RandomResizedCrop/CenterCrop to decode with")
    return geo, (T.Compose(rest) if rest else None)


def plan_views(
    views,
) -> tuple[list[dict[str, Any]], Callable[[list[torch.Tensor]], list[torch.Tensor]]]:
    """What FFCV decodes per view, and what turns the decoded uint8 batches into the views.

    ``views`` is either the per-image views (a list of ``v2.Compose``: FFCV crops and flips,
    the rest runs per image in torch) or a :class:`dejavu.ssl.batch_augment.BatchViews`
    (``augment_backend: device``: FFCV does its loader-path part, the crop, and
    ``BatchViews.finish`` the rest, batched on the training device).
    """
    if hasattr(views, "finish") and hasattr(views, "worker_transforms"):
        geos = [split_view(t)[0] for t in views.worker_transforms()]
        return geos, views.finish
    parts = [split_view(v) for v in views]
    rests = [rest for _, rest in parts]
    return [g for g, _ in parts], lambda batches: [_apply(r, b) for r, b in zip(rests, batches)]


def _apply(rest, imgs: torch.Tensor) -> torch.Tensor:
    """``rest`` on each image of a uint8 batch; its deterministic tail (dtype scaling,
    normalisation: the same for every image) once on the whole batch, which is faster."""
    from torchvision.transforms import v2 as T

    ops = list(rest.transforms) if rest is not None else []
    k = len(ops)
    while k and isinstance(ops[k - 1], (T.ToDtype, T.Normalize)):
        k -= 1
    out = imgs
    if k:
        per_image = T.Compose(ops[:k])
        out = torch.stack([per_image(im) for im in imgs])
    return T.Compose(ops[k:])(out) if k < len(ops) else out


def _image_ops(geo: dict[str, Any]) -> tuple[Any, list]:
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    kind, size, *args = geo["crop"]
    if kind == "random":
        dec = RandomResizedCropRGBImageDecoder((size, size), scale=args[0], ratio=args[1])
    else:
        dec = CenterCropRGBImageDecoder((size, size), ratio=args[0])
    flip = [RandomHorizontalFlip(geo["flip"])] if geo["flip"] > 0 else []
    return dec, flip + [ToTensor(), ToTorchImage()]


class FFCVImages:
    """A training source with the interface of :class:`dejavu.ssl.data.MemoryImages`.

    Args:
        beton: the beton of the training set (written from the same index file).
        index: the dataset.
        idx: the training set's global indices (the ``--index`` file), in beton order.
        num_workers: FFCV decoding threads (0: one).
    """

    def __init__(self, beton: str | os.PathLike, index: DatasetIndex, idx: np.ndarray, num_workers: int = 0):
        require_ffcv("--loader ffcv")
        self.beton = Path(beton)
        bf = BetonFile(self.beton)
        check_beton(bf, index, idx, "the --index file")
        self.fields = bf.fields
        self.idx = np.asarray(idx, np.int64)
        self.labels = torch.as_tensor(index.targets[self.idx], dtype=torch.long)
        self.num_workers = max(1, int(num_workers))
        self._loader: Any = None
        self._key: tuple | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def _build(self, per: int, steps: int, geos: list[dict[str, Any]]) -> Any:
        from ffcv.fields.decoders import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.pipeline import PipelineSpec
        from ffcv.transforms import Squeeze, ToTensor

        # outputs: image, label, index (our betons; the original's have no index), image_1...
        pipelines: dict[str, Any] = {f: None for f in self.fields}
        pipelines["label"] = [IntDecoder(), ToTensor(), Squeeze()]
        if "index" in self.fields:
            pipelines["index"] = [IntDecoder(), ToTensor(), Squeeze()]
        for v, geo in enumerate(geos):
            dec, ops = _image_ops(geo)
            pipelines["image" if v == 0 else f"image_{v}"] = PipelineSpec("image", decoder=dec, transforms=ops)
        return Loader(
            str(self.beton),
            batch_size=per,
            num_workers=self.num_workers,
            order=OrderOption.SEQUENTIAL,
            indices=np.arange(per * steps),
            pipelines=pipelines,
            drop_last=True,
            os_cache=True,
        )

    def epoch(
        self, order: torch.Tensor, batch: int, steps: int, rank: int, world: int, views: Any
    ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Yield ``(views, labels)`` per step, exactly the batches of the other sources.

        Args:
            order: (n,) int64 permutation of the training positions (:func:`epoch_permutation`).
            batch: global batch size (divisible by ``world``).
            steps: steps in the epoch.
            rank: this process's rank.
            world: number of processes; each takes its ``batch // world`` slice of every batch.
            views: the views to produce (as :func:`plan_views` accepts).

        Yields:
            ``(views, labels)``: one (per, 3, S, S) tensor per view and (per,) int64 labels.

        Raises:
            DejavuError: FFCV returned images out of order.
        """
        per = batch // world
        geos, finish = plan_views(views)
        key = (per, steps, repr(geos))
        if self._key != key:  # built (and compiled) once per run and resolution
            self._loader, self._key = self._build(per, steps, geos), key
        o = order.numpy()
        pos = np.concatenate([o[s * batch + rank * per : s * batch + (rank + 1) * per] for s in range(steps)])
        self._loader.traversal_order.indices = pos  # upstream Sequential order: traverses these as given
        for s, out in enumerate(self._loader):
            image0, labels, *others = out
            if "index" in self.fields:
                gidx, *others = others
                if not np.array_equal(gidx.numpy(), self.idx[pos[s * per : (s + 1) * per]]):
                    raise DejavuError(f"{self.beton}: FFCV returned images out of order at step {s}")
            yield finish([image0, *others]), labels.clone().long()


class BetonImages:
    """The training images of ``dejavu train --loader ffcv --train-beton FILE``, for
    ``dejavu.ssl.train.train(..., images=BetonImages(FILE))`` (a
    :class:`dejavu.ssl.data.StoredImages`); ffcv is checked here, before any work.

    Args:
        path: the beton of the ``--index`` images (``dejavu betons``), recorded as ``train_beton``.
    """

    def __init__(self, path: str | os.PathLike):
        require_ffcv("--loader ffcv")
        self.path = str(path)

    def open(self, index: DatasetIndex, idx: np.ndarray, num_workers: int) -> FFCVImages:
        return FFCVImages(self.path, index, idx, num_workers)
