"""ViT releases load, with embeddings equal element for element to the releases' own modules.

The foreign modules are re-created here, independently of ``dejavu.ssl.backbones.ViT``, from
their public definitions: facebookresearch/dino ``vision_transformer.py`` (DINO, and iBOT's
copy of it), facebookresearch/dinov2 ``models/vision_transformer.py`` (layer scale, register
tokens, its position-embedding interpolation), facebookresearch/mae ``models_mae.py``
(decoder), facebookresearch/moco-v3 ``vits.py`` + ``moco/builder.py`` (sin-cos positions,
the 3-layer head), timm's ``VisionTransformer`` and torchvision's, at tiny widths (48-64,
depth 2), saved as each release saves them; nothing is downloaded. Comparisons run in
float64 so that a tolerance of 1e-9 only absorbs rounding.
"""

import argparse
import math

import pytest
import torch
from torch import nn

from dejavu import DejavuError
from dejavu.ssl.checkpoint import load_model

D, DEPTH, HEADS = 48, 2, 4
ARCH = f"vit_d{D}_l{DEPTH}_h{HEADS}_patch16"


class Attention(nn.Module):  # DINO's: explicit softmax((q k^T) * scale)
    def __init__(self, dim, heads, qkv_bias=True):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3, bias=qkv_bias), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):  # DINOv2's layers/layer_scale.py
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim, heads, ls=False):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim)
        self.ls1 = LayerScale(dim) if ls else nn.Identity()
        self.ls2 = LayerScale(dim) if ls else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.patch_size, self.proj = patch, nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """DINO's VisionTransformer (``prepare_tokens`` with its interpolate_pos_encoding), and
    DINOv2's options: ``ls`` (layer scale), ``reg`` register tokens, ``dinov2_interp``
    (offset 0.1 / antialiased size), iBOT's ``use_mean_pooling`` (``pool="avg"``)."""

    def __init__(self, dim=D, depth=DEPTH, heads=HEADS, patch=16, img=32, ls=False, reg=0, interp="dino", pool="cls"):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim))
        self.reg, self.interp, self.pool = reg, interp, pool
        if reg:
            self.register_tokens = nn.Parameter(torch.randn(1, reg, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, ls) for _ in range(depth))
        if pool == "avg":
            self.norm, self.fc_norm = nn.Identity(), nn.LayerNorm(dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        for p in self.parameters():  # non-trivial norms and biases
            if p.dim() == 1:
                nn.init.uniform_(p, 0.5, 1.5)

    def interpolate_pos_encoding(self, x, w, h):
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and w == h:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, 0], self.pos_embed[:, 1:]
        dim, m = x.shape[-1], int(math.sqrt(n))
        w0, h0 = w // self.patch_embed.patch_size, h // self.patch_embed.patch_size
        grid = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if self.interp == "dino":  # DINO / iBOT
            out = nn.functional.interpolate(
                grid, scale_factor=((w0 + 0.1) / math.sqrt(n), (h0 + 0.1) / math.sqrt(n)), mode="bicubic"
            )
        else:  # DINOv2 with registers: interpolate_offset=0, interpolate_antialias=True
            out = nn.functional.interpolate(grid, size=(w0, h0), mode="bicubic", antialias=True)
        out = out.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((cls_pos.unsqueeze(0), out), dim=1)

    def forward(self, x):
        _, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.reg:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        for blk in self.blocks:
            x = blk(x)
        if self.pool == "avg":
            return self.fc_norm(x[:, 1 + self.reg :].mean(1))
        return self.norm(x)[:, 0]


def _same(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, kind: str = "backbone", tol: float = 1e-9) -> None:
    """Equal element for element; ``tol=1e-6`` where the position embedding was resampled at
    load time (in the file's float32, where the release resamples at run time in float64 here)."""
    ours, theirs = ours.double().eval(), theirs.double().eval()
    with torch.no_grad():
        a, b = ours.embed(x.double(), kind), theirs(x.double())
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _x(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))


def _dino_head() -> dict[str, torch.Tensor]:  # DINOHead: mlp + weight-normed last layer
    return {
        "head.mlp.0.weight": torch.randn(32, D),
        "head.mlp.0.bias": torch.zeros(32),
        "head.last_layer.weight_g": torch.ones(100, 1),
        "head.last_layer.weight_v": torch.randn(100, 16),
    }


def test_dino_full_checkpoint_teacher_said(tmp_path):
    torch.manual_seed(0)
    teacher, student = DinoViT(), DinoViT()
    ckpt = {
        "student": {**{f"module.backbone.{k}": v for k, v in student.state_dict().items()}},
        "teacher": {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()}, **_dino_head()},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    lm = load_model(tmp_path / "checkpoint.pth", arch=ARCH)
    assert lm.loaded["weights"] == "teacher" and lm.loaded["release"] == "DINO"
    assert lm.config["arch"] == f"{ARCH}_32" and lm.config["image_size"] == 32
    assert "[CLS]" in lm.describe() and "teacher weights" in lm.describe() and "image size 32" in lm.describe()
    assert any(n.startswith("ignored head.*") for n in lm.notes)
    _same(lm.model, teacher, _x(32))
    _same(lm.model, teacher, _x(32), kind="projector")  # no projector: the [CLS] token


@pytest.mark.parametrize("size", [32, 64, 48])
def test_dino_backbone_release_any_multiple_of_the_patch(tmp_path, size):
    """A bare backbone (dino_vits16_pretrain.pth); other sizes interpolate as DINO does."""
    torch.manual_seed(1)
    ref = DinoViT()
    torch.save(ref.state_dict(), tmp_path / "dino_vits16_pretrain.pth")
    lm = load_model(tmp_path / "dino_vits16_pretrain.pth", arch=ARCH, image_size=size)
    assert lm.config["image_size"] == size
    _same(lm.model, ref, _x(size), tol=1e-9 if size == 32 else 1e-6)


def test_dino_image_size_not_a_multiple_of_the_patch(tmp_path):
    torch.save(DinoViT().state_dict(), tmp_path / "v.pth")
    with pytest.raises(DejavuError, match="not a multiple of the ViT's patch size 16"):
        load_model(tmp_path / "v.pth", arch=ARCH, image_size=40)


def test_heads_from_the_width_and_standard_names(tmp_path):
    """Width 64 -> 1 head (head width 64, as every standard ViT); a standard size has its name."""
    torch.manual_seed(2)
    ref = DinoViT(dim=64, heads=1)
    torch.save(ref.state_dict(), tmp_path / "v.pth")
    lm = load_model(tmp_path / "v.pth")
    assert lm.config["arch"] == "vit_d64_l2_h1_patch16_32"
    _same(lm.model, ref, _x(32))
    torch.save(DinoViT(dim=48).state_dict(), tmp_path / "w.pth")
    with pytest.raises(DejavuError, match=r"cannot tell the ViT.s heads.*vit_d48_l2_h<heads>_patch16"):
        load_model(tmp_path / "w.pth")


def test_ibot_teacher_and_mean_pooling(tmp_path):
    torch.manual_seed(3)
    ref = DinoViT()
    sd = {**ref.state_dict(), "masked_embed": torch.zeros(1, D)}
    torch.save({"state_dict": sd}, tmp_path / "checkpoint_teacher.pth")
    lm = load_model(tmp_path / "checkpoint_teacher.pth", arch=ARCH)
    assert lm.loaded["release"] == "iBOT" and any("masked_embed" in n for n in lm.notes)
    _same(lm.model, ref, _x(32))
    avg = DinoViT(pool="avg")
    torch.save({"state_dict": avg.state_dict()}, tmp_path / "gap.pth")
    lm = load_model(tmp_path / "gap.pth", arch=ARCH)
    assert lm.config["arch"].endswith("_gap") and "mean patch token" in lm.describe()
    _same(lm.model, avg, _x(32))


@pytest.mark.parametrize("reg", [0, 4])
def test_dinov2_layer_scale_registers_at_its_eval_size(tmp_path, reg):
    """DINOv2 (hub ``*_pretrain.pth``): layer scale, mask_token (1, D), registers; pos_embed for
    518 px (37x37, patch 14) is taken to 224 px by default, interpolated as DINOv2 does."""
    torch.manual_seed(4)
    ref = DinoViT(dim=D, patch=14, img=518, ls=True, reg=reg, interp="dino" if not reg else "dinov2_reg")
    ref.blocks = ref.blocks[:1]
    sd = {**ref.state_dict(), "mask_token": torch.zeros(1, D)}
    torch.save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    arch = f"vit_d{D}_l1_h{HEADS}_patch14"
    lm = load_model(tmp_path / "dinov2_vits14_pretrain.pth", arch=arch)
    assert lm.loaded["release"] == "DINOv2" and lm.config["image_size"] == 224
    assert lm.config["arch"] == f"{arch}_224" + (f"_reg{reg}" if reg else "") + "_ls"
    _same(lm.model, ref, _x(224), tol=1e-6)


def test_dinov2_training_checkpoint_chunked_teacher(tmp_path):
    """DINOv2's own training checkpoints: ``model`` = teacher.* + student.*, chunked blocks."""
    torch.manual_seed(5)
    ref = DinoViT(patch=14, img=28, ls=True)
    chunked = {}
    for k, v in ref.state_dict().items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 1}.{i}." + k.split(".", 2)[2]
        chunked[k] = v
    model = {f"teacher.backbone.{k}": v for k, v in chunked.items()}
    model.update({f"student.backbone.{k}": torch.zeros_like(v) for k, v in chunked.items()})
    model["teacher.dino_head.mlp.0.weight"] = torch.zeros(8, D)
    torch.save({"model": model, "iteration": 10}, tmp_path / "model_0000009.pth")
    lm = load_model(tmp_path / "model_0000009.pth", arch=f"vit_d{D}_l2_h{HEADS}_patch14")
    assert lm.loaded["weights"] == "teacher"
    _same(lm.model, ref, _x(28))


class MAE(DinoViT):
    """MAE's encoder (models_mae.MaskedAutoencoderViT without masking) with its decoder keys."""

    def __init__(self):
        super().__init__(interp="none")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 32))
        self.decoder_embed = nn.Linear(D, 32)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 5, 32), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(32, 2)])
        self.decoder_norm = nn.LayerNorm(32)
        self.decoder_pred = nn.Linear(32, 16 * 16 * 3)


def test_mae_pretrain_checkpoint(tmp_path):
    torch.manual_seed(6)
    ref = MAE()
    torch.save({"model": ref.state_dict(), "epoch": 799}, tmp_path / "mae_pretrain_vit_base.pth")
    lm = load_model(tmp_path / "mae_pretrain_vit_base.pth", arch=ARCH)
    assert lm.loaded["release"] == "MAE" and any("MAE decoder" in n for n in lm.notes)
    _same(lm.model, ref, _x(32))


def _moco_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):  # moco/builder.py
    mlp = []
    for i in range(num_layers):
        dim1 = input_dim if i == 0 else mlp_dim
        dim2 = output_dim if i == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if i < num_layers - 1:
            mlp += [nn.BatchNorm1d(dim2), nn.ReLU(inplace=True)]
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def _sincos(grid, dim):  # vits.py build_2d_sincos_position_embedding
    grid_w, grid_h = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32))
    pos_dim = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pe = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pe], dim=1)


class MocoViT(nn.Module):
    def __init__(self, img=32):
        super().__init__()
        self.base = DinoViT(heads=12, img=img)  # MoCo v3's ViTs all have 12 heads
        self.base.pos_embed = nn.Parameter(_sincos(img // 16, D), requires_grad=False)
        self.head = _moco_mlp(3, D, 64, 16)

    def forward(self, x):
        return self.head(self.base(x))


def test_mocov3_base_encoder_and_its_head(tmp_path):
    torch.manual_seed(7)
    ref = MocoViT()
    for m in ref.head:
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    enc = {**{f"base_encoder.{k}": v for k, v in ref.base.state_dict().items()}}
    enc.update({f"base_encoder.head.{k}": v for k, v in ref.head.state_dict().items()})
    sd = {f"module.{k}": v for k, v in enc.items()}
    sd.update({k.replace("module.base_encoder", "module.momentum_encoder"): torch.zeros_like(v) for k, v in sd.items()})
    sd.update({f"module.predictor.{k}": v for k, v in _moco_mlp(2, 16, 64, 16).state_dict().items()})
    torch.save({"state_dict": sd, "epoch": 300, "arch": "vit_small"}, tmp_path / "vit-s-300ep.pth.tar")
    lm = load_model(tmp_path / "vit-s-300ep.pth.tar")  # heads: 12, MoCo v3's
    assert lm.source == "vit-mocov3" and lm.config["arch"] == f"vit_d{D}_l2_h12_patch16_32"
    assert lm.has_projector and "projector output" in lm.describe() and "base encoder" in lm.describe()
    _same(lm.model, ref, _x(32), kind="projector")
    # another size: MoCo v3's fixed sin-cos embedding, recomputed for the grid
    lm64 = load_model(tmp_path / "vit-s-300ep.pth.tar", image_size=64)
    ref64 = MocoViT(img=64)
    ref64.load_state_dict({k: v for k, v in ref.state_dict().items() if "pos_embed" not in k}, strict=False)
    _same(lm64.model, ref64, _x(64), kind="projector")


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"reg_tokens": 4, "no_embed_class": True, "init_values": 1.0},  # timm's DINOv2-with-registers
        {"global_pool": "avg", "fc_norm": True},
        {"class_token": True, "num_classes": 10},
    ],
)
def test_timm_state_dicts(tmp_path, kw):
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(8)
    kw = {"num_classes": 0, **kw}
    ref = VisionTransformer(img_size=32, patch_size=16, embed_dim=D, depth=DEPTH, num_heads=HEADS, **kw)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    lm = load_model(tmp_path / "timm.pth", arch=ARCH)
    ref.reset_classifier(0)
    _same(lm.model, ref, _x(32))
    assert timm.__version__


def test_torchvision_vit(tmp_path):
    from torchvision.models import VisionTransformer

    torch.manual_seed(9)
    ref = VisionTransformer(
        image_size=32, patch_size=16, num_layers=DEPTH, num_heads=HEADS, hidden_dim=D, mlp_dim=4 * D
    )
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    torch.save(ref.state_dict(), tmp_path / "vit_b_16.pth")
    lm = load_model(tmp_path / "vit_b_16.pth", arch=ARCH)
    assert lm.source == "vit-torchvision" and any("classification head" in n for n in lm.notes)
    ref.heads = nn.Identity()
    _same(lm.model, ref, _x(32))


def test_unknown_vit_keys_are_named(tmp_path):
    sd = {**DinoViT().state_dict(), "blocks.0.attn.q_norm.weight": torch.ones(12)}
    torch.save(sd, tmp_path / "qknorm.pth")
    with pytest.raises(DejavuError, match="q_norm"):
        load_model(tmp_path / "qknorm.pth", arch=ARCH)


def test_model_names_from_the_local_caches_only(tmp_path, monkeypatch):
    """``--model NAME``: torch.hub's checkpoint folder, or timm's weights in the Hugging Face
    cache (safetensors); never a download, and a clear message when absent."""
    timm = pytest.importorskip("timm")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(10)
    ref = DinoViT(dim=64, heads=1)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "dino_tiny_pretrain.pth")
    lm = load_model("dino_tiny_pretrain")
    assert lm.path.name == "dino_tiny_pretrain.pth"
    _same(lm.model, ref, _x(32))
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=1, num_classes=0
    )
    snap = tmp_path / "hf" / "models--timm--vit_tiny_test.dino" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    safetensors_torch.save_file(vit.state_dict(), str(snap / "model.safetensors"))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("a" * 40)
    lm = load_model("vit_tiny_test.dino")
    assert lm.path.name == "model.safetensors" and lm.config["arch"] == "vit_d64_l2_h1_patch16_32"
    _same(lm.model, vit, _x(32))
    with pytest.raises(DejavuError, match=r"checkpoint not found.*never downloads"):
        load_model("vit_base_patch16_224.mae")
