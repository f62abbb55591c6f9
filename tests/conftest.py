"""Shared fixtures. Torch is pinned to one thread: on 2 busy cores, 2 threads were
measured 6-10x slower than 1."""

from __future__ import annotations

import os

os.environ.setdefault("DEJAVU_NO_PROGRESS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DEJAVU_THREADS", "1")  # stages called from tests do not measure/raise threads

import pytest

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """A small synthetic dataset (10 classes x 60 images, 32 px, 40% annotated)."""
    from dejavu.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth_small")
    cfg = SynthConfig(classes=10, per_class=60, size=32, annotated_fraction=0.4, val_per_class=10, seed=0)
    generate(root, cfg, force=True)
    return root


@pytest.fixture(scope="session")
def partition_small(synth_small, tmp_path_factory):
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import partition

    out = tmp_path_factory.mktemp("partition_small")
    partition(DataPaths.resolve(data=synth_small), [5, 10], out, force=True)
    return out
