import pickle

import pytest
import torch

from dejavu import DejavuError
from dejavu.io import atomic_torch_save
from dejavu.ssl.checkpoint import load_model
from dejavu.ssl.model import ModelSpec, SSLModel


def test_roundtrip_ours(tmp_path):
    torch.manual_seed(0)
    m = SSLModel(ModelSpec("smallcnn", "64-32"))
    atomic_torch_save(
        tmp_path / "m.pth",
        {
            "format": "dejavu-ckpt/1",
            "model": m.state_dict(),
            "epoch": 3,
            "config": {"arch": "smallcnn", "projector": "64-32"},
        },
    )
    lm = load_model(tmp_path / "m.pth")
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    assert lm.source == "dejavu" and lm.epoch == 3
    torch.testing.assert_close(lm.model.embed(x), m.embed(x))


def test_own_state_dict_without_tag(tmp_path):
    """A bare SSLModel state dict (no format tag) still loads, with --arch when not a ResNet."""
    m = SSLModel(ModelSpec("smallcnn", "64-32")).eval()
    torch.save(m.state_dict(), tmp_path / "bare.pth")
    lm = load_model(tmp_path / "bare.pth")
    assert lm.source == "backbone-projector" and lm.config["arch"] == "smallcnn"
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(lm.model.embed(x, "both"), m.embed(x, "both"))


def test_torchvision_state_dict(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    lm = load_model(tmp_path / "tv.pth", arch="resnet18")
    assert lm.source == "torchvision" and lm.model.spec.projector == "none"
    assert not lm.has_projector and any("backbone embedding" in n for n in lm.notes)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(DejavuError, match="refused to load"):
        load_model(tmp_path / "evil.pth")


def test_wrong_arch(tmp_path):
    m = SSLModel(ModelSpec("smallcnn", "64-32"))
    torch.save(
        {"model": m.state_dict(), "config": {"arch": "smallcnn", "projector": "64-32"}},
        tmp_path / "m.pth",
    )
    with pytest.raises(DejavuError, match="do not fit"):
        load_model(tmp_path / "m.pth", projector="64-16")
