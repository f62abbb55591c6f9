"""Image transforms. The evaluation transform (DESIGN 2.3) is shared by the attack,
the probe and RCDM: resize the short side to round(256/224 * S), center-crop S, normalize.
Training views (two-view SSL augmentations) are in :mod:`dejavu.ssl.augment`.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_size(image_size: int) -> int:
    return int(round(image_size * 256 / 224))


def eval_transform(image_size: int = 224):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(resize_size(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def describe_eval_transform(image_size: int) -> str:
    """A stable string naming the transform (part of embedding cache keys)."""
    return f"resize{resize_size(image_size)}-center{image_size}-imagenet_norm"
