"""Backbones: torchvision ResNets (paper: resnet101), small-image variants and ViTs.

``build_backbone(name)`` returns ``(module, feature_dim)``; the module maps an
image batch to ``(N, feature_dim)`` features (global-average-pooled, no fc), with
parameter names equal to torchvision's (``conv1``, ``layer1``...) so the original
code's checkpoints load.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

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
    """``(module, feature width)`` of a :data:`BACKBONES` name or a ViT name (:func:`parse_vit`)."""
    if name in BACKBONES:
        return BACKBONES[name]()
    vit = parse_vit(name)
    if vit is not None:
        return build_vit(vit)
    raise DejavuError(
        f"unknown arch {name!r}; choose from {', '.join(BACKBONES)} or a ViT such as vit_small_patch16_224 "
        "(vit_{tiny,small,base,large,huge}_patch{P}_{S}, options _reg{R} _ls _gap)"
    )


# ---------------------------------------------------------------- Vision Transformers
#
# One ViT whose parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
# ``blocks.{i}.norm1/attn.qkv/attn.proj/ls1.gamma/norm2/mlp.fc1/mlp.fc2/ls2.gamma``, ``norm``,
# ``fc_norm``) and DINOv2's ``register_tokens``: the names DINO, DINOv2, iBOT, MAE, MoCo v3 and
# timm all write, so their weights load as they are (:mod:`dejavu.ssl.checkpoint` converts
# torchvision's). Semantics are DINOv2's: ``pos_embed`` covers the [CLS] token and the patches;
# register tokens are inserted after the [CLS] token once the positions are added.

VIT_SIZES = {  # name -> (width, depth, heads): the ViT paper's and DeiT's
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}

_VIT_RE = re.compile(
    r"vit_(?:(?P<size>tiny|small|base|large|huge)|d(?P<dim>\d+)_l(?P<depth>\d+)_h(?P<heads>\d+))"
    r"_patch(?P<patch>\d+)(?:_(?P<img>\d+))?(?P<opts>(?:_reg\d+|_ls|_gap|_mlp\d+|_noqkvbias)*)"
)


@dataclass(frozen=True)
class ViTSpec:
    """A ViT's shape; :meth:`name` and :func:`parse_vit` round-trip it as an ``arch`` name,
    e.g. ``vit_small_patch16_224`` or ``vit_d48_l2_h4_patch16_32_reg4_ls``."""

    dim: int
    depth: int
    heads: int
    patch: int
    image_size: int = 224
    mlp: int = 0  # hidden width of the MLP; 0: 4 * dim
    reg: int = 0  # DINOv2 register tokens
    layer_scale: bool = False  # DINOv2's ls1/ls2 gammas
    pool: str = "token"  # token: [CLS] after the final norm; avg: mean of patch tokens, then fc_norm
    qkv_bias: bool = True

    @property
    def hidden(self) -> int:
        return self.mlp or 4 * self.dim

    def name(self) -> str:
        size = next((n for n, v in VIT_SIZES.items() if v == (self.dim, self.depth, self.heads)), None)
        out = f"vit_{size or f'd{self.dim}_l{self.depth}_h{self.heads}'}_patch{self.patch}_{self.image_size}"
        out += f"_reg{self.reg}" if self.reg else ""
        out += "_ls" if self.layer_scale else ""
        out += "_gap" if self.pool == "avg" else ""
        out += f"_mlp{self.mlp}" if self.mlp and self.mlp != 4 * self.dim else ""
        return out + ("" if self.qkv_bias else "_noqkvbias")


def parse_vit(name: str) -> ViTSpec | None:
    """The :class:`ViTSpec` of an arch name (None: not a ViT name)."""
    m = _VIT_RE.fullmatch(name)
    if not m:
        return None
    if m["size"]:
        dim, depth, heads = VIT_SIZES[m["size"]]
    else:
        dim, depth, heads = int(m["dim"]), int(m["depth"]), int(m["heads"])
    opts = m["opts"] or ""
    reg = re.search(r"_reg(\d+)", opts)
    mlp = re.search(r"_mlp(\d+)", opts)
    spec = ViTSpec(
        dim,
        depth,
        heads,
        int(m["patch"]),
        int(m["img"] or 224),
        mlp=int(mlp[1]) if mlp else 0,
        reg=int(reg[1]) if reg else 0,
        layer_scale="_ls" in opts,
        pool="avg" if "_gap" in opts else "token",
        qkv_bias="_noqkvbias" not in opts,
    )
    if dim % heads or spec.image_size % spec.patch:
        raise DejavuError(
            f"arch {name!r}: width {dim} must be a multiple of the heads ({heads}) and the image size "
            f"{spec.image_size} a multiple of the patch size {spec.patch}"
        )
    return spec


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, s: ViTSpec):
        super().__init__()
        self.norm1 = nn.LayerNorm(s.dim, eps=1e-6)
        self.attn = _Attention(s.dim, s.heads, s.qkv_bias)
        self.ls1 = _LayerScale(s.dim) if s.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(s.dim, eps=1e-6)
        self.mlp = _Mlp(s.dim, s.hidden)
        self.ls2 = _LayerScale(s.dim) if s.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, s: ViTSpec):
        super().__init__()
        self.proj = nn.Conv2d(3, s.dim, s.patch, s.patch)


class ViT(nn.Module):
    """A Vision Transformer mapping ``(N, 3, S, S)`` images (S = ``spec.image_size``) to the
    ``(N, dim)`` [CLS] token after the final LayerNorm (``pool="avg"``: the mean patch token
    after ``fc_norm``, MAE's and timm's global pooling)."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        grid = spec.image_size // spec.patch
        self.patch_embed = _PatchEmbed(spec)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, spec.dim))
        if spec.reg:
            self.register_tokens = nn.Parameter(torch.zeros(1, spec.reg, spec.dim))
        self.blocks = nn.ModuleList(_Block(spec) for _ in range(spec.depth))
        if spec.pool == "avg":
            self.fc_norm = nn.LayerNorm(spec.dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(spec.dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        if x.shape[-1] != s.image_size or x.shape[-2] != s.image_size:
            raise DejavuError(f"{s.name()} takes {s.image_size} px images, got {tuple(x.shape[-2:])}")
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        if s.reg:
            x = torch.cat([x[:, :1], self.register_tokens.expand(len(x), -1, -1), x[:, 1:]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        if s.pool == "avg":
            return self.fc_norm(x[:, 1 + s.reg :].mean(dim=1))
        return self.norm(x)[:, 0]


def build_vit(spec: ViTSpec) -> tuple[nn.Module, int]:
    return ViT(spec), spec.dim


def arch_has_size(name: str) -> bool:
    """Does a ViT arch name state its image size (``vit_small_patch16_224``, not ``vit_small_patch16``)?"""
    m = _VIT_RE.fullmatch(name)
    return bool(m and m["img"])
