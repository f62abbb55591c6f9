"""The optimisation step shared by SSL training (:mod:`dejavu.ssl.train`) and RCDM training
(:mod:`dejavu.rcdm.train`): AMP autocast, the fp16 grad scaler, gradient clipping and the
NaN/inf check, written once.

A step is ``with autocast(...): loss = ...`` then ``check_finite(value)`` then
:func:`optimizer_step`. The loss value checked may be the loss averaged over DDP ranks, so
every rank stops at the same step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch

AMP_MODES = ("none", "bf16", "fp16", "auto")


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; ``args[0]`` is its value."""


def amp_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype of ``mode`` on ``device``; None = full precision.

    Args:
        device: the training device (AMP is used on CUDA only).
        mode: ``none``, ``bf16``, ``fp16`` or ``auto`` (bf16 where the GPU supports it, else fp16).

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None.
    """
    if device.type != "cuda" or mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A grad scaler, enabled only for fp16 on CUDA (bf16 and fp32 need none).

    Args:
        device: the training device.
        dtype: the autocast dtype (:func:`amp_dtype`), or None.

    Returns:
        The ``torch.amp.GradScaler`` (a pass-through when disabled).
    """
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` at ``dtype``; a no-op when ``dtype`` is None.

    Args:
        device: the device whose autocast is used.
        dtype: ``torch.bfloat16``/``torch.float16``, or None.
    """
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        yield


def check_finite(value: float) -> float:
    """``value`` if finite, else :class:`NonFiniteLoss` (the caller names the run and step)."""
    if not math.isfinite(value):
        raise NonFiniteLoss(value)
    return value


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip_grad: float = 0.0,
    params: Iterable[torch.Tensor] | None = None,
) -> None:
    """Backward (scaled), optional clipping of the gradient norm, optimizer and scaler step.

    Args:
        loss: the loss of this step (not yet backpropagated).
        optimizer: its gradients are zeroed first.
        scaler: from :func:`make_scaler`.
        clip_grad: max gradient norm; 0 = no clipping.
        params: the clipped parameters (default: all of the optimizer's).
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        ps = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(ps, clip_grad)
    scaler.step(optimizer)
    scaler.update()
