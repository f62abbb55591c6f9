"""JPEG draft-mode decoding for the evaluation path: used only where both sides stay
>= the resize target; the evaluated tensor stays within the documented tolerance."""

import numpy as np
import torch
from PIL import Image

from dejavu.attack.embed import ImageCrops
from dejavu.data.dataset import load_rgb
from dejavu.data.fastjpeg import draft_side, load_rgb_reduced
from dejavu.data.transforms import eval_transform, resize_size


def _photo_like(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth gradients + blobs + mild noise (JPEG-typical content)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.stack([np.sin(6 * xx + c) * 0.5 + 0.5 * np.cos(5 * yy - c) for c in (0, 1, 2)], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    img = np.clip(img * 0.5 + 0.5 + rng.normal(0, 0.02, img.shape), 0, 1)
    return Image.fromarray((img * 255).astype(np.uint8))


def test_draft_only_when_both_sides_stay_above_target(tmp_path):
    p = tmp_path / "a.JPEG"
    _photo_like(500, 375).save(p, quality=90)
    assert draft_side(eval_transform(64)) == resize_size(64) == 73
    assert draft_side(lambda x: x) is None
    assert load_rgb_reduced(p, 73).size == (97, 73)  # 1/4 decode (125 x 94), resized like Resize(73)
    assert load_rgb_reduced(p, 256).size == (500, 375)  # 375 < 2 * 256: no reduction at 224 px
    assert load_rgb_reduced(p, None).size == (500, 375)
    small = tmp_path / "s.JPEG"
    _photo_like(32, 32).save(small, quality=90)
    assert np.array_equal(np.asarray(load_rgb_reduced(small, 37)), np.asarray(load_rgb(small)))


def test_draft_tolerance_after_eval_transform(tmp_path):
    """Documented in bench/README.md: mean abs diff < 0.006, max < 0.2 (in [0, 1] pixel units)."""
    for size in (64, 112, 160):
        for seed in range(3):
            p = tmp_path / f"{size}_{seed}.JPEG"
            _photo_like(500, 375, seed).save(p, quality=90)
            tf = eval_transform(size)
            ds = ImageCrops([p, p], [None, (0, 0, 500, 375)], tf, draft=True)  # full image: draft; box: full decode
            (fast, _), (full, _) = ds[0], ds[1]
            std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
            d = ((fast - full) * std).abs()  # back to [0, 1] pixel units
            assert d.mean() < 0.006 and d.max() < 0.2, (size, seed, float(d.mean()), float(d.max()))


def test_corrupt_file_gives_the_one_line_error(tmp_path):
    import pytest

    from dejavu import DejavuError

    p = tmp_path / "bad.JPEG"
    _photo_like(500, 375).save(p, quality=90)
    p.write_bytes(p.read_bytes()[:2000])  # truncated
    with pytest.raises(DejavuError, match=r"bad\.JPEG"):
        load_rgb_reduced(p, 73)
