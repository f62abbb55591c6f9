"""Training views (docs/DESIGN.md 2.6): every random parameter of a view, explicit in :class:`ViewSpec`.

Presets (:func:`view_spec`): ``paper`` (the original ``train_SSL.py``; view 0 is its view 1),
``mild`` (the synthetic default: weaker jitter, no greyscale, blur or solarization; strong jitter
blocked memorization on the synthetic data, whose image identity is carried by background
colours), ``crop`` (crop + flip) and ``none`` (resize and centre crop, for debugging). Per image,
in the original's order: crop -> flip -> jitter (torchvision's ``ColorJitter``, a random order)
-> greyscale -> solarize -> to float -> normalise -> blur (after normalising, as the original;
the two commute), the blur kernel scaled with the run's nominal ``image_size``
(:func:`blur_kernel`). The same transform takes PIL images and uint8 CHW tensors
(``torchvision.transforms.v2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_size

BLUR_KERNEL_224 = (5, 9)  # (x, y) kernel size of the original's GaussianBlur at 224 px


@dataclass(frozen=True)
class ViewSpec:
    """The random parameters of one training view, per image."""

    size: int  # output side (the resolution of this epoch)
    crop: bool = True  # RandomResizedCrop; False: resize + centre crop (preset "none")
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.0
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue
    gray_p: float = 0.0
    solarize_p: float = 0.0
    solarize_threshold: int = 128  # of 255
    blur_p: float = 0.0
    blur_kernel: tuple[int, int] = (1, 1)  # (x, y), odd
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    interpolation: str = "bilinear"  # of the crop's resize


def _odd(x: float) -> int:
    """Nearest odd integer >= 1."""
    return max(1, 2 * round((x - 1) / 2) + 1)


def blur_kernel(base_size: int) -> tuple[int, int]:
    """The original's (5, 9) kernel at 224 px, scaled to ``base_size`` and kept odd
    ((5, 9) at 224, (3, 7) at 160, (1, 3) at 64, (1, 1) -- no blur -- at 32)."""
    return _odd(BLUR_KERNEL_224[0] * base_size / 224), _odd(BLUR_KERNEL_224[1] * base_size / 224)


def view_spec(preset: str, size: int, view: int, base_size: int | None = None) -> ViewSpec:
    """The :class:`ViewSpec` of view ``view`` (0 or 1) of ``preset`` at ``size`` px;
    ``base_size`` (default ``size``) is the run's nominal image size, which scales the blur.

    Args:
        preset: ``"none"``, ``"crop"``, ``"mild"`` or ``"paper"``.
        size: output side in pixels.
        view: 0 or 1 (``paper``: view 0 blurs, view 1 solarizes; later views are like 1).
        base_size: the run's nominal image size (default: ``size``).

    Returns:
        The view's settings.

    Raises:
        ValueError: an unknown preset.
    """
    base = base_size or size
    if preset == "none":
        return ViewSpec(size, crop=False, flip_p=0.0)
    if preset == "crop":
        return ViewSpec(size)
    if preset == "mild":
        return ViewSpec(size, jitter_p=0.8, jitter=(0.2, 0.2, 0.1, 0.0))
    if preset == "paper":
        first = view == 0
        return ViewSpec(
            size,
            jitter_p=0.8,
            jitter=(0.4, 0.4, 0.2, 0.1),
            gray_p=0.2,
            solarize_p=0.0 if first else 0.2,
            blur_p=1.0 if first else 0.0,
            blur_kernel=blur_kernel(base) if first else (1, 1),
        )
    raise ValueError(f"unknown augmentation preset {preset!r}")


def build_transform(spec: ViewSpec):
    """The ``torchvision.transforms.v2`` pipeline of ``spec`` (PIL or uint8 tensor in,
    normalised float tensor out)."""
    import torch
    from torchvision.transforms import v2 as T

    interp = T.InterpolationMode(spec.interpolation)
    ops: list = [T.ToImage()]
    if spec.crop:
        ops.append(
            T.RandomResizedCrop(
                spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio, interpolation=interp, antialias=True
            )
        )
    else:
        ops += [T.Resize(resize_size(spec.size), interpolation=interp, antialias=True), T.CenterCrop(spec.size)]
    if spec.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(spec.flip_p))
    if spec.jitter_p > 0:
        ops.append(T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p))
    if spec.gray_p > 0:
        ops.append(T.RandomGrayscale(p=spec.gray_p))
    if spec.solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=spec.solarize_threshold, p=spec.solarize_p))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if spec.blur_p > 0 and spec.blur_kernel != (1, 1):
        ops.append(T.RandomApply([T.GaussianBlur(spec.blur_kernel, sigma=spec.blur_sigma)], p=spec.blur_p))
    return T.Compose(ops)


def build_view(preset: str, image_size: int, view: int, base_size: int | None = None):
    """The transform of view ``view`` (0 or 1) of ``preset``.

    Args:
        preset: an augmentation preset (see :func:`view_spec`).
        image_size: output side in pixels.
        view: 0 or 1.
        base_size: the run's nominal image size (default: ``image_size``), scaling the blur.

    Returns:
        The ``torchvision.transforms.v2`` pipeline (:func:`build_transform`).
    """
    return build_transform(view_spec(preset, image_size, view, base_size))


def build_views(preset: str, image_size: int, num_views: int, base_size: int | None = None) -> list:
    """The transforms of views ``0..num_views-1`` of ``preset`` (:func:`build_view`).

    Args:
        preset: an augmentation preset (see :func:`view_spec`).
        image_size: output side in pixels.
        num_views: how many views.
        base_size: the run's nominal image size (default: ``image_size``), scaling the blur.

    Returns:
        One transform per view.
    """
    return [build_view(preset, image_size, v, base_size) for v in range(num_views)]


def original_probe_view(image_size: int):
    """The training view of the original's linear probe (``lin_probe.py`` trains on the
    second output of ``TrainTransform``): crop (bicubic), flip, jitter p 0.8, greyscale
    p 0.2, solarize p 0.2, no blur."""
    from dataclasses import replace

    return build_transform(replace(view_spec("paper", image_size, 1), interpolation="bicubic"))
