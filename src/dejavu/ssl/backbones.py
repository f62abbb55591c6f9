"""Backbones: torchvision ResNets (paper: resnet101) and small-image variants.

``build_backbone(name)`` returns ``(module, feature_dim)``; the module maps an
image batch to ``(N, feature_dim)`` features (global-average-pooled, no fc), with
parameter names equal to torchvision's (``conv1``, ``layer1``...) so the original
code's checkpoints load.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dejavu import DejavuError


def _tv_resnet(name: str, small: bool = False) -> tuple[nn.Module, int]:
    import torchvision

    fn = getattr(torchvision.models, name)
    m = fn(weights=None)  # zero_init_residual=False: torchvision's default, as the original
    dim = m.fc.in_features
    m.fc = nn.Identity()
    if small:  # CIFAR-style stem for 32-64 px images
        m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    return m, dim


def zero_init_residuals(backbone: nn.Module) -> int:
    """Zero the last BatchNorm weight of every ResNet residual block (torchvision's
    ``zero_init_residual=True``, which draws no random numbers); returns how many."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    n = 0
    for m in backbone.modules():
        bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
        if bn is not None and bn.weight is not None:
            nn.init.zeros_(bn.weight)
            n += 1
    return n


class SmallCNN(nn.Module):
    """4 x (3x3 conv stride 2, BN, ReLU), widths 32-64-128-256, global average pool (~0.39M params).

    The CPU default for the 32 px synthetic dataset.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.out_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def _small_cnn(widths: tuple[int, ...] = (32, 64, 128, 256)) -> tuple[nn.Module, int]:
    m = SmallCNN(widths)
    return m, m.out_dim


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "resnet18": lambda: _tv_resnet("resnet18"),
    "resnet50": lambda: _tv_resnet("resnet50"),
    "resnet101": lambda: _tv_resnet("resnet101"),
    "resnet18_small": lambda: _tv_resnet("resnet18", small=True),
    "resnet50_small": lambda: _tv_resnet("resnet50", small=True),
    "smallcnn": lambda: _small_cnn(),
    "smallcnn_wide": lambda: _small_cnn((64, 128, 256, 512)),
}


def build_backbone(name: str) -> tuple[nn.Module, int]:
    if name not in BACKBONES:
        raise DejavuError(f"unknown arch {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]()
