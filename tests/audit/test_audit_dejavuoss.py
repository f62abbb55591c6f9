"""The follow-up work's crop classifier (facebookresearch/DejaVuOSS): its recipe as the preset
``--set classifier=dejavuoss``, its saved-crop input re-created here from its own code
(``crop_images.py``: SSL_Transform, InverseTransform, PIL JPEG), and a classifier trained by
its ``train_SSL_crops.py`` (a DDP-wrapped ``SSLNetwork``: ``module.net.*`` with ``net.fc`` as
the head) read as ``--reference-model``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

from dejavu.audit.classifier import SquareJpeg, build_classifier, train_transform
from dejavu.audit.config import AuditConfig, apply_classifier_preset, load_audit_config, preset_config
from dejavu.cli import main
from dejavu.ssl.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).parent))
from test_audit import FAST, _args, ckpt  # noqa: F401  (the module-scoped fixture)


def test_preset_fills_clf_settings_and_yields_to_set():
    cfg = load_audit_config(None, ["classifier=dejavuoss", "clf_epochs=2"])
    assert cfg.clf_epochs == 2 and cfg.clf_arch == "resnet50" and cfg.clf_head == "linear"
    assert (cfg.clf_input, cfg.clf_augment, cfg.clf_scale_min) == ("square", "ssl", 0.08)
    assert (cfg.clf_optimizer, cfg.clf_lr, cfg.clf_weight_decay, cfg.clf_batch_size) == ("lars", 0.8, 0.1, 1024)
    # over a packaged config's clf_* values too
    cfg = load_audit_config("imagenet", ["classifier=dejavuoss"])
    assert cfg.clf_augment == "ssl" and cfg.clf_holdout == 0.0 and cfg.clf_warmup_epochs == 10
    # in code: the keyword arguments win, even one equal to the dataclass default
    cfg = preset_config("dejavuoss", clf_arch="smallcnn", clf_epochs=60)
    assert (cfg.clf_arch, cfg.clf_epochs, cfg.clf_head, cfg.clf_lr) == ("smallcnn", 60, "linear", 0.8)
    assert apply_classifier_preset(AuditConfig(), set()) == AuditConfig()  # ours: unchanged
    model = build_classifier(AuditConfig(clf_head="linear"), 10)
    assert isinstance(model.classifier, nn.Sequential) and isinstance(model.classifier[0], nn.Linear)


def _their_saved_crop(patch: Image.Image, path: Path) -> np.ndarray:
    """crop_images.py: AuxDataset's SSL_Transform on the crop, then save_images()."""
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    x = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize])(
        patch
    )
    inv = transforms.Compose(
        [
            transforms.Normalize(mean=[0.0, 0.0, 0.0], std=[1 / 0.229, 1 / 0.224, 1 / 0.225]),
            transforms.Normalize(mean=[-0.485, -0.456, -0.406], std=[1.0, 1.0, 1.0]),
        ]
    )
    a = inv(x).squeeze().permute(1, 2, 0).numpy()
    Image.fromarray((a * 255).astype(np.uint8)).save(path, "JPEG")
    return np.asarray(Image.open(path).convert("RGB"))


def test_square_jpeg_is_their_saved_crop(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(300, 200), (90, 400), (224, 224)]):
        patch = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ours = np.asarray(SquareJpeg(224)(patch))
        assert ours.shape == (224, 224, 3)
        assert np.array_equal(ours, _their_saved_crop(patch, tmp_path / f"{i}.JPEG"))


def test_ssl_augment_is_their_first_view():
    tf = train_transform(32, "ssl", 0.08)
    names = [type(t).__name__ for t in tf.transforms]
    assert names == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "RandomApply",
        "RandomGrayscale",
        "ToTensor",
        "Normalize",
        "GaussianBlur",
    ]
    assert tf.transforms[0].scale == (0.08, 1.0) and tf.transforms[2].p == 0.8
    assert tf.transforms[6].kernel_size == (5, 9) and tf.transforms[6].sigma == (0.1, 2.0)
    assert tf(Image.new("RGB", (20, 12))).shape == (3, 32, 32)


class SSLNetwork(nn.Module):  # train_SSL_crops.py
    def __init__(self, num_classes):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=num_classes)
        self.num_features = self.net.fc.in_features

    def forward(self, x):
        return self.net(x)


class Ddp(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def _their_classifier(path: Path, num_classes: int = 10) -> SSLNetwork:
    torch.manual_seed(0)
    net = SSLNetwork(num_classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 1000, "model": Ddp(net).state_dict(), "optimizer": opt.state_dict()}, path)
    return net.eval()


def test_their_classifier_loads_with_its_fc_as_the_head(tmp_path):
    ref = _their_classifier(tmp_path / "model.pth")
    lm = load_model(tmp_path / "model.pth")
    assert lm.source == "original" and lm.config["clf_head"] == "linear" and lm.epoch == 1000
    assert any("net.fc" in n for n in lm.notes)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lm.model.embed(x, "logits"), ref(x), rtol=1e-5, atol=1e-5)


def test_audit_with_their_classifier_and_with_the_preset(ckpt, synth_small, partition_small, tmp_path):  # noqa: F811
    _their_classifier(tmp_path / "theirs.pth")
    out = tmp_path / "ref"
    ref = ["--reference-model", str(tmp_path / "theirs.pth"), "--set", "classifier=dejavuoss", "--control", "none"]
    assert main(_args(ckpt, synth_small, partition_small, out, *ref)) == 0
    res = json.loads((out / "results.json").read_text())
    assert not res["classifier"]["trained"] and res["config"]["classifier_input"] == "square"
    assert np.load(out / "classifier_logits.npy").shape[1] == 10
    # the preset trains its recipe here (a small backbone and 2 epochs for the test)
    out = tmp_path / "preset"
    extra = ["--set", "classifier=dejavuoss", "--set", "clf_arch=smallcnn", "--set", "clf_epochs=2"]
    extra += ["--set", "clf_batch_size=64", "--set", "clf_lr=0.1", "--control", "none"]
    assert main(_args(ckpt, synth_small, partition_small, out, *extra)) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["classifier"] == "dejavuoss" and res["config"]["clf_augment"] == "ssl"
    assert res["config"]["classifier_input"] == "square" and res["classifier"]["n_heldout"] == 0
    ck = torch.load(out / "classifier" / "classifier.pth", weights_only=True)
    assert "classifier.0.weight" in ck["model"] and "classifier.2.weight" not in ck["model"]


@pytest.mark.parametrize("bad", ["clf_head=mlp", "clf_input=rect", "classifier=theirs", "clf_augment=strong"])
def test_bad_values_named(bad):
    from dejavu import DejavuError

    with pytest.raises(DejavuError, match=bad.split("=")[0]):
        load_audit_config(None, [bad])


def test_a_preset_never_applied_is_refused():
    """AuditConfig(classifier="dejavuoss") by hand would train our recipe under their name."""
    from dejavu import UsageError
    from dejavu.audit.config import check_preset

    cfg = load_audit_config(None, ["classifier=dejavuoss", "clf_epochs=60"])
    assert cfg.clf_epochs == 60
    check_preset(cfg)
    check_preset(AuditConfig())
    with pytest.raises(UsageError, match=r"preset was not applied.*preset_config"):
        check_preset(AuditConfig(classifier="dejavuoss"))
