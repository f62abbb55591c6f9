"""Checkpoints: our format, the original research code's, torchvision state dicts.

Our format (``model_ep{E}.pth``, ``last.pth``) is a dict::

    {"format": "dejavu-ckpt/1", "model": SSLModel state dict, "epoch": int,
     "config": {... "arch", "projector", "method", "image_size", "num_classes" ...},
     "fingerprint": dataset fingerprint dict, "extra": method state (optional),
     "optimizer"/"scaler"/"rng"/...: resume state (last.pth only)}

Everything is loaded with ``weights_only=True`` (:func:`dejavu.io.safe_torch_load`):
a checkpoint that would execute code when unpickled is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dejavu import DejavuError
from dejavu.io import file_sha256, safe_torch_load
from dejavu.ssl.model import ModelSpec, SSLModel

FORMAT = "dejavu-ckpt/1"


@dataclass
class LoadedModel:
    model: SSLModel
    path: Path
    source: str  # "dejavu" | "original" | "torchvision"
    epoch: int | None
    config: dict[str, Any]
    fingerprint: dict[str, Any] | None
    sha256: str


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def convert_state_dict(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Map any supported state dict to SSLModel keys; returns (state dict, source)."""
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("module.") for k in sd):
        sd = _strip(sd, "module.")
    if any(k.startswith("backbone.") for k in sd):
        return sd, "dejavu"
    if any(k.startswith("net.") for k in sd):  # original deja vu / VICReg code
        out = {"backbone." + k: v for k, v in _strip(sd, "net.").items() if not k.startswith("fc.")}
        out.update({"projector." + k: v for k, v in _strip(sd, "projector.").items()})
        return out, "original"
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:  # torchvision resnet
        out = {"backbone." + k: v for k, v in sd.items() if not k.startswith("fc.")}
        return out, "torchvision"
    raise DejavuError("unrecognised state dict (expected backbone.*/projector.*, module.net.*, or a torchvision ResNet)")


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    projector: str | None = None,
    num_classes: int | None = None,
    map_location: Any = "cpu",
) -> LoadedModel:
    """Load any supported checkpoint into an :class:`SSLModel` in eval mode.

    For foreign checkpoints (no stored config) ``arch`` and ``projector`` must be
    given; for ours they default to the stored config and must agree if given.
    """
    path = Path(path)
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict):
        raise DejavuError(f"{path}: not a checkpoint (expected a dict, got {type(obj).__name__})")
    config: dict[str, Any] = dict(obj.get("config") or {}) if isinstance(obj.get("config"), dict) else {}
    if "model" in obj and isinstance(obj["model"], dict):
        sd = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
    else:
        sd = obj
    try:
        sd, source = convert_state_dict(sd)
    except DejavuError as e:
        raise DejavuError(f"{path}: {e}") from None
    has_proj = any(k.startswith("projector.") for k in sd)
    arch = arch or config.get("arch")
    if projector is None:
        projector = config.get("projector") if has_proj else "none"
    if num_classes is None:
        num_classes = int(config.get("num_classes", 0)) if any(k.startswith("classifier.") for k in sd) else 0
    if not arch:
        raise DejavuError(f"{path}: checkpoint has no stored config; pass --arch (e.g. resnet50) and --projector")
    if projector is None:
        raise DejavuError(f"{path}: checkpoint has a projector but no stored spec; pass --projector (e.g. 8192-8192-8192)")
    spec = ModelSpec(arch=str(arch), projector=str(projector), num_classes=int(num_classes))
    model = SSLModel(spec)
    sd = {k: v for k, v in sd.items() if not k.startswith("extra.")}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch
        line = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise DejavuError(f"{path}: weights do not fit arch={spec.arch} projector={spec.projector} ({line})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        what = (f"missing {missing[:3]}" if missing else "") + (" " if missing and unexpected else "") + (
            f"unexpected {unexpected[:3]}" if unexpected else "")
        raise DejavuError(f"{path}: weights do not fit arch={spec.arch} projector={spec.projector} ({what})")
    model.eval()
    epoch = obj.get("epoch")
    config.setdefault("arch", spec.arch)
    config.setdefault("projector", spec.projector)
    return LoadedModel(model=model, path=path, source=source, epoch=int(epoch) if epoch is not None else None,
                       config=config, fingerprint=obj.get("fingerprint"), sha256=file_sha256(path))
