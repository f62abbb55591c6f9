"""RCDM sees what the SSL model sees: its training images and its conditioning inputs are
the evaluation view (short side resized to 256/224 of the size, centre crop), as the
original's RCDM_utils.Transform."""

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from dejavu.data.transforms import eval_transform
from dejavu.rcdm.train import _InputAndTarget, rcdm_resize


def _image(w=60, h=45, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_training_views_are_the_evaluation_view():
    img = _image()
    views = _InputAndTarget(32, 16)
    ssl, target = views(img)
    torch.testing.assert_close(ssl, eval_transform(32)(img))
    # the original: Resize(int(256 * S / 224)) then CenterCrop(S), ToTensor
    orig = T.Compose([T.Resize(int(256 * 16 / 224)), T.CenterCrop(16), T.PILToTensor()])(img)
    assert target.dtype == torch.uint8 and target.shape == (3, 16, 16)
    assert torch.equal(target, orig)
    # not the full picture resized to S (what the RCDM saw before)
    full = T.Compose([T.Resize(16), T.CenterCrop(16), T.PILToTensor()])(img)
    assert not torch.equal(target, full)
    assert (rcdm_resize(128), rcdm_resize(256), rcdm_resize(224)) == (146, 292, 256)


def test_rcdm_trains_on_the_evaluation_view(synth_small, partition_small, tmp_path, monkeypatch):
    from rcdm_helpers import tiny_config, train_ssl_pair

    import dejavu.rcdm.train as R
    from dejavu.data.dataset import load_rgb
    from dejavu.data.imagefolder import DataPaths, scan_imagefolder

    models = train_ssl_pair(tmp_path / "run", synth_small, partition_small, npc=5)
    seen = {}
    orig_get = R._TrainImages.__getitem__

    def spy(self, pos):
        img, p = orig_get(self, pos)
        seen[int(self.indices[p])] = img
        return img, p

    monkeypatch.setattr(R._TrainImages, "__getitem__", spy)
    paths = DataPaths.resolve(data=synth_small)
    res = R.train_rcdm(tiny_config(steps=2, image_size=32), models["A"], partition_small, paths, tmp_path / "rc")
    assert res.step == 2 and seen
    index = scan_imagefolder(paths.images)
    view = T.Compose([T.Resize(int(256 * 32 / 224)), T.CenterCrop(32), T.PILToTensor()])
    for g, img in list(seen.items())[:8]:
        assert torch.equal(img, view(load_rgb(index.path(g)))), g
    cfg = R.read_json(tmp_path / "rc" / "config.json")
    assert cfg["data"]["rcdm_view"] == "resize36-bilinear-center32"
