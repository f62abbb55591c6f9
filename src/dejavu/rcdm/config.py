"""RCDM settings (no torch import: ``dejavu rcdm train --help`` builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dejavu import DejavuError
from dejavu.config import check_choices

IMAGE_SIZES = (32, 64, 128, 256)


@dataclass
class RCDMConfig:
    """Everything that defines an RCDM and its training. Defaults: the tiny CPU config."""

    image_size: int = field(default=32, metadata={"help": "RCDM resolution", "choices": IMAGE_SIZES})
    # tiny CPU UNet: [16, 32, 64] without attention measured 0.31 s/step at batch 32 on one
    # core, [32, 64, 64] with attention at 8 px 0.78 s/step (the full-resolution convs dominate)
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    attention_resolutions: list[int] = field(default_factory=list)  # feature-map sizes with self-attention
    layers_per_block: int = 1
    attention_head_dim: int = 16
    norm_num_groups: int = 8
    resblock_updown: bool = False  # guided-diffusion's resblock_updown (diffusers "resnet" up/down sampling)
    dropout: float = 0.0
    # auto (logits for supervised models, else both) | both | logits
    cond: str = field(default="auto", metadata={"choices": ("auto", "both", "logits")})
    cond_hidden: int = 512  # hidden width of the representation projection; 0 = one Linear
    diffusion_steps: int = 250
    beta_schedule: str = field(default="linear", metadata={"choices": ("linear",)})  # the paper's
    # training
    steps: int = field(default=2000, metadata={"help": "training steps (optimizer updates)"})
    batch_size: int = field(default=32, metadata={"help": "images per step (per process)"})
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    snapshot_every: int = 1000
    log_every: int = 50
    amp: bool = True  # on CUDA only
    num_workers: int = 0
    ssl_batch_size: int = 256
    cache_images_gb: float = 4.0  # keep the training images in memory (uint8) below this size
    seed: int = 0
    # sampling
    ddim_steps: int = 50

    def validate(self) -> None:
        check_choices(self)
        n_levels = len(self.block_out_channels)
        if n_levels < 2:
            raise DejavuError("rcdm block_out_channels needs at least two levels")
        if self.image_size % (2 ** (n_levels - 1)):
            raise DejavuError(f"rcdm image_size {self.image_size} is not divisible by 2^{n_levels - 1}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise DejavuError(
                    f"rcdm block_out_channels {c} not divisible by norm_num_groups {self.norm_num_groups}"
                )
        for name in ("diffusion_steps", "steps", "batch_size", "ddim_steps", "snapshot_every", "log_every"):
            if getattr(self, name) < 1:
                raise DejavuError(f"rcdm {name} must be >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise DejavuError("rcdm ema_decay must be in [0, 1)")

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4
