"""Batched, on-device training views with per-sample random parameters (docs/DESIGN.md 7.5).

:class:`BatchViews` applies the operations of :mod:`dejavu.ssl.augment`'s per-image views, with
the same parameter distributions, to a whole uint8 batch on the training device: random resized
crop (parameters drawn as torchvision draws them, applied with ``torchvision.ops.roi_align``),
flip, colour jitter (a random order per sample), greyscale, Gaussian blur (a sigma per sample),
solarization, normalization; torchvision's functional ops take one parameter per call, hence
these short re-implementations of its formulas. The parameters are drawn on the CPU from torch's
global generator (seeded per epoch by the training loop), so runs are reproducible on any
device. Loader path: the workers decode and crop each image (:meth:`BatchViews.worker_transforms`),
the rest runs batched (:meth:`BatchViews.finish`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dejavu import DejavuError

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass
class _Op:
    kind: str  # crop | fixed | flip | jitter | gray | blur | solarize | normalize
    p: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)


def _parse(view) -> list[_Op]:
    """The ops of one per-image ``v2.Compose`` view, in order."""
    from torchvision.transforms import v2 as T

    ops: list[_Op] = []
    for t in getattr(view, "transforms", [view]):
        p, inner = 1.0, t
        if isinstance(t, T.RandomApply):
            if len(t.transforms) != 1:
                raise DejavuError(f"batched augmentation: cannot batch {t!r}; use augment_backend=per_image")
            p, inner = float(t.p), t.transforms[0]
        if isinstance(inner, (T.ToImage, T.ToDtype)):
            continue
        if isinstance(inner, T.RandomResizedCrop):
            ops.append(
                _Op("crop", 1.0, {"size": tuple(inner.size), "scale": tuple(inner.scale), "ratio": tuple(inner.ratio)})
            )
        elif isinstance(inner, (T.Resize, T.CenterCrop)):
            ops.append(_Op("fixed", 1.0, {"t": inner}))
        elif isinstance(inner, T.RandomHorizontalFlip):
            ops.append(_Op("flip", float(inner.p)))
        elif isinstance(inner, T.ColorJitter):
            ops.append(
                _Op("jitter", p, {k: getattr(inner, k) for k in ("brightness", "contrast", "saturation", "hue")})
            )
        elif isinstance(inner, T.RandomGrayscale):
            ops.append(_Op("gray", float(inner.p)))
        elif isinstance(inner, T.GaussianBlur):
            ops.append(_Op("blur", p, {"kernel": tuple(inner.kernel_size), "sigma": tuple(inner.sigma)}))
        elif isinstance(inner, T.RandomSolarize):
            ops.append(_Op("solarize", float(inner.p), {"threshold": float(inner.threshold) / 255.0}))
        elif isinstance(inner, T.Normalize):
            ops.append(_Op("normalize", 1.0, {"mean": tuple(inner.mean), "std": tuple(inner.std)}))
        else:
            raise DejavuError(f"batched augmentation: cannot batch {inner!r}; use augment_backend=per_image")
    return ops


# ---------------------------------------------------------------- parameters (CPU, global RNG)


def crop_params(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], tries: int = 10
) -> torch.Tensor:
    """(n, 4) float boxes ``x1, y1, x2, y2`` drawn as ``RandomResizedCrop.make_params`` does.

    Args:
        n: number of boxes.
        height: image height in pixels.
        width: image width in pixels.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        tries: attempts per sample before the centre-crop fallback.

    Returns:
        (n, 4) float32 boxes in pixels, ``x2``/``y2`` exclusive.
    """
    area = height * width
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1])
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * r))
    h = torch.round(torch.sqrt(target / r))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    w, h = w[rows, first.clamp(min=0)], h[rows, first.clamp(min=0)]
    # fallback (no valid try): the centre crop with the ratio clamped into range
    in_r = width / height
    if in_r < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_r > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    bad = first < 0
    w = torch.where(bad, torch.full_like(w, fw), w)
    h = torch.where(bad, torch.full_like(h, fh), h)
    y = torch.floor(torch.rand(n) * (height - h + 1))
    x = torch.floor(torch.rand(n) * (width - w + 1))
    y = torch.where(bad, torch.div(height - h, 2, rounding_mode="floor"), y)
    x = torch.where(bad, torch.div(width - w, 2, rounding_mode="floor"), x)
    return torch.stack([x, y, x + w, y + h], 1)


def jitter_params(n: int, args: dict) -> dict[str, torch.Tensor]:
    """Per-sample factors (None ranges -> op absent) and a random op order (n, 4).

    Args:
        n: batch size.
        args: ``{"brightness", "contrast", "saturation", "hue"}`` -> ``(lo, hi)`` factor
            range or None.

    Returns:
        ``{"order": (n, 4) int64 op order, name: (n,) factors}`` for each op present.
    """
    out: dict[str, torch.Tensor] = {"order": torch.argsort(torch.rand(n, 4), dim=1)}
    for k in ("brightness", "contrast", "saturation", "hue"):
        if args[k] is not None:
            lo, hi = args[k]
            out[k] = torch.empty(n).uniform_(lo, hi)
    return out


def blur_sigmas(n: int, sigma: tuple[float, float]) -> torch.Tensor:
    """Per-sample Gaussian-blur sigmas, uniform in ``sigma``.

    Args:
        n: batch size.
        sigma: ``(lo, hi)``.

    Returns:
        (n,) float32 sigmas.
    """
    return torch.empty(n).uniform_(sigma[0], sigma[1])


# ---------------------------------------------------------------- batched image ops


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _v(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-sample hue shift (torchvision's rgb->hsv->rgb formulas, vectorised over the batch).

    Args:
        x: (n, 3, H, W) float RGB in [0, 1].
        shift: (n,) hue shifts as fractions of the colour circle (e.g. in [-0.5, 0.5]).

    Returns:
        (n, 3, H, W) shifted images in [0, 1] (a new tensor).
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(1)  # amax: max(1) with indices is ~100x slower on the CPU
    minc = x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    # hsv -> rgb in closed form: c = v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6 with
    # n = 5, 3, 1 for r, g, b -- the same values as torchvision's six-case table, ~5x faster
    vs = (maxc * s).unsqueeze(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + h.unsqueeze(1) * 6.0, 6.0)
    return (maxc.unsqueeze(1) - vs * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)).clamp(0.0, 1.0)


def _jitter_one(x: torch.Tensor, kind: str, f: torch.Tensor) -> torch.Tensor:
    if kind == "brightness":
        return (x * _v(f)).clamp_(0, 1)
    if kind == "contrast":
        m = _gray(x).mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        return (x * _v(f) + m * (1 - _v(f))).clamp_(0, 1)
    if kind == "saturation":
        return (x * _v(f) + _gray(x) * (1 - _v(f))).clamp_(0, 1)
    return adjust_hue(x, f)


def color_jitter(x: torch.Tensor, params: dict[str, torch.Tensor], apply: torch.Tensor) -> torch.Tensor:
    """Apply the jitter to samples where ``apply``; each sample's ops in its own random order.

    Args:
        x: (n, 3, H, W) float RGB in [0, 1], modified in place.
        params: from :func:`jitter_params`.
        apply: (n,) bool, which samples are jittered.

    Returns:
        ``x``.
    """
    names = ("brightness", "contrast", "saturation", "hue")
    order, apply = params["order"], apply.cpu()  # indices computed on the CPU: no device syncs
    for pos in range(4):
        for o, name in enumerate(names):
            if name not in params:
                continue
            sel = torch.nonzero(apply & (order[:, pos] == o)).flatten()
            if len(sel):
                idx = sel.to(x.device, non_blocking=True)
                x[idx] = _jitter_one(x[idx], name, params[name][sel].to(x.device, non_blocking=True))
    return x


def gaussian_blur(x: torch.Tensor, kernel: tuple[int, int], sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample Gaussian blur: ``kernel`` = (kx, ky) as in torchvision, reflect padding.

    Args:
        x: (n, C, H, W) float images.
        kernel: ``(kx, ky)`` odd kernel sizes.
        sigma: (n,) per-sample sigmas.

    Returns:
        (n, C, H, W) blurred images (a new tensor).
    """
    n, c, hgt, wid = x.shape
    kx, ky = kernel
    sig = sigma.to(x.device, x.dtype).view(-1, 1)

    def k1d(k: int) -> torch.Tensor:
        t = torch.linspace(-(k - 1) * 0.5, (k - 1) * 0.5, k, device=x.device, dtype=x.dtype)
        w = torch.exp(-0.5 * (t.view(1, -1) / sig) ** 2)
        return (w / w.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, k)

    y = x.reshape(1, n * c, hgt, wid)
    y = F.pad(y, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
    y = F.conv2d(y, k1d(kx).view(n * c, 1, 1, kx), groups=n * c)
    y = F.conv2d(y, k1d(ky).view(n * c, 1, ky, 1), groups=n * c)
    return y.view(n, c, hgt, wid)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``boxes`` (n, 4: x1, y1, x2, y2) of each image and resize to ``size`` (h, w).

    Args:
        x: (n, C, H, W) float images.
        boxes: (n, 4) pixel boxes ``x1, y1, x2, y2`` (:func:`crop_params`).
        size: output ``(h, w)``.

    Returns:
        (n, C, h, w) crops, by ``torchvision.ops.roi_align`` (bilinear, averaging
        samples over each output cell).
    """
    from torchvision.ops import roi_align

    idx = torch.arange(len(x), device=x.device, dtype=x.dtype).view(-1, 1)
    rois = torch.cat([idx, boxes.to(x.device, x.dtype)], 1)
    return roi_align(x, rois, output_size=tuple(size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


class BatchView:
    """One view: uint8 ``(N, 3, H, W)`` -> normalized float32 ``(N, 3, S, S)`` on ``device``."""

    def __init__(self, view, device: torch.device | str = "cpu"):
        from torchvision.transforms import v2 as T

        self.ops = _parse(view)
        self.device = torch.device(device)
        lead = 0
        while lead < len(self.ops) and self.ops[lead].kind in ("crop", "fixed"):
            lead += 1
        self.lead = lead
        worker: list = [T.ToImage()]
        for t in getattr(view, "transforms", [view]):
            if isinstance(t, (T.RandomResizedCrop, T.Resize, T.CenterCrop)):
                worker.append(t)
        self.worker_transform = T.Compose(worker)  # the loader path's per-image part

    def __call__(self, images: torch.Tensor, from_op: int = 0) -> torch.Tensor:
        n = len(images)
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        for op in self.ops[from_op:]:
            x = self._apply(op, x, n)
        return x

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """The loader path: ``images`` already cropped by :attr:`worker_transform`."""
        return self(images, from_op=self.lead)

    def _apply(self, op: _Op, x: torch.Tensor, n: int) -> torch.Tensor:
        dev = x.device
        if op.kind == "crop":
            boxes = crop_params(n, x.shape[-2], x.shape[-1], op.args["scale"], op.args["ratio"])
            return resized_crop(x, boxes, op.args["size"])
        if op.kind == "fixed":
            return op.args["t"](x)
        mask_cpu = torch.rand(n) < op.p
        mask = mask_cpu.to(dev, non_blocking=True)
        if op.kind == "flip":
            return _where(mask, x.flip(-1), x)
        if op.kind == "jitter":
            return color_jitter(x, jitter_params(n, op.args), mask_cpu)
        if op.kind == "gray":
            return _where(mask, _gray(x).expand_as(x), x)
        if op.kind == "blur":
            sig = blur_sigmas(n, op.args["sigma"])
            sel = torch.nonzero(mask_cpu).flatten()
            if len(sel):
                idx = sel.to(dev, non_blocking=True)
                x[idx] = gaussian_blur(x[idx], op.args["kernel"], sig[sel])
            return x
        if op.kind == "solarize":
            return torch.where(mask.view(-1, 1, 1, 1) & (x >= op.args["threshold"]), 1.0 - x, x)
        mean = torch.tensor(op.args["mean"], device=dev, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(op.args["std"], device=dev, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


class BatchViews:
    """All views of a training step, batched on ``device``.

    Args:
        views: the per-image views (``dejavu.ssl.augment.build_views``).
        device: where the augmentation runs (the training device).
    """

    def __init__(self, views: list, device: torch.device | str = "cpu"):
        self.views = [BatchView(v, device) for v in views]

    def __len__(self) -> int:
        return len(self.views)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """In-memory path: uint8 ``(N, 3, H, W)`` -> one float batch per view."""
        return [v(images) for v in self.views]

    def worker_transforms(self) -> list:
        """Loader path: the per-image part (decode -> crop/resize to uint8) of each view."""
        return [v.worker_transform for v in self.views]

    def finish(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Loader path: the rest of each view, batched on the device."""
        return [v.finish(b) for v, b in zip(self.views, batches)]
