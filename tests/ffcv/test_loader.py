"""Training through FFCV: the batches of the torchvision paths, views of the same kind,
and a training epoch (needs ffcv; each Loader compiles for ~10-30 s, hence slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

# ffcv.libffcv, not ffcv: with no ffcv installed, "ffcv" finds this tests/ffcv folder (a namespace package)
pytest.importorskip(
    "ffcv.libffcv", reason="the ffcv extra is not installed (system packages + pip install -e '.[ffcv]')"
)

from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.ffcv.betons import write_betons
from dejavu.ffcv.loader import FFCVImages
from dejavu.partition import Partition
from dejavu.ssl.augment import build_views
from dejavu.ssl.data import MemoryImages, epoch_permutation

# numba's finalizers of ffcv's generated functions raise a harmless KeyError at garbage collection
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def train_beton(synth_small, partition_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("betons")
    write_betons(DataPaths.resolve(data=synth_small), partition_small, [5], out, kinds=["train"])
    return out / "5_per_class_A.beton"


def test_batches_and_views_match_the_torchvision_path(train_beton, synth_small, partition_small):
    index = scan_imagefolder(synth_small / "train")
    idx = Partition.load(partition_small).load_set(5, "train_A")
    ffcv_src, mem = FFCVImages(train_beton, index, idx, num_workers=1), MemoryImages(index, idx, 32)
    views = build_views("paper", 32, 2)
    order = epoch_permutation(len(idx), seed=3, epoch=1)
    batch, steps, world = 20, 2, 2
    for rank in range(world):  # each DDP rank gets its slice of every global batch, as on the other paths
        got = list(ffcv_src.epoch(order, batch, steps, rank, world, views))
        want = list(mem.epoch(order, batch, steps, rank, world, views))
        assert len(got) == len(want) == steps
        for (gv, gl), (wv, wl) in zip(got, want):
            assert torch.equal(gl, wl)
            assert len(gv) == 2 and all(v.shape == w.shape == (10, 3, 32, 32) for v, w in zip(gv, wv))
            assert all(v.dtype == torch.float32 for v in gv)
            assert not torch.equal(gv[0], gv[1])  # two independent views
    # normalised like the torchvision views: comparable per-channel statistics over an epoch
    order = epoch_permutation(len(idx), seed=0, epoch=0)
    g = torch.cat([v for vs, _ in ffcv_src.epoch(order, 50, 1, 0, 1, views) for v in vs])
    w = torch.cat([v for vs, _ in mem.epoch(order, 50, 1, 0, 1, views) for v in vs])
    assert (g.mean((0, 2, 3)) - w.mean((0, 2, 3))).abs().max() < 0.35
    assert ((g.std((0, 2, 3)) / w.std((0, 2, 3))) - 1).abs().max() < 0.35


def test_deterministic_view_matches_torchvision(train_beton, synth_small, partition_small):
    """Preset "none" (resize + centre crop, no randomness): FFCV's decode-crop-resize equals
    torchvision's transform up to JPEG re-encoding and interpolation."""
    index = scan_imagefolder(synth_small / "train")
    idx = Partition.load(partition_small).load_set(5, "train_A")
    views = build_views("none", 32, 1)
    order = epoch_permutation(len(idx), 0, 0)
    (g,), _ = next(FFCVImages(train_beton, index, idx).epoch(order, 50, 1, 0, 1, views))
    (w,), _ = next(MemoryImages(index, idx, 32).epoch(order, 50, 1, 0, 1, views))
    err = (g - w).abs().mean().item()
    assert err < 0.3, err  # in normalised units (std ~1); a wrong crop or flip is > 0.5


def test_training_epoch_through_ffcv(train_beton, synth_small, partition_small, tmp_path):
    from dejavu.cli import main

    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            str(synth_small),
            "--index",
            str(partition_small / "5_per_class/train_A.npy"),
            "--out",
            str(run),
            "--loader",
            "ffcv",
            "--train-beton",
            str(train_beton),
            "--set",
            "epochs=1",
            "--set",
            "warmup_epochs=0",
            "--set",
            "batch_size=25",
            "--set",
            "knn_every=0",
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["loss"]) and rows[0]["step"] == 2
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train_beton"] == str(train_beton)
    assert (run / "model_ep1.pth").is_file() and (run / "last.pth").is_file()


def test_batched_device_views_through_ffcv(train_beton, synth_small, partition_small):
    """``augment_backend: device``: FFCV only crops, ``BatchViews.finish`` does the rest."""
    from dejavu.ssl.batch_augment import BatchViews

    index = scan_imagefolder(synth_small / "train")
    idx = Partition.load(partition_small).load_set(5, "train_A")
    views = BatchViews(build_views("paper", 32, 2), "cpu")
    order = epoch_permutation(len(idx), seed=1, epoch=0)
    got = list(FFCVImages(train_beton, index, idx).epoch(order, 25, 2, 0, 1, views))
    want = list(MemoryImages(index, idx, 32).epoch(order, 25, 2, 0, 1, views))
    for (gv, gl), (wv, wl) in zip(got, want):
        assert torch.equal(gl, wl) and len(gv) == 2
        assert all(v.shape == (25, 3, 32, 32) and v.dtype == torch.float32 for v in gv)
        g, w = torch.cat(gv), torch.cat(wv)
        assert (g.mean() - w.mean()).abs() < 0.35 and abs(g.std() / w.std() - 1) < 0.35
