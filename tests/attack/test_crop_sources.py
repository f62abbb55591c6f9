"""The attack's crops from a store passed in (``attack(crop_datasets=...)``: what ``dejavu attack
--crops-betons`` passes, built by the CLI so the attack never names FFCV), and the setting and the
source refused apart."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dejavu import UsageError
from dejavu.attack.embed import ImageCrops
from dejavu.attack.run import AttackConfig, attack
from dejavu.data.imagefolder import DataPaths, scan_imagefolder

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint

ARRAYS = [f"{x}_attk_{y}_{k}.npy" for x in "AB" for y in "AB" for k in ("attk_idxs", "neighb_idxs", "neighb_labels")]


class StoredCrops:
    """Crops cut once and kept (a store of the attack's own crops), recording what was asked."""

    def __init__(self, index):
        self.index, self.asked = index, []

    def __call__(self, which, indices, boxes, transform):
        self.asked.append((which, len(indices)))
        ds = ImageCrops([self.index.path(i) for i in indices], [tuple(b) for b in boxes.tolist()], transform)
        return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def models(synth_small, tmp_path_factory):
    index = scan_imagefolder(synth_small / "train")
    d = tmp_path_factory.mktemp("ck")
    return index, make_checkpoint(d / "a.pth", index, "A", 10, seed=1), make_checkpoint(d / "b.pth", index, "B", 10, 2)


def test_crops_from_a_store_give_the_decoded_attack(models, synth_small, partition_small, tmp_path):
    index, a, b = models
    paths = DataPaths.resolve(data=synth_small)
    kw = dict(cache_dir="", control="none", index=index)
    attack(a, b, partition_small, paths, tmp_path / "fly", AttackConfig(npc=10, k=10, n_boot=0, device="cpu"), **kw)
    store = StoredCrops(index)
    cfg = AttackConfig(npc=10, k=10, n_boot=0, device="cpu", crops_betons="stored")
    attack(a, b, partition_small, paths, tmp_path / "stored", cfg, crop_datasets=store, **kw)
    assert [w for w, _ in store.asked] == ["A", "B"] and all(n > 0 for _, n in store.asked)
    for f in ARRAYS:
        assert np.array_equal(np.load(tmp_path / "fly" / f), np.load(tmp_path / "stored" / f)), f


def test_crops_betons_and_crop_datasets_go_together(models, synth_small, partition_small, tmp_path):
    index, a, b = models
    paths = DataPaths.resolve(data=synth_small)
    with pytest.raises(UsageError, match=r"crops_betons and attack\(crop_datasets=...\) go together"):
        attack(a, b, partition_small, paths, tmp_path / "x", AttackConfig(npc=10, crops_betons="bet", device="cpu"))
    with pytest.raises(UsageError, match="go together"):
        attack(a, b, partition_small, paths, tmp_path / "y", AttackConfig(npc=10), crop_datasets=StoredCrops(index))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
