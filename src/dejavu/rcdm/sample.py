"""DDIM sampling from an RCDM.

Decision: deterministic DDIM (``eta = 0``) from an explicit starting noise. Two RCDMs
(target and control) given the *same* noise tensor differ only through their weights and
the representation they condition on, so their samples are directly comparable; the same
noise and representation give the same images (checkpoint round trips are testable).
"""

from __future__ import annotations

import torch

from dejavu.rcdm.model import RCDM, make_scheduler
from dejavu.utils import progress


def make_noise(n: int, image_size: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Starting noise ``(n, 3, S, S)`` from a seeded CPU generator (identical on every device).

    Args:
        n: number of images.
        image_size: side S in pixels.
        seed: the generator's seed.
        device: where the returned tensor goes.

    Returns:
        float32 standard normal noise.
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, 3, image_size, image_size, generator=g).to(device)


@torch.no_grad()
def sample(
    model: RCDM,
    reps: torch.Tensor,
    noise: torch.Tensor | None = None,
    ddim_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress_desc: str | None = None,
) -> torch.Tensor:
    """Draw one image per representation by DDIM.

    Args:
        model: the RCDM (eval mode).
        reps: ``(n, rep_dim)`` conditioning representations.
        noise: the starting noise ``(n, 3, S, S)`` (default: :func:`make_noise` with ``seed``).
        ddim_steps: DDIM steps (default: the model's config).
        seed: see ``noise``.
        batch_size: images per forward pass.
        progress_desc: a progress bar's label, or None.

    Returns:
        Images in ``[-1, 1]``, shape ``(n, 3, S, S)``.
    """

    cfg = model.cfg
    device = next(model.parameters()).device
    n = reps.shape[0]
    if noise is None:
        noise = make_noise(n, cfg.image_size, seed)
    if noise.shape[0] != n:
        raise ValueError(f"noise has {noise.shape[0]} rows but reps has {n}")
    sched = make_scheduler(cfg, "ddim")
    sched.set_timesteps(int(ddim_steps or cfg.ddim_steps))
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, n, batch_size):
        x = noise[s : s + batch_size].to(device).float()
        r = reps[s : s + batch_size].to(device)
        cond = model.condition(r)  # the projection does not depend on t: compute it once
        it = sched.timesteps
        if progress_desc:
            it = progress(it, desc=progress_desc)
        for t in it:
            tt = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
            eps = model.unet(x, tt, class_labels=cond).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        out.append(x.clamp(-1, 1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else noise.new_zeros((0, 3, cfg.image_size, cfg.image_size))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` ``(n, 3, H, W)`` -> uint8 ``(n, H, W, 3)`` for saving and plotting."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
