"""The attack's mixed-precision embedding: bf16 autocast (CPU here; CUDA in
bench/gpu_checks.sh) stays close to fp32 and finds the same neighbours; stored fp32."""

import numpy as np
import pytest
import torch

from dejavu.attack.embed import ImageCrops, autocast_dtype, embed_dataset
from dejavu.attack.knn import knn
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.data.transforms import eval_transform
from dejavu.ssl.model import ModelSpec, SSLModel


def _cpu_bf16_autocast() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3))
        return y.dtype == torch.bfloat16
    except RuntimeError:
        return False


def test_autocast_choice():
    assert autocast_dtype("cuda") == torch.bfloat16 and autocast_dtype("cuda:1") == torch.bfloat16
    assert autocast_dtype("cpu") is None and autocast_dtype("cpu", "bf16") == torch.bfloat16
    assert autocast_dtype("cuda", "fp32") is None
    with pytest.raises(ValueError):
        autocast_dtype("cpu", "fp8")


def test_bf16_embeddings_close_to_fp32_and_same_neighbours(synth_small):
    if not _cpu_bf16_autocast():
        pytest.skip("this torch build has no bf16 autocast on the CPU")
    index = scan_imagefolder(DataPaths.resolve(data=synth_small).images)
    paths = [index.path(i) for i in range(len(index.targets))][:300]
    torch.manual_seed(0)
    model = SSLModel(ModelSpec("smallcnn", "256-128", 0))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    ds = ImageCrops(paths, None, eval_transform(32))
    (e32,) = embed_dataset([model], ds, "projector", batch_size=64, precision="fp32")
    (e16,) = embed_dataset([model], ds, "projector", batch_size=64, precision="bf16")
    assert e16.dtype == np.float32 and e16.shape == e32.shape
    rel = np.linalg.norm(e16 - e32, axis=1) / np.linalg.norm(e32, axis=1)
    assert rel.max() < 0.05, rel.max()  # bf16 has an 8-bit mantissa: ~0.4% per op
    q, pub = slice(0, 60), slice(60, None)
    _, n32 = knn(e32[q], e32[pub], 20, backend="torch")
    _, n16 = knn(e16[q], e16[pub], 20, backend="torch")
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(n32, n16)])
    assert overlap > 0.9, overlap
    assert np.mean(n32[:, 0] == n16[:, 0]) > 0.9


def test_deferred_normalization_is_exact(synth_small):
    """embed_dataset normalizes uint8 batches on the device: same values as ToTensor + Normalize."""
    index = scan_imagefolder(DataPaths.resolve(data=synth_small).images)
    paths = [index.path(i) for i in range(40)]
    boxes = [None if i % 2 else (2, 2, 28, 30) for i in range(40)]
    ds = ImageCrops(paths, boxes, eval_transform(32))
    split, mean, std = ds.deferred_normalize()
    assert split.head is not None and ds.head is None  # a copy; the original is untouched
    x = torch.stack([ds[i][0] for i in range(40)])
    u = torch.stack([split[i][0] for i in range(40)])
    assert u.dtype == torch.uint8
    y = u.float().div(255).sub(torch.tensor(mean).view(1, 3, 1, 1)).div(torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(x, y)
    torch.manual_seed(0)
    model = SSLModel(ModelSpec("smallcnn", "64-32", 0)).eval()
    (e,) = embed_dataset([model], ds, "projector", batch_size=16, precision="fp32")
    with torch.no_grad():
        ref = torch.cat([model.embed(x[i : i + 16], "projector") for i in range(0, 40, 16)]).numpy()
    assert np.array_equal(e, ref)


def test_in_process_batches_match_the_dataloader_path(synth_small, tmp_path):
    """workers=0 builds uint8 batches in a background thread (ImageCrops.uint8_batch, the
    centre crop as an array slice): the same pixels as the per-image transform, and the same
    embeddings as a DataLoader worker process, for full images (draft decode), crops, an
    upscaled image and a ragged last batch."""
    from PIL import Image

    index = scan_imagefolder(DataPaths.resolve(data=synth_small).images)
    paths: list = [index.path(i) for i in range(45)]
    big = tmp_path / "big.jpg"  # 120 px: decoded in draft mode at resize 37
    Image.open(paths[0]).resize((120, 90)).save(big, quality=90)
    paths += [big, big]
    boxes = [None if i % 3 else (1, 3, 30, 29) for i in range(45)] + [None, (5, 5, 100, 80)]
    ds = ImageCrops(paths, boxes, eval_transform(32), draft=True)  # the opt-in draft decode
    split = ds.deferred_normalize()[0]
    u = split.uint8_batch(0, len(ds))
    assert u.dtype == torch.uint8 and u.is_contiguous() and u.shape == (47, 3, 32, 32)
    assert torch.equal(u, torch.stack([split[i][0] for i in range(len(ds))]))
    torch.manual_seed(0)
    models = [SSLModel(ModelSpec("smallcnn", "64-32", 0)).eval() for _ in range(2)]
    threaded = embed_dataset(models, ds, "projector", batch_size=16, workers=0)
    loader = embed_dataset(models, ds, "projector", batch_size=16, workers=1)
    for a, b in zip(threaded, loader):
        assert a.shape == (47, 32) and np.array_equal(a, b)


def test_decoding_error_in_the_thread_is_raised(synth_small, tmp_path):
    from dejavu import DejavuError

    index = scan_imagefolder(DataPaths.resolve(data=synth_small).images)
    bad = tmp_path / "bad.JPEG"
    bad.write_bytes(b"not an image")
    paths = [index.path(i) for i in range(40)] + [bad]
    model = SSLModel(ModelSpec("smallcnn", "64-32", 0)).eval()
    with pytest.raises(DejavuError, match=r"bad\.JPEG: cannot decode image"):
        embed_dataset([model], ImageCrops(paths, None, eval_transform(32)), "projector", batch_size=8, workers=0)
