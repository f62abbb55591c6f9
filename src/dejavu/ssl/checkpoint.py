"""Checkpoints: ours, the original research code's, and public SSL releases' layouts.

Our format (``model_ep{E}.pth``, ``last.pth``) is a dict::

    {"format": "dejavu-ckpt/1", "model": SSLModel state dict, "epoch": int,
     "config": {... "arch", "projector", "method", "image_size", "num_classes" ...},
     "fingerprint": dataset fingerprint dict, "extra": method state (optional),
     "optimizer"/"scaler"/"rng"/...: resume state (last.pth only)}

Foreign state dicts are recognised by :data:`LAYOUTS`, one row per layout: a detector on the
key set, the role of each key prefix (backbone, head, classifier, ignored) and a converter
to this project's keys. Architecture and projector are read from the weights when not given.
Everything is loaded with ``weights_only=True`` (:func:`dejavu.io.safe_torch_load`): a
checkpoint that would execute code when unpickled is refused.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dejavu import DejavuError, formats
from dejavu.data.imagefolder import DatasetIndex, Fingerprint
from dejavu.io import abspath, file_sha256, index_hash, safe_torch_load
from dejavu.ssl.backbones import ViT, ViTSpec, arch_has_size, parse_vit
from dejavu.ssl.heads import (
    HeadLayer,
    build_classifier,
    build_head,
    build_projector,
    describe_plan,
    parse_spec,
    plan_dims,
    plan_from_flat,
    standard_spec,
)
from dejavu.ssl.model import ModelSpec, SSLModel

FORMAT = formats.CHECKPOINT
Tensors = dict[str, torch.Tensor]


@dataclass
class LoadedModel:
    """A checkpoint loaded into an :class:`SSLModel` (eval mode).

    ``source`` names the layout (a key of :data:`LAYOUTS`). ``has_projector`` is False when the
    file holds no projector this tool reproduces: the model's projector is then the identity,
    so the ``projector`` embedding *is* the backbone embedding; ``notes`` say so, and list the
    weights that were read but not used (BYOL predictor, Barlow's loss BatchNorm, ...).
    """

    model: SSLModel
    path: Path
    source: str
    epoch: int | None
    config: dict[str, Any]
    fingerprint: dict[str, Any] | None
    sha256: str
    has_projector: bool = True
    notes: list[str] = field(default_factory=list)
    loaded: dict[str, Any] = field(default_factory=dict)  # what was loaded (:func:`describe_loaded`)

    def describe(self, embed: str = "projector") -> str:
        """One line saying what was loaded (layout, weights, architecture, embedding, image size)."""
        return describe_loaded(self.loaded, embed)

    def check_dataset(self, index: DatasetIndex, what: str = "checkpoint") -> None:
        """Refuse a model trained on another dataset than ``index`` (the fingerprint it records;
        a checkpoint without one is not checked). ``what`` names the file in the message."""
        if self.fingerprint:
            index.fingerprint.check(self.fingerprint, what=f"{what} {self.path}")

    def check_trained_on(self, indices: np.ndarray, what: str) -> None:
        """Refuse a model whose recorded training index (``config.index_sha256``, written by
        ``dejavu train``) is not ``indices``: attacking a model with sets of a partition it
        was not trained on measures nothing. A checkpoint without the record is not checked.

        Args:
            indices: the training set the attack assumes (e.g. the partition's ``train_A``).
            what: names that set (its file) in the message.

        Raises:
            DejavuError: the recorded hash is malformed or differs.
        """
        saved = self.config.get("index_sha256")
        if saved is None:
            return
        if not isinstance(saved, str) or not re.fullmatch(r"[0-9a-f]{16}", saved):
            raise DejavuError(f"{self.path}: config index_sha256 is not 16 hex digits: {str(saved)[:40]!r}")
        if saved != index_hash(indices):
            raise DejavuError(
                f"{self.path}: was trained on another index ({self.config.get('index_file') or saved}) than "
                f"{what}; attack it with the partition it was trained on"
            )


@dataclass
class Parts:
    """A state dict split by role, in this project's key names."""

    backbone: Tensors
    head: Tensors = field(default_factory=dict)  # flat nn.Sequential keys "{i}.{param}"
    plan: list[HeadLayer] | None = None  # set by converters of nested heads
    classifier: Tensors = field(default_factory=dict)  # keys of heads.build_classifier
    notes: list[str] = field(default_factory=list)
    vit: dict[str, Any] = field(default_factory=dict)  # ViT layouts: release, heads, resample (see _vit_hints)


@dataclass(frozen=True)
class Layout:
    name: str
    what: str  # who writes it
    detect: Callable[[set[str]], bool]
    roles: tuple[tuple[str, str], ...]  # (key prefix, role), first match wins
    convert: Callable[[dict[str, Tensors]], Parts]  # {prefix: {rest of key: tensor}} -> Parts


IGNORED = {  # prefix -> why its weights are not used for embeddings
    "bn.": "Barlow Twins' affine-free BatchNorm, loss only",
    "predictor.": "BYOL/SimSiam/MoCo v3 predictor, training only",
    "prediction_head.": "BYOL/SimSiam predictor, training only",
    "fc.": "torchvision's classification layer, not a projector",
    "head.": "DINO/iBOT/SwAV head or a ViT's classification layer, not a projector this tool reproduces",
    "dino_head.": "DINOv2 DINO head, training only",
    "ibot_head.": "DINOv2 iBOT head, training only",
    "decoder_": "MAE decoder, pre-training only",
    "mask_token": "masked-image-modelling token, training only",
    "masked_embed": "iBOT masked-image-modelling token, training only",
    "momentum_encoder.": "MoCo v3 momentum encoder",
    "heads.": "torchvision's classification head",
    "prototypes.": "SwAV prototypes, training only",
    "online_predictor.": "BYOL predictor, training only",
    "target_encoder.": "momentum (target) copy",
    "extra.": "",
}


def _has(prefix: str) -> Callable[[set[str]], bool]:
    return lambda keys: any(k.startswith(prefix) for k in keys)


def _ignored(groups: dict[str, Tensors], layout: Layout) -> list[str]:
    """A note for each ignored key prefix present."""
    out = []
    for p, role in layout.roles:
        if role == "ignore" and p in groups:
            last = p.rstrip(".").split(".")[-1]
            why = IGNORED.get(p) or IGNORED.get(last + ".") or IGNORED.get(last) or "momentum (teacher) copy"
            if why:
                out.append(f"ignored {p}* ({why})")
    return out


def _classifier(t: Tensors) -> tuple[Tensors, list[str]]:
    """Our BN-ReLU-Linear classifier as is; a single Linear (solo-learn's online probe on the
    backbone) is not the supervised head on the projector, so it is dropped with a note."""
    if "weight" in t:
        return {}, ["ignored classifier.* (online linear probe on the backbone, not a projector head)"]
    return t, []


def _convert_flat(groups: dict[str, Tensors], head: str = "projector.") -> Parts:
    cls, notes = _classifier(groups.get("classifier.", {}))
    return Parts(
        backbone=groups.get("backbone.", {}),
        head=groups.get(head, {}),
        classifier=cls,
        notes=notes,
    )


def _original_head(t: Tensors) -> tuple[Tensors, list[HeadLayer]]:
    """``SSLNetwork.MLP``: block i is ``Sequential(Linear, BN, ReLU)`` (keys ``i.0.*``,
    ``i.1.*``), the last a plain Linear (``n.weight``) or, with ``proj_relu=1``,
    ``Sequential(Linear, ReLU)``. A flat (VICReg-style) projector is taken as it is."""
    if not any(re.match(r"\d+\.\d+\.", k) for k in t):  # already flat (VICReg-style)
        return t, plan_from_flat(t) if t else []
    flat: Tensors = {}
    plan: list[HeadLayer] = []
    for b in sorted({int(k.split(".")[0]) for k in t}):
        block = {k[len(f"{b}.") :]: v for k, v in t.items() if k.startswith(f"{b}.")}
        subs = (
            [block]
            if "weight" in block
            else [{k[len(f"{j}.") :]: v for k, v in block.items() if k.startswith(f"{j}.")} for j in (0, 1)]
        )
        for sub in (s for s in subs if s):
            flat.update({f"{len(plan)}.{k}": v for k, v in sub.items()})
            plan.append(plan_from_flat({f"0.{k}": v for k, v in sub.items()})[0])
        if "weight" not in block:
            plan.append(("relu",))
    return flat, plan


def _convert_original(groups: dict[str, Tensors]) -> Parts:
    if "net.fc." in groups and not ("projector." in groups or "fc." in groups):
        # DejaVuOSS train_SSL_crops.py: a bare torchvision ResNet whose fc is the classifier
        return Parts(
            backbone=groups.get("net.", {}),
            classifier={f"0.{k}": v for k, v in groups["net.fc."].items()},
            notes=["net.fc read as a single Linear classifier on the backbone (DejaVuOSS's crop classifier)"],
        )
    if "net.fc." in groups:
        raise DejavuError(
            "the backbone has its own fc (the original's model.fc=1 option), which this tool's backbones do not have"
        )
    head, plan = _original_head(groups.get("projector.", {}))
    return Parts(
        backbone=groups.get("net.", {}),
        head=head,
        plan=plan if head else None,
        classifier=groups.get("fc.", {}),
    )


def _convert_byol_pytorch(groups: dict[str, Tensors]) -> Parts:
    """The hooked representation is the flattened avgpool output, i.e. our backbone's."""
    return _convert_flat(
        {**groups, "backbone.": groups.get("online_encoder.net.", {})},
        head="online_encoder.projector.",
    )


CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def _children(t: Tensors) -> Tensors:
    """``nn.Sequential(*list(resnet.children())[:-1])``: child i is ``CHILDREN[i]``."""
    return {CHILDREN[int(k.split(".")[0])] + k[k.index(".") :]: v for k, v in t.items()}


def _convert_lightly(groups: dict[str, Tensors]) -> Parts:
    return Parts(
        backbone=_children(groups.get("backbone.", {})),
        head=groups.get("projection_head.layers.", {}),
    )


def _convert_pytorch_byol(groups: dict[str, Tensors]) -> Parts:
    return Parts(backbone=_children(groups.get("encoder.", {})), head=groups.get("projetion.net.", {}))


def _convert_torchvision(groups: dict[str, Tensors]) -> Parts:
    return Parts(backbone=groups.get("", {}))


# ---------------------------------------------------------------- ViT layouts


def _is_vit(keys: set[str], prefix: str = "") -> bool:
    return prefix + "cls_token" in keys and prefix + "patch_embed.proj.weight" in keys


def _vit_release(groups: dict[str, Tensors], bb: Tensors) -> str:
    """Which release's ViT this looks like (DINOv2, MAE, iBOT, DINO, timm) from its keys."""
    keys = {p + k for p, g in groups.items() for k in g}
    if any(".ls1.gamma" in k for k in bb) or "register_tokens" in bb or any("dino_head." in k for k in keys):
        return "DINOv2"
    if any(k.startswith("decoder_") for k in keys):
        return "MAE"
    if any("masked_embed" in k or "last_layer2" in k for k in keys):
        return "iBOT"
    if any("last_layer" in k for k in keys):
        return "DINO"
    if "head.weight" in keys and "head.bias" in keys:
        return "timm"
    return "DINO-style"


RESAMPLE = {  # release -> how its own code interpolates the position embedding to another grid
    "DINOv2": "offset",  # DINOv2 without registers, DINO, iBOT: bicubic, scale factor (g + 0.1) / M
    "DINOv2-reg": "antialias",  # DINOv2 with registers, timm: bicubic to the size, antialiased
    "DINO": "offset",
    "DINO-style": "offset",
    "iBOT": "offset",
    "timm": "antialias",
    "MAE": "size",  # MAE's util.pos_embed.interpolate_pos_embed: bicubic to the size
    "torchvision": "align_corners",  # torchvision's interpolate_embeddings
    "MoCo v3": "sincos",  # fixed 2-D sin-cos embedding, recomputed for the grid
}


def _vit_backbone(t: Tensors) -> Tensors:
    """timm-style ViT keys as :class:`dejavu.ssl.backbones.ViT` names them: DINOv2's chunked
    blocks (``blocks.{chunk}.{i}.``) unchunked, timm's ``reg_token`` renamed and a position
    embedding without a [CLS] entry (timm's ``no_embed_class``) given a zero one."""
    out = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in t.items()}
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
    pos = out.get("pos_embed")
    if pos is not None and pos.dim() == 3:
        n = pos.shape[1]
        if int(n**0.5) ** 2 == n:  # no entry for the [CLS] token
            out["pos_embed"] = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    return out


def _convert_vit(groups: dict[str, Tensors]) -> Parts:
    bb = groups.get("backbone.") or groups.get("", {})
    release = _vit_release(groups, bb)
    if release == "DINOv2" and "register_tokens" in bb:
        release_key = "DINOv2-reg"
    else:
        release_key = release
    return Parts(backbone=_vit_backbone(bb), vit={"release": release, "resample": RESAMPLE[release_key]})


def _convert_mocov3(groups: dict[str, Tensors]) -> Parts:
    head = groups.get("base_encoder.head.", {})
    return Parts(
        backbone=_vit_backbone(groups.get("base_encoder.", {})),
        head=head,
        vit={"release": "MoCo v3", "resample": "sincos", "heads": 12},
        notes=["MoCo v3: the base encoder (not the momentum encoder); its head is the projector"],
    )


def _convert_tv_vit(groups: dict[str, Tensors]) -> Parts:
    """torchvision's ``VisionTransformer`` (``conv_proj``, ``encoder.layers.encoder_layer_{i}``)."""
    t = groups.get("", {})
    out: Tensors = {}
    ren = {
        "ln_1.": "norm1.",
        "ln_2.": "norm2.",
        "self_attention.in_proj_weight": "attn.qkv.weight",
        "self_attention.in_proj_bias": "attn.qkv.bias",
        "self_attention.out_proj.": "attn.proj.",
        "mlp.0.": "mlp.fc1.",
        "mlp.3.": "mlp.fc2.",
        "mlp.linear_1.": "mlp.fc1.",
        "mlp.linear_2.": "mlp.fc2.",
    }
    for k, v in t.items():
        if k == "class_token":
            out["cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["pos_embed"] = v
        elif k.startswith("conv_proj."):
            out["patch_embed.proj." + k[len("conv_proj.") :]] = v
        elif k.startswith("encoder.ln."):
            out["norm." + k[len("encoder.ln.") :]] = v
        elif m := re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.*)", k):
            rest = m[2]
            for a, b in ren.items():
                if rest.startswith(a):
                    rest = b + rest[len(a) :]
                    break
            out[f"blocks.{m[1]}.{rest}"] = v
        else:
            out[k] = v  # refused by the strict load, named
    return Parts(backbone=out, vit={"release": "torchvision", "resample": "align_corners"})


def _vit_layouts() -> tuple[Layout, ...]:
    return (
        Layout(
            "vit-mocov3",
            "MoCo v3 ViT checkpoints (module.base_encoder.*, its head as the projector)",
            lambda keys: _is_vit(keys, "base_encoder."),
            (
                ("base_encoder.head.", "head"),
                ("base_encoder.", "backbone"),
                ("momentum_encoder.", "ignore"),
                ("predictor.", "ignore"),
            ),
            _convert_mocov3,
        ),
        Layout(
            "vit-torchvision",
            "torchvision ViTs (conv_proj, encoder.layers.*)",
            lambda keys: "conv_proj.weight" in keys and "class_token" in keys,
            (("heads.", "ignore"), ("", "backbone")),
            _convert_tv_vit,
        ),
        Layout(
            "vit",
            "timm-style ViTs: DINO, DINOv2 (registers, layer scale), iBOT, MAE, timm (bare or backbone.*)",
            lambda keys: _is_vit(keys) or _is_vit(keys, "backbone."),
            (
                ("backbone.mask_token", "ignore"),
                ("backbone.masked_embed", "ignore"),
                ("backbone.head.", "ignore"),
                ("backbone.", "backbone"),
                ("head.", "ignore"),
                ("dino_head.", "ignore"),
                ("ibot_head.", "ignore"),
                ("decoder_", "ignore"),
                ("mask_token", "ignore"),
                ("masked_embed", "ignore"),
                ("", "backbone"),
            ),
            _convert_vit,
        ),
    )


_MOMENTUM = (
    ("momentum_backbone.", "ignore"),
    ("momentum_projector.", "ignore"),
    ("momentum_classifier.", "ignore"),
    ("momentum_head.", "ignore"),
    ("backbone_momentum.", "ignore"),
    ("projection_head_momentum.", "ignore"),
)

LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (
        Layout(
            "dejavu",
            "this tool's dejavu-ckpt/1 files",
            lambda keys: "format:" + FORMAT in keys,
            (
                ("backbone.", "backbone"),
                ("projector.", "head"),
                ("classifier.", "classifier"),
                ("extra.", "ignore"),
            ),
            _convert_flat,
        ),
        *_vit_layouts(),
        Layout(
            "byol-pytorch",
            "lucidrains/byol-pytorch's BYOL learner (online_encoder.net.*, online_encoder.projector.*)",
            lambda keys: "online_encoder.net.conv1.weight" in keys,
            (
                ("online_encoder.net.fc.", "ignore"),
                ("online_encoder.net.", "backbone"),
                ("online_encoder.projector.", "head"),
                ("net.", "ignore"),
                ("online_predictor.", "ignore"),
                ("target_encoder.", "ignore"),
            ),
            _convert_byol_pytorch,
        ),
        Layout(
            "original",
            "the original deja vu code's SSLNetwork (net.*, nested projector.*, fc.*)",
            _has("net."),
            (
                ("net.fc.", "backbone"),
                ("net.", "backbone"),
                ("projector.", "head"),
                ("fc.", "classifier"),
                ("bn.", "ignore"),
                ("predictor.", "ignore"),
            ),
            _convert_original,
        ),
        Layout(
            "lightly",
            "lightly (backbone.{i} = resnet children, projection_head.layers.*)",
            lambda keys: "backbone.4.0.conv1.weight" in keys,
            (
                ("backbone.", "backbone"),
                ("projection_head.layers.", "head"),
                ("prediction_head.", "ignore"),
            )
            + _MOMENTUM,
            _convert_lightly,
        ),
        Layout(
            "pytorch-byol",
            "sthalles/PyTorch-BYOL (encoder.{i} = resnet children, projetion.net.*)",
            lambda keys: "encoder.4.0.conv1.weight" in keys,
            (("encoder.", "backbone"), ("projetion.net.", "head")),
            _convert_pytorch_byol,
        ),
        Layout(
            "backbone-projector",
            "VICReg/Barlow Twins/DINO full checkpoints, solo-learn (backbone.*, flat projector.*)",
            _has("backbone."),
            (
                ("backbone.", "backbone"),
                ("projector.", "head"),
                ("classifier.", "classifier"),
                ("bn.", "ignore"),
                ("predictor.", "ignore"),
                ("head.", "ignore"),
                ("prototypes.", "ignore"),
            )
            + _MOMENTUM,
            _convert_flat,
        ),
        Layout(
            "torchvision",
            "torchvision ResNets; VICReg/Barlow Twins/DINO/BYOL ResNet-50 backbones",
            lambda keys: "conv1.weight" in keys and "layer1.0.conv1.weight" in keys,
            (("fc.", "ignore"), ("", "backbone")),
            _convert_torchvision,
        ),
    )
}


def _supported() -> str:
    return "; ".join(f"{lay.name}: {lay.what}" for lay in LAYOUTS.values())


def _group(sd: Tensors, layout: Layout) -> tuple[dict[str, Tensors], list[str]]:
    groups: dict[str, Tensors] = {}
    unknown = []
    for k, v in sd.items():
        prefix = next((p for p, _ in layout.roles if k.startswith(p)), None)
        if prefix is None:
            unknown.append(k)
        else:
            groups.setdefault(prefix, {})[k[len(prefix) :]] = v
    return groups, unknown


def convert_state_dict(sd: dict[str, Any], ours: bool = False) -> tuple[Parts, str]:
    """Split any supported state dict by role.

    Args:
        sd: a state dict (a ``module.``, ``_orig_mod.`` or ``model.`` prefix that every key
            carries is removed).
        ours: the file carries our format tag.

    Returns:
        ``(parts, layout name)``.

    Raises:
        DejavuError: no supported layout matches, or a matching one has unknown keys.
    """
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    for p in ("module.", "_orig_mod.", "model."):  # DDP, torch.compile, a Lightning wrapper
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p) :]: v for k, v in sd.items()}
    keys = set(sd) | ({"format:" + FORMAT} if ours else set())
    layout = next((lay for lay in LAYOUTS.values() if lay.detect(keys)), None)
    if layout is None:
        raise DejavuError(
            f"unrecognised checkpoint layout (first keys {sorted(sd)[:5]}); supported layouts: {_supported()}"
        )
    groups, unknown = _group(sd, layout)
    if unknown:
        raise DejavuError(
            f"looks like the {layout.name} layout but has unknown keys {unknown[:5]}; supported layouts: {_supported()}"
        )
    parts = layout.convert(groups)
    parts.notes += _ignored(groups, layout)
    return parts, layout.name


RESNETS: dict[tuple[tuple[int, ...], bool], str] = {  # (blocks per stage, bottleneck) -> name
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
}


def _blocks(bb: Tensors, stage: int) -> int:
    found = (int(m.group(1)) for k in bb if (m := re.match(rf"layer{stage}\.(\d+)\.", k)))
    return 1 + max(found, default=-1)


def _basic_or_bottleneck(bb: Tensors) -> str | None:
    counts = tuple(_blocks(bb, i) for i in range(1, 5))
    return RESNETS.get((counts, "layer1.0.conv3.weight" in bb))


def infer_arch(bb: Tensors) -> str | None:
    """The backbone name of :mod:`dejavu.ssl.backbones` that these weights fit, if any."""
    if "features.0.weight" in bb:
        first = int(bb["features.0.weight"].shape[0])
        return {32: "smallcnn", 64: "smallcnn_wide"}.get(first)
    name = _basic_or_bottleneck(bb)
    if name and "conv1.weight" in bb and bb["conv1.weight"].shape[-1] == 3:
        return name + "_small" if name != "resnet101" else None
    return name


def _container(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
    """The state dict inside a training checkpoint (ours/original: ``model``; Lightning:
    ``state_dict``; DINO/iBOT: ``teacher``, as they evaluate; sthalles/PyTorch-BYOL:
    ``online_network_state_dict``), or the dict itself; with notes and which weights
    (``teacher``/``student``/None). A DINOv2 training checkpoint's ``model`` holds
    ``teacher.*`` and ``student.*``: the teacher is taken."""
    sd, notes, weights = obj, [], None
    for key in ("model", "state_dict", "teacher", "student", "online_network_state_dict"):
        if isinstance(obj.get(key), dict):
            sd = obj[key]
            if key in ("teacher", "student"):
                weights = key
                notes = [f"the '{key}' weights of a DINO-style checkpoint (the teacher is what DINO evaluates)"]
            break
    if any(str(k).startswith("teacher.") for k in sd) and any(str(k).startswith("student.") for k in sd):
        sd = {k[len("teacher.") :]: v for k, v in sd.items() if str(k).startswith("teacher.")}
        weights = "teacher"
        notes = ["the teacher weights of a DINOv2-style training checkpoint (its student ignored)"]
    return sd, notes, weights


def resolve_model(name: str | os.PathLike) -> Path:
    """A checkpoint file: ``name`` itself, or a model name whose weights are already in a local
    cache: torch.hub's (``<hub dir>/checkpoints/NAME[.pth]``) or Hugging Face's (timm's
    ``timm/NAME`` or a repo id, ``model.safetensors`` / ``pytorch_model.bin``). Nothing is
    ever downloaded.

    Raises:
        DejavuError: neither a file nor cached, with where it looked and how to fetch it.
    """
    path = Path(name)
    if path.exists():
        return path
    tried = []
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for cand in (hub / str(name), hub / f"{name}.pth"):
        tried.append(str(cand))
        if cand.is_file():
            return cand
    repo = str(name) if "/" in str(name) else f"timm/{name}"
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        cache = os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE
        for fname in ("model.safetensors", "pytorch_model.bin"):
            tried.append(f"Hugging Face cache {cache}: {repo}/{fname}")
            hit = try_to_load_from_cache(repo, fname, cache_dir=cache)
            if isinstance(hit, str):
                return Path(hit)
    except ImportError:
        pass
    raise DejavuError(
        f"{name}: checkpoint not found: no such file, and no cached weights of that name (looked in {'; '.join(tried)}); "
        "this tool never downloads: fetch them first (e.g. timm.create_model(NAME, pretrained=True)) "
        "or pass the checkpoint's path"
    )


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise DejavuError(f"{path}: reading .safetensors needs the safetensors package") from None
        try:
            return dict(load_file(str(path), device=str(map_location)))
        except Exception as e:  # a corrupt or non-safetensors file
            raise DejavuError(f"{path}: not a readable safetensors file ({e})") from None
    # DINO's full checkpoints store their argparse.Namespace: a plain attribute bag, safe to allow
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict):
        raise DejavuError(f"{path}: not a checkpoint (expected a dict, got {type(obj).__name__})")
    return obj


def _head_plan(parts: Parts, projector: str | None, path: Path) -> list[HeadLayer] | None:
    """The head's layers; checks them against a ``projector`` spec the caller gave."""
    plan = parts.plan if parts.plan is not None else None
    if plan is None and parts.head:
        plan = plan_from_flat(parts.head)
    if projector is None:
        return plan
    want = "none" if projector in ("", "none") else "-".join(map(str, parse_spec(projector)))
    have = "-".join(map(str, plan_dims(plan)[1:])) if plan else "none"
    if want != have:
        raise DejavuError(
            f"{path}: weights do not fit projector={projector} (the checkpoint's projector is "
            f"{have}{': ' + describe_plan(plan) if plan else ''}{_first_diff(parts, plan, want)})"
        )
    return plan


def _first_diff(parts: Parts, plan: list[HeadLayer] | None, want: str) -> str:
    """``; first differing: projector.K (file shape) vs (shape for the spec)``, if any."""
    if not plan or want == "none":
        return ""
    own = build_projector(plan_dims(plan)[0], want)[0].state_dict()
    for k, v in parts.head.items():
        if k not in own or own[k].shape != v.shape:
            exp = tuple(own[k].shape) if k in own else "absent"
            return f"; first differing: projector.{k} {tuple(v.shape)} in the file, {exp} for the spec"
    return ""


def _fit(model: SSLModel, sd: Tensors, path: Path, what: str) -> None:
    """Strict load; a mismatch lists the first differing keys and shapes."""
    own = model.state_dict()
    shapes = [
        f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    problems = (
        ([f"differing shapes: {'; '.join(shapes[:3])}"] if shapes else [])
        + ([f"missing {missing[:3]}"] if missing else [])
        + ([f"unexpected {unexpected[:3]}"] if unexpected else [])
    )
    if problems:
        raise DejavuError(f"{path}: weights do not fit {what} ({', '.join(problems)})")
    bad = next((k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise DejavuError(f"{path}: {bad} holds NaN or inf values (a diverged or damaged checkpoint)")
    model.load_state_dict(sd, strict=False)


def build_model(parts: Parts, arch: str, plan: list[HeadLayer] | None, path: Path) -> SSLModel:
    """An :class:`SSLModel` holding ``parts``; a head that is not our standard layout is
    built exactly from its plan (:func:`dejavu.ssl.heads.build_head`).

    Args:
        parts: the converted weights (:func:`convert_state_dict`).
        arch: backbone name of :mod:`dejavu.ssl.backbones`.
        plan: the head's layers, or None for no projector (identity).
        path: the checkpoint file, for messages.

    Returns:
        The model in eval mode, weights loaded strictly.

    Raises:
        DejavuError: the weights do not fit the model (first differing keys and shapes named).
    """
    spec_proj = standard_spec(plan) if plan else "none"
    linear = "0.weight" in parts.classifier and "2.weight" not in parts.classifier  # one Linear head
    head_w = parts.classifier.get("0.weight" if linear else "2.weight")
    ncls = int(head_w.shape[0]) if head_w is not None else 0
    model = SSLModel(ModelSpec(arch=arch, projector=spec_proj or "none", num_classes=ncls))
    if plan and spec_proj is None:
        model.projector = build_head(plan)
        model.embed_dim = plan_dims(plan)[-1]
        if ncls:
            model.classifier = build_classifier(model.embed_dim, ncls)
    if linear and head_w is not None:
        model.classifier = torch.nn.Sequential(
            torch.nn.Linear(int(head_w.shape[1]), ncls, bias="0.bias" in parts.classifier)
        )
    sd = {f"backbone.{k}": v for k, v in parts.backbone.items()}
    sd.update({f"projector.{k}": v for k, v in parts.head.items()})
    sd.update({f"classifier.{k}": v for k, v in parts.classifier.items()})
    what = f"arch={arch} projector={(standard_spec(plan) or describe_plan(plan)) if plan else 'none'}"
    _fit(model, sd, path, what)
    return model.eval()


def _notes(parts: Parts, plan: list[HeadLayer] | None, arch: str, source: str) -> list[str]:
    notes = list(parts.notes)
    if not plan:
        notes.append("no projector in the checkpoint: the projector embedding is the backbone embedding")
    if arch.endswith("_small") and source != "dejavu":
        notes.append(f"{arch}: 3x3 stride-1 stem with padding 1 (solo-learn's CIFAR stem pads 2)")
    return notes


def _spec_config(model: SSLModel, plan: list[HeadLayer] | None) -> dict[str, Any]:
    """``arch``, ``projector`` (dims), ``num_classes`` and, for a head that is not our
    standard layout, ``projector_layout``."""
    out: dict[str, Any] = {"arch": model.spec.arch, "num_classes": model.spec.num_classes}
    if isinstance(model.classifier, torch.nn.Sequential) and len(model.classifier) == 1:
        out["clf_head"] = "linear"
    out["projector"] = "-".join(map(str, plan_dims(plan)[1:])) if plan else "none"
    if plan and not standard_spec(plan):
        out["projector_layout"] = describe_plan(plan)
    return out


def _sincos(grid: int, dim: int) -> torch.Tensor:
    """MoCo v3's fixed 2-D sin-cos position embedding (``build_2d_sincos_position_embedding``)
    for a ``grid`` x ``grid`` patch grid, with its zero [CLS] entry."""
    g = torch.arange(grid, dtype=torch.float32)
    gw, gh = torch.meshgrid(g, g, indexing="ij")
    omega = 1.0 / (10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    ow, oh = torch.einsum("m,d->md", gw.flatten(), omega), torch.einsum("m,d->md", gh.flatten(), omega)
    pe = torch.cat([torch.sin(ow), torch.cos(ow), torch.sin(oh), torch.cos(oh)], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pe], dim=1)


def resample_pos_embed(pos: torch.Tensor, grid: int, method: str) -> torch.Tensor:
    """A ``(1, 1 + M*M, D)`` position embedding for a ``grid`` x ``grid`` patch grid, computed as
    the release's own code does at that resolution (``method``: :data:`RESAMPLE`'s values)."""
    n = pos.shape[1] - 1
    m = int(round(n**0.5))
    if m == grid:
        return pos
    if method == "sincos":
        return _sincos(grid, pos.shape[-1]).to(pos.dtype)
    patch = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    F = torch.nn.functional
    if method == "offset":
        out = F.interpolate(patch, scale_factor=((grid + 0.1) / m,) * 2, mode="bicubic")
    else:
        out = F.interpolate(
            patch,
            size=(grid, grid),
            mode="bicubic",
            antialias=method == "antialias",
            align_corners=True if method == "align_corners" else None,
        )
    out = out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat([pos[:, :1].float(), out], dim=1).to(pos.dtype)


def _count_blocks(bb: Tensors) -> int:
    return 1 + max((int(m[1]) for k in bb if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)


def _vit_spec(parts: Parts, arch: str | None, image_size: int | None, path: Path) -> ViTSpec:
    """The ViT the weights fit, at ``image_size`` (default: the arch name's, else the
    position embedding's grid; DINOv2's 518 px -> 224, its evaluation size). Heads: the arch
    name's, the layout's (MoCo v3: 12), else width / 64 (every standard ViT)."""
    bb = parts.backbone
    dim, patch = int(bb["cls_token"].shape[-1]), int(bb["patch_embed.proj.weight"].shape[-1])
    given = parse_vit(arch) if arch else None
    if arch and given is None:
        raise DejavuError(f"{path}: a ViT checkpoint, but --arch {arch} is not a ViT name (e.g. vit_small_patch16)")
    heads = given.heads if given else parts.vit.get("heads") or (dim // 64 if dim % 64 == 0 else 0)
    if not heads:
        raise DejavuError(
            f"{path}: cannot tell the ViT's heads (width {dim}); pass --arch vit_d{dim}_l{_count_blocks(bb)}_h<heads>_patch{patch}"
        )
    grid = int(round((bb["pos_embed"].shape[1] - 1) ** 0.5))
    native = 224 if parts.vit.get("release") == "DINOv2" and grid * patch == 518 else grid * patch
    size = image_size or (given.image_size if given and arch and arch_has_size(arch) else native)
    if size % patch:
        raise DejavuError(f"{path}: image size {size} is not a multiple of the ViT's patch size {patch}")
    return ViTSpec(
        dim=dim,
        depth=_count_blocks(bb),
        heads=heads,
        patch=patch,
        image_size=int(size),
        mlp=int(bb["blocks.0.mlp.fc1.weight"].shape[0]) if "blocks.0.mlp.fc1.weight" in bb else 0,
        reg=int(bb["register_tokens"].shape[1]) if "register_tokens" in bb else 0,
        layer_scale="blocks.0.ls1.gamma" in bb,
        pool="avg" if "fc_norm.weight" in bb else "token",
        qkv_bias="blocks.0.attn.qkv.bias" in bb,
    )


def _prepare_vit(parts: Parts, arch: str | None, image_size: int | None, path: Path) -> ViTSpec:
    """The ViT spec, and the position embedding resampled to its grid as the release does."""
    spec = _vit_spec(parts, arch, image_size, path)
    grid = spec.image_size // spec.patch
    pos = parts.backbone["pos_embed"]
    if int(round((pos.shape[1] - 1) ** 0.5)) != grid:
        method = parts.vit.get("resample", "antialias")
        parts.backbone["pos_embed"] = resample_pos_embed(pos, grid, method)
        parts.notes.append(
            f"position embedding resampled to {grid}x{grid} patches ({method}, as {parts.vit.get('release', 'the release')} does)"
        )
    return spec


def _embedding(model: SSLModel, plan: list[HeadLayer] | None) -> dict[str, str]:
    """What each embedding kind is, in words."""
    bb = model.backbone
    if isinstance(bb, ViT):
        what = "mean patch token after fc_norm" if bb.spec.pool == "avg" else "[CLS] token after the final norm"
    else:
        what = "global-average-pooled features"
    out = {"backbone": f"{what} ({model.feature_dim}-d)"}
    out["projector"] = f"projector output ({describe_plan(plan)}, {model.embed_dim}-d)" if plan else out["backbone"]
    return out


def describe_loaded(info: dict[str, Any], embed: str = "projector") -> str:
    """``loaded: layout vit (DINO release, teacher weights), arch vit_small_patch16_224, embedding ..., image size 224``."""
    what = ", ".join(
        x
        for x in (
            info.get("release") and f"{info['release']} release",
            info.get("weights") and f"{info['weights']} weights",
        )
        if x
    )
    emb = (info.get("embedding") or {}).get(embed, embed)
    size = info.get("image_size")
    return (
        f"loaded {info.get('path')}: layout {info.get('layout')}{f' ({what})' if what else ''}, "
        f"arch {info.get('arch')}, embedding {emb}, image size {size if size else 'not recorded'}"
        + (f" ({info['image_size_note']})" if info.get("image_size_note") else "")
    )


_TEXT_KEYS = ("arch", "projector", "method", "set", "index_sha256", "index_file")
_COUNT_KEYS = {"image_size": (8, 4096), "npc": (1, 10**7), "num_classes": (0, 10**7)}  # key: valid range


def _check_stored(obj: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """The values a checkpoint stores beside its weights, checked where they are read: the
    config's names are strings, its sizes whole numbers in range, the epoch a whole number,
    the dataset fingerprint a complete one (a wrong type gave a traceback deep in the attack)."""
    for k in _TEXT_KEYS:
        if config.get(k) is not None and not isinstance(config[k], str):
            raise DejavuError(f"{path}: config {k} must be a string, got {str(config[k])[:40]!r}")
    for k, (lo, hi) in _COUNT_KEYS.items():
        v = config.get(k)
        if v is not None and (type(v) is not int or not lo <= v <= hi):
            raise DejavuError(f"{path}: config {k} must be a whole number in {lo}..{hi}, got {str(v)[:40]!r}")
    ep = obj.get("epoch")
    if ep is not None and (type(ep) is not int or ep < 0):
        raise DejavuError(f"{path}: epoch must be a whole number >= 0, got {str(ep)[:40]!r}")
    fp = obj.get("fingerprint")
    if fp is not None:
        try:
            Fingerprint.from_dict(fp)
        except DejavuError as e:
            raise DejavuError(f"{path}: {e}") from None


PAIR_KEYS = ("method", "arch", "projector", "image_size", "npc")  # what models A and B must share
RECORD_KEYS = ("set", "npc", "index_sha256", "image_size")  # what dejavu train records


def check_pair(a: LoadedModel, b: LoadedModel) -> list[str]:
    """Models A and B of one attack must be trained alike (same method, backbone, projector,
    resolution, npc) where both files say; returns warnings for what cannot be checked.

    Args:
        a: model A (trained on set A).
        b: model B.

    Returns:
        One warning per model whose file records no training run (a bare state dict, a
        foreign or converted checkpoint): its dataset, set, npc and training index are not
        checked, and it is evaluated at the other model's or the default resolution.

    Raises:
        DejavuError: a key of :data:`PAIR_KEYS` differs between the two files.
    """
    for k in PAIR_KEYS:
        va, vb = a.config.get(k), b.config.get(k)
        if va is not None and vb is not None and va != vb:
            raise DejavuError(
                f"{b.path}: {k} {vb} but model A ({a.path}) has {k} {va}; the two models of an attack "
                "must be trained alike"
            )
    out = []
    for lm in (a, b):
        missing = [k for k in RECORD_KEYS if lm.config.get(k) is None] + ([] if lm.fingerprint else ["fingerprint"])
        if missing:
            out.append(
                f"{lm.path}: records no {', '.join(missing)} (not a dejavu training checkpoint): "
                "its dataset, set and training index are not checked"
                + (
                    "; pass --image-size if it was not trained at the resolution used"
                    if "image_size" in missing
                    else ""
                )
            )
    return out


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    projector: str | None = None,
    map_location: Any = "cpu",
    image_size: int | None = None,
) -> LoadedModel:
    """Load any supported checkpoint (see :data:`LAYOUTS`) into an :class:`SSLModel` in eval mode.

    Args:
        path: the checkpoint file, or a model name cached locally (:func:`resolve_model`).
        arch: backbone name; default: the stored config's, else read from the weights.
        projector: projector spec (``"8192-8192-8192"`` or ``"none"``) the weights must have;
            default: whatever the file holds.
        map_location: as for ``torch.load``.
        image_size: a ViT's input size (a multiple of its patch size); its position embedding
            is resampled to it as the release's own code does. Default: the arch name's, else
            the embedding's own grid (DINOv2: 224). Ignored by convolutional backbones.

    Returns:
        The :class:`LoadedModel`; ``has_projector``/``notes`` say what was used.

    Raises:
        DejavuError: the file is missing, unsafe or not a checkpoint, its layout is not
            supported, its head does not fit ``projector``, the backbone cannot be told
            (pass ``arch``), or the weights do not fit the model.
    """
    path = abspath(resolve_model(path))  # recorded in results: must work from any folder
    obj = _read(path, map_location)
    ours = obj.get("format") == FORMAT
    config: dict[str, Any] = dict(obj["config"]) if isinstance(obj.get("config"), dict) else {}
    _check_stored(obj, config, path)
    sd, notes, weights = _container(obj)
    try:
        parts, source = convert_state_dict(sd, ours=ours)
        plan = _head_plan(parts, projector, path)
    except DejavuError as e:
        raise DejavuError(e.args[0] if str(e).startswith(str(path)) else f"{path}: {e}") from None
    vit = None
    if "cls_token" in parts.backbone and "patch_embed.proj.weight" in parts.backbone:
        vit = _prepare_vit(parts, arch or config.get("arch"), image_size, path)
        arch = vit.name()
    arch = arch or config.get("arch") or infer_arch(parts.backbone)
    if not arch:
        raise DejavuError(f"{path}: cannot tell the backbone from the weights; pass --arch (e.g. resnet50)")
    model = build_model(parts, str(arch), plan, path)
    notes += _notes(parts, plan, str(arch), source)
    config.update(_spec_config(model, plan))
    if vit is not None:
        config["image_size"] = vit.image_size
    epoch = obj.get("epoch")
    loaded = {
        "path": str(path),
        "layout": source,
        "release": parts.vit.get("release"),
        "weights": weights or ("base encoder" if source == "vit-mocov3" else None),
        "arch": str(arch),
        "embedding": _embedding(model, plan),
        "image_size": config.get("image_size"),
    }
    return LoadedModel(
        model=model,
        path=path,
        source=source,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        config=config,
        fingerprint=obj.get("fingerprint"),
        sha256=file_sha256(path),
        has_projector=bool(plan),
        notes=notes,
        loaded=loaded,
    )
