"""Batched on-device augmentation (dejavu.ssl.batch_augment) against the per-image
torchvision path (dejavu.ssl.augment): same parameter distributions, same pixel ops,
and training through it (in-memory and loader paths)."""

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from dejavu.data.imagefolder import DataPaths
from dejavu.ssl import batch_augment as BA
from dejavu.ssl.augment import build_view
from dejavu.ssl.batch_augment import BatchView, BatchViews
from dejavu.ssl.config import load_train_config
from dejavu.ssl.train import train

N = 3000  # samples per statistic: binomial sd of a rate <= 0.009


def _per_image_ops(view):
    """(kind, transform) of the per-image view's random ops, unwrapped from RandomApply."""
    out = []
    for t in view.transforms:
        p, inner = (t.p, t.transforms[0]) if isinstance(t, T.RandomApply) else (None, t)
        out.append((type(inner).__name__, t, inner, p))
    return out


def _changed_rate(fn, img: torch.Tensor, n: int) -> float:
    return float(np.mean([not torch.equal(fn(img), img) for _ in range(n)]))


@pytest.mark.parametrize("preset,view", [("mild", 0), ("paper", 0), ("paper", 1), ("crop", 0)])
def test_parameter_statistics_match_per_image(preset, view):
    torch.manual_seed(0)
    S = 32
    pv = build_view(preset, S, view)
    bv = BatchView(pv)
    kinds = [op.kind for op in bv.ops]
    img = torch.randint(0, 256, (3, S, S), dtype=torch.uint8)
    img[:, :, : S // 2] = 200  # left/right asymmetric; bright pixels for solarize
    batch = img.float().div(255).expand(N, 3, S, S).contiguous()
    for name, outer, inner, p in _per_image_ops(pv):
        if name == "RandomResizedCrop":
            ref = torch.tensor(
                [
                    [d["width"] * d["height"] / S**2, math.log(d["width"] / d["height"])]
                    for d in (inner.make_params([img]) for _ in range(N))
                ]
            )
            b = BA.crop_params(N, S, S, inner.scale, inner.ratio)
            ours = torch.stack(
                [
                    (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / S**2,
                    torch.log((b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])),
                ],
                1,
            )
            tol = 4 * ref.std(0) * math.sqrt(2 / N)  # 4 sd of a difference of means
            assert ((ours.mean(0) - ref.mean(0)).abs() < tol).all(), (ours.mean(0), ref.mean(0))
            assert ((ours.std(0) - ref.std(0)).abs() < tol).all(), (ours.std(0), ref.std(0))
            assert ((b[:, :2] >= 0) & (b[:, 2:] <= S)).all()
        elif name in ("RandomHorizontalFlip", "RandomGrayscale", "RandomSolarize") or p is not None:
            kind = {
                "RandomHorizontalFlip": "flip",
                "RandomGrayscale": "gray",
                "RandomSolarize": "solarize",
                "ColorJitter": "jitter",
                "GaussianBlur": "blur",
            }[name]
            op = bv.ops[kinds.index(kind)]
            ref_rate = _changed_rate(outer, img, N)
            ours = bv._apply(op, batch.clone(), N)
            our_rate = float((ours - batch).abs().flatten(1).amax(1).gt(1e-6).float().mean())
            assert abs(our_rate - ref_rate) < 0.04, (name, our_rate, ref_rate)
            if name == "ColorJitter":
                ref = [inner.make_params([img]) for _ in range(N)]
                ours_f = BA.jitter_params(N, op.args)
                for k in ("brightness", "contrast", "saturation", "hue"):
                    vals = [d[f"{k}_factor"] for d in ref if d[f"{k}_factor"] is not None]
                    assert (k in ours_f) == bool(vals), k
                    if vals:
                        r = torch.tensor(vals)
                        tol = 4 * float(r.std()) * math.sqrt(2 / N)  # 4 sd of a difference of means
                        assert abs(ours_f[k].mean() - r.mean()) < tol and abs(ours_f[k].std() - r.std()) < tol
            if name == "GaussianBlur":
                ref_s = torch.tensor([inner.make_params([img])["sigma"][0] for _ in range(N)])
                s = BA.blur_sigmas(N, op.args["sigma"])
                assert (
                    abs(s.mean() - ref_s.mean()) < 4 * ref_s.std() * math.sqrt(2 / N)
                    and s.min() >= 0.1
                    and s.max() <= 2.0
                )
                assert op.args["kernel"] == tuple(inner.kernel_size)


def test_pixel_ops_match_torchvision():
    torch.manual_seed(1)
    x = torch.rand(4, 3, 40, 36)
    f = torch.tensor([0.7, 1.0, 1.3, 0.9])
    for kind, fn in (
        ("brightness", TF.adjust_brightness),
        ("contrast", TF.adjust_contrast),
        ("saturation", TF.adjust_saturation),
    ):
        ours = BA._jitter_one(x.clone(), kind, f)
        ref = torch.stack([fn(x[i], float(f[i])) for i in range(4)])
        assert torch.allclose(ours, ref, atol=1e-5), kind
    h = torch.tensor([-0.1, 0.0, 0.05, 0.1])
    ref = torch.stack([TF.adjust_hue(x[i], float(h[i])) for i in range(4)])
    assert torch.allclose(BA.adjust_hue(x, h), ref, atol=1e-4)
    sig = torch.tensor([0.3, 1.0, 1.7, 2.0])
    ref = torch.stack([TF.gaussian_blur(x[i], [5, 9], [float(sig[i])] * 2) for i in range(4)])
    assert torch.allclose(BA.gaussian_blur(x, (5, 9), sig), ref, atol=1e-5)


def test_crop_matches_crop_then_resize():
    """Upsampling (the in-memory path) and shrinking (antialiased) crops."""
    torch.manual_seed(2)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 12), size=(64, 64), mode="bilinear")
    boxes = torch.tensor([[8.0, 4.0, 40.0, 28.0], [0.0, 0.0, 64.0, 64.0]])
    ours = BA.resized_crop(x, boxes, (32, 32))
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], y1, x1, y2 - y1, x2 - x1, [32, 32], antialias=True)
        d = (ours[i] - ref).abs()
        # upsampling: the same bilinear sample points (edges clamp differently); shrinking:
        # roi_align's box average vs torchvision's antialias triangle filter
        assert d.mean() < 0.01 and d[:, 1:-1, 1:-1].max() < (0.05 if i == 0 else 0.1), (i, d.mean(), d.max())


def test_views_shapes_normalization_and_errors():
    torch.manual_seed(3)
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    bv = BatchViews([build_view("none", 32, 0), build_view("paper", 32, 0)])
    a, b = bv(imgs)
    ref = torch.stack([build_view("none", 32, 0)(im) for im in imgs])
    assert a.shape == b.shape == (8, 3, 32, 32) and torch.allclose(a, ref, atol=0.02)
    w = bv.worker_transforms()[1](TF.to_pil_image(imgs[0]))
    assert w.dtype == torch.uint8 and w.shape == (3, 32, 32)
    assert bv.finish([w[None], w[None]])[1].dtype == torch.float32
    with pytest.raises(Exception, match="augment_backend=per_image"):
        BatchView(T.Compose([T.RandomRotation(10)]))


@pytest.mark.parametrize("mode", ["memory", "loader"])
def test_training_through_batched_views(mode, synth_small, partition_small, tmp_path):
    sets = [
        "projector=64-64",
        "knn_every=0",
        "warmup_epochs=0",
        "epochs=2",
        "batch_size=25",
        f"data_mode={mode}",
        "augment_backend=device",
    ]
    cfg = load_train_config(None, sets, method="vicreg")
    res = train(
        cfg,
        DataPaths.resolve(data=synth_small),
        partition_small / "10_per_class" / "train_A.npy",
        tmp_path / "run",
        device="cpu",
    )
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 2 and all(np.isfinite(losses)) and losses[-1] < losses[0]
