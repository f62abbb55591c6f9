"""Training views (DESIGN 2.6), sized to ``image_size``.

Presets:

* ``paper``: RandomResizedCrop(0.08-1), flip, colour jitter p 0.8 (0.4/0.4/0.2/0.1),
  greyscale p 0.2; view 1 always Gaussian blur; view 2 blur p 0.1 and solarization
  p 0.2 (VICReg/BYOL recipe). Blur kernel ~10% of the image size (23 px at 224).
* ``mild`` (synthetic default): RandomResizedCrop(0.08-1), flip, colour jitter p 0.8
  (brightness 0.2, contrast 0.2, saturation 0.1, no hue), no greyscale/blur/solarize.
  Strong jitter blocked memorization on the synthetic data, whose image identity is
  carried by background colours.
* ``crop``: RandomResizedCrop(0.08-1) + flip only (the supervised baseline).
* ``none``: resize/center-crop only (debugging).

The same transform works on PIL images (loader path) and on uint8 CHW tensors
(in-memory path), through ``torchvision.transforms.v2``.
"""

from __future__ import annotations

from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _blur_kernel(image_size: int) -> int:
    k = max(3, int(round(image_size * 23 / 224)))
    return k if k % 2 == 1 else k + 1


def build_view(preset: str, image_size: int, view: int):
    """The transform of view ``view`` (0 or 1) of ``preset``."""
    import torch
    from torchvision.transforms import v2 as T

    S = image_size
    ops: list = [T.ToImage()]
    if preset == "none":
        from dejavu.data.transforms import resize_size

        ops += [T.Resize(resize_size(S), antialias=True), T.CenterCrop(S)]
    else:
        ops += [T.RandomResizedCrop(S, scale=(0.08, 1.0), antialias=True), T.RandomHorizontalFlip()]
    if preset == "paper":
        ops += [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(_blur_kernel(S), sigma=(0.1, 2.0))], p=1.0 if view == 0 else 0.1),
        ]
        if view == 1:
            ops.append(T.RandomSolarize(threshold=128, p=0.2))
    elif preset == "mild":
        ops.append(T.RandomApply([T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.0)], p=0.8))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


def build_views(preset: str, image_size: int, num_views: int) -> list:
    return [build_view(preset, image_size, v) for v in range(num_views)]


class MultiView:
    """PIL image -> list of views (for the DataLoader path)."""

    def __init__(self, views: list):
        self.views = views

    def __call__(self, img):
        return [t(img) for t in self.views]
