"""The original's training views (train_SSL.py): explicit per-image parameters, the blur
kernel's orientation and scaling, solarization on view 2 only."""

import pytest
import torch
from torchvision.transforms import v2 as T

from dejavu.ssl.augment import ViewSpec, blur_kernel, build_view, original_probe_view, view_spec


def _ops(transform, kind):
    out = []
    for op in transform.transforms:
        inner = op.transforms if isinstance(op, T.RandomApply) else [op]
        out += [(op, i) for i in inner if isinstance(i, kind)]
    return out


def test_paper_views_are_the_originals():
    v1, v2 = view_spec("paper", 224, 0), view_spec("paper", 224, 1)
    for v in (v1, v2):
        assert (v.crop_scale, v.flip_p, v.jitter_p, v.jitter, v.gray_p) == (
            (0.08, 1.0),
            0.5,
            0.8,
            (0.4, 0.4, 0.2, 0.1),
            0.2,
        )
        assert v.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (v1.blur_p, v1.blur_kernel, v1.blur_sigma, v1.solarize_p) == (1.0, (5, 9), (0.1, 2.0), 0.0)
    assert (v2.blur_p, v2.solarize_p, v2.solarize_threshold) == (0.0, 0.2, 128)
    # the ramped resolution keeps the kernel of the run's nominal size, as the original (5, 9 at 160-192)
    assert view_spec("paper", 160, 0, base_size=224).blur_kernel == (5, 9)


def test_blur_kernel_scales_and_stays_odd():
    assert blur_kernel(224) == (5, 9)
    for s in (32, 64, 96, 128, 160, 192, 256, 448):
        kx, ky = blur_kernel(s)
        assert kx % 2 == 1 and ky % 2 == 1 and kx <= ky
        assert abs(ky - 9 * s / 224) <= 1 and abs(kx - 5 * s / 224) <= 1
    assert blur_kernel(448) == (9, 17) and blur_kernel(64) == (1, 3)


def test_view1_always_blurred_with_a_5_wide_9_tall_kernel_view2_never():
    t1, t2 = build_view("paper", 224, 0), build_view("paper", 224, 1)
    ((apply, blur),) = _ops(t1, T.GaussianBlur)
    assert apply.p == 1.0 and tuple(blur.kernel_size) == (5, 9) and list(blur.sigma) == [0.1, 2.0]
    impulse = torch.zeros(1, 1, 21, 21)
    impulse[..., 10, 10] = 1
    support = (blur(impulse)[0, 0] > 0).nonzero()
    assert len(support[:, 0].unique()) == 9 and len(support[:, 1].unique()) == 5  # rows (y) x columns (x)
    assert not _ops(t2, T.GaussianBlur) and not _ops(t1, T.RandomSolarize)
    ((_, sol),) = _ops(t2, T.RandomSolarize)
    assert sol.p == 0.2 and sol.threshold == 128
    # blur comes last (after normalisation), as the original
    assert isinstance(t1.transforms[-1], T.RandomApply) and isinstance(t1.transforms[-2], T.Normalize)


def test_views_run_on_tensors_and_pil():
    from PIL import Image

    img = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    for v in range(2):
        t = build_view("paper", 32, v, base_size=224)
        assert t(img).shape == (3, 32, 32) and t(img).dtype == torch.float32
        assert t(Image.fromarray(img.permute(1, 2, 0).numpy())).shape == (3, 32, 32)


def test_original_probe_view():
    t = original_probe_view(224)
    (crop,) = [op for op in t.transforms if isinstance(op, T.RandomResizedCrop)]
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert _ops(t, T.ColorJitter) and _ops(t, T.RandomGrayscale) and _ops(t, T.RandomSolarize)
    assert not _ops(t, T.GaussianBlur)


def test_other_presets():
    assert view_spec("crop", 32, 0) == ViewSpec(32)
    assert view_spec("mild", 32, 1).jitter == (0.2, 0.2, 0.1, 0.0) and view_spec("mild", 32, 1).blur_p == 0
    with pytest.raises(ValueError):
        view_spec("strong", 32, 0)
