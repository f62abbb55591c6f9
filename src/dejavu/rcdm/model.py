"""The representation-conditioned denoiser and its checkpoints (docs/DESIGN.md 2.8).

:class:`RCDM` is diffusers' ``UNet2DModel`` with ``class_embed_type="identity"`` and
``resnet_time_scale_shift="scale_shift"``: the ``class_labels`` passed in are added to the
timestep embedding, whose sum scales and shifts every residual block's group norm (RCDM's
conditioning, Bordes et al. 2022, on a maintained library instead of the original's
guided-diffusion fork). ``class_labels`` is a learned projection of the SSL representation:
standardised with the training set's per-dimension mean/std (buffers), then ``Linear -> SiLU ->
Linear`` to the time-embedding width (``cond_hidden = 0``: one Linear). The UNet predicts the
noise; the schedule is DDPM's linear one, its betas scaled by ``1000 / steps`` below 1000
steps (guided-diffusion's rule). Checkpoints: :class:`LoadedRCDM` (:func:`load_rcdm`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dejavu import DejavuError, formats
from dejavu.config import from_dict
from dejavu.io import safe_torch_load
from dejavu.rcdm.config import IMAGE_SIZES, RCDMConfig  # noqa: F401  (re-exported)

FORMAT = formats.RCDM


def build_unet(cfg: RCDMConfig):
    from diffusers import UNet2DModel

    res = cfg.image_size
    down: list[str] = []
    up: list[str] = []
    for level in range(len(cfg.block_out_channels)):
        attn = (res // 2**level) in cfg.attention_resolutions
        down.append("AttnDownBlock2D" if attn else "DownBlock2D")
        up.insert(0, "AttnUpBlock2D" if attn else "UpBlock2D")
    kind = "resnet" if cfg.resblock_updown else "conv"
    return UNet2DModel(
        sample_size=res,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        downsample_type=kind,
        upsample_type=kind,
        dropout=cfg.dropout,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    )


class RCDM(nn.Module):
    """``forward(noisy images, timesteps, representations) -> predicted noise``."""

    def __init__(self, cfg: RCDMConfig, rep_dim: int):
        super().__init__()
        self.cfg = cfg
        self.rep_dim = int(rep_dim)
        self.unet = build_unet(cfg)
        d = cfg.time_embed_dim
        if cfg.cond_hidden > 0:
            self.cond_proj = nn.Sequential(
                nn.Linear(rep_dim, cfg.cond_hidden), nn.SiLU(), nn.Linear(cfg.cond_hidden, d)
            )
        else:
            self.cond_proj = nn.Sequential(nn.Linear(rep_dim, d))
        self.rep_mean: torch.Tensor
        self.rep_std: torch.Tensor
        self.register_buffer("rep_mean", torch.zeros(rep_dim))
        self.register_buffer("rep_std", torch.ones(rep_dim))

    def set_rep_stats(self, reps: torch.Tensor) -> None:
        self.rep_mean.copy_(reps.float().mean(0))
        self.rep_std.copy_(reps.float().std(0).clamp_min(1e-6) if len(reps) > 1 else torch.ones(self.rep_dim))

    def condition(self, rep: torch.Tensor) -> torch.Tensor:
        if rep.ndim != 2 or rep.shape[1] != self.rep_dim:
            raise DejavuError(
                f"representation of shape {tuple(rep.shape)} does not fit this RCDM (expects (n, {self.rep_dim}))"
            )
        return self.cond_proj((rep.float() - self.rep_mean) / self.rep_std)

    def forward(self, x: torch.Tensor, t: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
        """Predict the noise of ``x`` at timesteps ``t``, conditioned on ``rep``.

        Args:
            x: (n, 3, S, S) noisy images.
            t: (n,) or scalar diffusion timesteps.
            rep: (n, rep_dim) SSL representations (normalized by the stored statistics).

        Returns:
            (n, 3, S, S) predicted noise (``prediction_type="epsilon"``).
        """
        return self.unet(x, t, class_labels=self.condition(rep)).sample


def make_scheduler(cfg: RCDMConfig, kind: str = "ddpm"):
    """DDPM (training) or DDIM (sampling) scheduler with the paper's linear schedule,
    betas scaled by ``1000 / diffusion_steps`` (guided-diffusion's ``linear`` rule).

    Args:
        cfg: the RCDM's settings (``diffusion_steps``).
        kind: ``"ddpm"`` or ``"ddim"``.

    Returns:
        A ``diffusers`` scheduler (sample clipping on, epsilon prediction).

    Raises:
        ValueError: an unknown ``kind``.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    scale = 1000.0 / cfg.diffusion_steps
    kw = {
        "num_train_timesteps": cfg.diffusion_steps,
        "beta_schedule": "linear",
        "beta_start": 1e-4 * scale,
        "beta_end": 0.02 * scale,
        "prediction_type": "epsilon",
        "clip_sample": True,
    }
    if kind == "ddpm":
        return DDPMScheduler(**kw)
    if kind == "ddim":
        # set_alpha_to_one=False: the final step keeps the last alpha, as in guided-diffusion's DDIM.
        return DDIMScheduler(**kw, set_alpha_to_one=False)
    raise ValueError(kind)


def resolve_cond(cfg: RCDMConfig, ssl_model) -> str:
    """``auto`` -> ``logits`` for a supervised model (it has a classifier), else ``both``.

    Args:
        cfg: the RCDM's settings (``cond``: ``auto``, ``logits`` or another conditioning).
        ssl_model: the SSL model whose representation conditions the RCDM.

    Returns:
        The conditioning name.

    Raises:
        DejavuError: ``logits`` asked of a model without a classifier.
    """
    if cfg.cond == "auto":
        return "logits" if getattr(ssl_model, "classifier", None) is not None else "both"
    if cfg.cond == "logits" and getattr(ssl_model, "classifier", None) is None:
        raise DejavuError("rcdm cond=logits needs a supervised SSL model (with a classifier head)")
    return cfg.cond


@dataclass
class LoadedRCDM:
    """An RCDM checkpoint loaded. The file holds state dicts and plain dicts only (safe to load
    with ``weights_only=True``)::

        {"format": "dejavu-rcdm/1", "model": RCDM state dict (training weights),
         "ema": RCDM state dict (EMA weights, used for sampling), "step": int,
         "config": RCDMConfig dict, "rep_dim": int,
         "ssl": {"path", "sha256", "epoch", "config", "embed"}, "fingerprint": {...},
         "data": {"images": str, "num_train": int},
         ... "optimizer", "scaler", "rng" (last.pth only, for resume)}
    """

    model: RCDM  # EMA weights, eval mode
    path: Path
    step: int
    config: RCDMConfig
    ssl: dict[str, Any]  # path, sha256, epoch, config, embed
    fingerprint: dict[str, Any] | None
    raw: dict[str, Any]


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run folder means its ``last.pth``; a file is used as is."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pth"
    if not path.is_file():
        raise DejavuError(f"{path}: RCDM checkpoint not found (train one with `dejavu rcdm train`)")
    return path


def load_rcdm(path: str | os.PathLike, map_location: Any = "cpu", weights: str = "ema") -> LoadedRCDM:
    """Load an RCDM in eval mode.

    Args:
        path: an RCDM run folder (its ``last.pth``) or a ``.pth`` file.
        map_location: where the tensors are loaded.
        weights: ``"ema"`` (the sampling weights) or ``"model"`` (the training weights).

    Returns:
        A :class:`LoadedRCDM`: the model, its config, step, SSL model record and the raw dict.
    """

    path = checkpoint_path(path)
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DejavuError(
            f"{path}: not an RCDM checkpoint (format {obj.get('format') if isinstance(obj, dict) else None!r})"
        )
    cfg = from_dict(RCDMConfig, dict(obj["config"]), source=f"{path} config")
    model = RCDM(cfg, int(obj["rep_dim"]))
    sd = obj.get(weights) or obj["model"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise DejavuError(f"{path}: weights do not fit the stored RCDM config ({str(e).splitlines()[0]})") from None
    model.eval()
    return LoadedRCDM(
        model=model,
        path=path,
        step=int(obj.get("step", 0)),
        config=cfg,
        ssl=dict(obj.get("ssl") or {}),
        fingerprint=obj.get("fingerprint"),
        raw=obj,
    )
