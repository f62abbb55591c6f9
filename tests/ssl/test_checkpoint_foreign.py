"""Weights from other codebases load, with embeddings equal to the original modules'.

Each layout is re-created here from its public module definition (ResNet-18 in place of
ResNet-50: the key layout is the same) and saved as that codebase saves it; nothing is
downloaded. VICReg: facebookresearch/vicreg main_vicreg.py + resnet.py; Barlow Twins:
facebookresearch/barlowtwins main.py + hubconf.py; DINO: facebookresearch/dino main_dino.py,
utils.MultiCropWrapper, vision_transformer.DINOHead; BYOL: lucidrains/byol-pytorch; solo-learn:
BaseMethod + its VICReg/BYOL/SimCLR heads in a Lightning checkpoint; lightly: its own modules.
"""

import argparse

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from dejavu import DejavuError
from dejavu.ssl.checkpoint import LAYOUTS, load_model

X = torch.randn(3, 3, 64, 64)


def _trained(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine weights, eval mode."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


class Ddp(nn.Module):  # DistributedDataParallel's state-dict keys: module.*
    def __init__(self, module):
        super().__init__()
        self.module = module


def _check(lm, backbone, projector=None) -> None:
    with torch.no_grad():
        assert torch.equal(lm.model.embed(X, "backbone"), backbone(X).flatten(1))
        if projector is None:
            assert not lm.has_projector
            assert torch.equal(lm.model.embed(X, "projector"), lm.model.embed(X, "backbone"))
            assert any("backbone embedding" in n for n in lm.notes)
        else:
            assert lm.has_projector
            assert torch.equal(lm.model.embed(X, "projector"), projector(backbone(X).flatten(1)))


# --- torchvision (also: lucidrains' `torch.save(resnet.state_dict())`, BYOL ports) ---------


def test_torchvision_resnet(tmp_path):
    tv = _trained(torchvision.models.resnet18())
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    lm = load_model(tmp_path / "tv.pth")
    assert lm.source == "torchvision" and lm.config["arch"] == "resnet18"
    assert any(n.startswith("ignored fc.*") for n in lm.notes)
    tv.fc = nn.Identity()
    _check(lm, tv)


# --- VICReg --------------------------------------------------------------------------------


class VicregResNet(torchvision.models.ResNet):
    """vicreg/resnet.py: torchvision's names, no fc, a ConstantPad2d(1) before conv1 (padding 2)."""

    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2], zero_init_residual=True)
        del self.fc
        self.padding = nn.ConstantPad2d(1, 0.0)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=2, bias=False)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.padding(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def vicreg_projector(embedding: int, mlp: str) -> nn.Sequential:  # main_vicreg.Projector
    f = list(map(int, f"{embedding}-{mlp}".split("-")))
    layers = []
    for i in range(len(f) - 2):
        layers += [nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


class VICReg(nn.Module):
    def __init__(self, mlp="64-64-32"):
        super().__init__()
        self.backbone, self.embedding = VicregResNet(), 512
        self.projector = vicreg_projector(self.embedding, mlp)


def test_vicreg_release_and_full_checkpoint(tmp_path):
    model = _trained(VICReg())
    torch.save(model.backbone.state_dict(), tmp_path / "resnet50.pth")  # the released backbone
    lm = load_model(tmp_path / "resnet50.pth")
    assert lm.source == "torchvision"
    _check(lm, model.backbone)
    opt = torch.optim.LARS if hasattr(torch.optim, "LARS") else torch.optim.SGD
    torch.save(
        {
            "epoch": 100,
            "model": Ddp(model).state_dict(),
            "optimizer": opt(model.parameters(), lr=0.1).state_dict(),
        },
        tmp_path / "model.pth",
    )
    lm = load_model(tmp_path / "model.pth")
    assert lm.source == "backbone-projector" and lm.epoch == 100 and lm.config["projector"] == "64-64-32"
    assert "projector_layout" not in lm.config  # exactly our own projector layout
    _check(lm, model.backbone, model.projector)


# --- Barlow Twins --------------------------------------------------------------------------


class BarlowTwins(nn.Module):
    def __init__(self, projector="64-64-32"):
        super().__init__()
        self.backbone = torchvision.models.resnet18(zero_init_residual=True)
        self.backbone.fc = nn.Identity()
        sizes = [512] + list(map(int, projector.split("-")))
        layers = []
        for i in range(len(sizes) - 2):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=False))
            layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)


def test_barlow_twins_hub_and_checkpoint(tmp_path):
    model = _trained(BarlowTwins())
    torch.save(model.backbone.state_dict(), tmp_path / "resnet50.pth")
    _check(load_model(tmp_path / "resnet50.pth"), model.backbone)
    torch.save({"epoch": 3, "model": Ddp(model).state_dict()}, tmp_path / "checkpoint.pth")
    lm = load_model(tmp_path / "checkpoint.pth")
    assert lm.config["projector_layout"].startswith("Linear(512,64,nobias)-BN-ReLU")
    assert any(n.startswith("ignored bn.*") for n in lm.notes)
    _check(lm, model.backbone, model.projector)


# --- DINO ----------------------------------------------------------------------------------


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, use_bn=False, nlayers=3, hidden_dim=64, bottleneck_dim=16):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.GELU())
        for _ in range(nlayers - 2):
            layers.append(nn.Linear(hidden_dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone = backbone
        self.head = head


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_dino_release_and_full_checkpoint(tmp_path):
    student = MultiCropWrapper(torchvision.models.resnet18(), DINOHead(512, 100))
    teacher = _trained(MultiCropWrapper(torchvision.models.resnet18(), DINOHead(512, 100)))
    torch.save(teacher.backbone.state_dict(), tmp_path / "dino_resnet50_pretrain.pth")
    _check(load_model(tmp_path / "dino_resnet50_pretrain.pth"), teacher.backbone)
    args = argparse.Namespace(arch="resnet50", out_dim=100, lr=0.03)
    torch.save(
        {
            "student": Ddp(student).state_dict(),
            "teacher": Ddp(teacher).state_dict(),
            "epoch": 800,
            "args": args,
            "dino_loss": {"center": torch.zeros(1, 100)},
        },
        tmp_path / "full_checkpoint.pth",
    )
    lm = load_model(tmp_path / "full_checkpoint.pth")
    assert lm.epoch == 800 and any("teacher" in n for n in lm.notes)
    assert any(n.startswith("ignored head.*") for n in lm.notes)
    _check(lm, teacher.backbone)


# --- BYOL: lucidrains/byol-pytorch learner -------------------------------------------------


def byol_mlp(dim, projection_size, hidden_size=64):
    return nn.Sequential(
        nn.Linear(dim, hidden_size),
        nn.BatchNorm1d(hidden_size),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_size, projection_size),
    )


class NetWrapper(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.projector = byol_mlp(512, 16)


class BYOL(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.online_encoder = NetWrapper(net)
        self.online_predictor = byol_mlp(16, 16)
        self.target_encoder = NetWrapper(torchvision.models.resnet18())


def test_byol_pytorch_learner(tmp_path):
    resnet = torchvision.models.resnet18()
    learner = _trained(BYOL(resnet))
    torch.save(learner.state_dict(), tmp_path / "learner.pt")
    lm = load_model(tmp_path / "learner.pt")
    assert lm.source == "byol-pytorch"
    resnet.fc = nn.Identity()  # the representation is hooked at avgpool (layer=-2)
    _check(lm, resnet, learner.online_encoder.projector)


# --- solo-learn (Lightning checkpoint) ------------------------------------------------------


def _solo(method: str) -> nn.Module:
    m = nn.Module()
    m.backbone = torchvision.models.resnet18()
    m.backbone.fc = nn.Identity()
    m.classifier = nn.Linear(512, 10)
    if method == "vicreg":
        m.projector = nn.Sequential(
            nn.Linear(512, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Linear(64, 32),
        )
    elif method == "simclr":
        m.projector = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 32))
    else:  # byol, a BaseMomentumMethod
        m.projector = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
        m.predictor = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
        m.momentum_backbone = torchvision.models.resnet18()
        m.momentum_backbone.fc = nn.Identity()
        m.momentum_projector = nn.Sequential(nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 32))
    return _trained(m)


@pytest.mark.parametrize("method", ["vicreg", "simclr", "byol"])
def test_solo_learn_lightning_checkpoint(tmp_path, method):
    m = _solo(method)
    torch.save(
        {
            "epoch": 399,
            "global_step": 1000,
            "pytorch-lightning_version": "2.1.0",
            "state_dict": m.state_dict(),
            "hyper_parameters": {"method": method},
        },
        tmp_path / "solo.ckpt",
    )
    lm = load_model(tmp_path / "solo.ckpt")
    assert lm.source == "backbone-projector" and lm.epoch == 399
    assert any(n.startswith("ignored classifier.*") for n in lm.notes)
    _check(lm, m.backbone, m.projector)


# --- lightly (its own modules) --------------------------------------------------------------


def test_lightly_model(tmp_path):
    from lightly.models.modules.heads import (
        BYOLPredictionHead,
        BYOLProjectionHead,
        VICRegProjectionHead,
    )

    resnet = torchvision.models.resnet18()
    model = nn.Module()
    model.backbone = nn.Sequential(*list(resnet.children())[:-1])
    model.projection_head = BYOLProjectionHead(512, 64, 32)
    model.prediction_head = BYOLPredictionHead(32, 64, 32)
    model.backbone_momentum = nn.Sequential(*list(torchvision.models.resnet18().children())[:-1])
    model.projection_head_momentum = BYOLProjectionHead(512, 64, 32)
    _trained(model)
    torch.save({"state_dict": model.state_dict(), "epoch": 9}, tmp_path / "lightly.ckpt")
    lm = load_model(tmp_path / "lightly.ckpt")
    assert lm.source == "lightly"
    _check(lm, model.backbone, model.projection_head)
    vic = nn.Module()
    vic.backbone = nn.Sequential(*list(torchvision.models.resnet18().children())[:-1])
    vic.projection_head = VICRegProjectionHead(512, 64, 32, num_layers=3)
    _trained(vic)
    torch.save(vic.state_dict(), tmp_path / "vic.pth")
    _check(load_model(tmp_path / "vic.pth"), vic.backbone, vic.projection_head)


# --- refusals -------------------------------------------------------------------------------


def test_unrecognised_layout_one_line(tmp_path):
    torch.save(
        {"encoder.stem.weight": torch.zeros(3), "encoder.blocks.0.w": torch.zeros(2)},
        tmp_path / "x.pth",
    )
    with pytest.raises(DejavuError) as e:
        load_model(tmp_path / "x.pth")
    msg = str(e.value)
    assert "\n" not in msg and "encoder.stem.weight" in msg
    assert all(name in msg for name in LAYOUTS)


def test_unknown_keys_in_a_known_layout(tmp_path):
    m = _solo("vicreg")
    sd = m.state_dict()
    sd["decoder.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": sd}, tmp_path / "x.ckpt")
    with pytest.raises(DejavuError, match=r"backbone-projector layout but has unknown keys \['decoder.weight'\]"):
        load_model(tmp_path / "x.ckpt")


def test_other_arch_or_projector_size(tmp_path):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(
        DejavuError,
        match=r"do not fit arch=resnet50 .*differing shapes: "
        r"backbone\.layer1\.0\.conv1\.weight \(64, 64, 3, 3\) in the file",
    ):
        load_model(tmp_path / "tv.pth", arch="resnet50")
    m = VICReg()
    torch.save({"model": Ddp(m).state_dict()}, tmp_path / "v.pth")
    with pytest.raises(DejavuError, match=r"projector=8192-8192-8192 \(the checkpoint's projector is 64-64-32"):
        load_model(tmp_path / "v.pth", projector="8192-8192-8192")


# --- BYOL: sthalles/PyTorch-BYOL ------------------------------------------------------------


class MLPHead(nn.Module):
    def __init__(self, in_channels, mlp_hidden_size, projection_size):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, mlp_hidden_size),
            nn.BatchNorm1d(mlp_hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(mlp_hidden_size, projection_size),
        )


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet18()
        self.encoder = nn.Sequential(*list(resnet.children())[:-1])
        self.projetion = MLPHead(resnet.fc.in_features, 64, 16)


def test_sthalles_pytorch_byol(tmp_path):
    online, target, predictor = _trained(ResNet18()), ResNet18(), MLPHead(16, 64, 16)
    torch.save(
        {
            "online_network_state_dict": online.state_dict(),
            "target_network_state_dict": target.state_dict(),
            "predictor_network_state_dict": predictor.state_dict(),
            "optimizer_state_dict": torch.optim.SGD(online.parameters(), lr=0.1).state_dict(),
        },
        tmp_path / "model.pth",
    )
    lm = load_model(tmp_path / "model.pth")
    assert lm.source == "pytorch-byol"
    _check(lm, online.encoder, online.projetion.net)
