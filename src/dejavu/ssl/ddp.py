"""Distributed helpers: process-group setup from torchrun/submitit env vars, and
synchronised BatchNorm.

``torch.nn.SyncBatchNorm`` is used on CUDA. It refuses CPU tensors, so for CPU
(gloo) runs -- the 2-process test, debugging without GPUs -- we convert to
:class:`CPUSyncBatchNorm`: the same statistics over the global batch from an
autograd-aware all-reduce of (sum, sum of squares, count). Keys of the state dict
are unchanged, so checkpoints are identical in layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by RANK/WORLD_SIZE/LOCAL_RANK (torchrun,
    or submitit after ``TorchDistributedEnvironment().export()``). No env = one process."""
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, ws, local)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def _average_factor(self) -> float:
        """Counts this training batch and returns the running-stats factor, as nn.BatchNorm:
        ``momentum``, or ``1 / batches seen`` (a cumulative average) when it is None."""
        nbt = self.num_batches_tracked
        if not self.track_running_stats or nbt is None:
            return 0.0 if self.momentum is None else self.momentum
        nbt.add_(1)
        return 1.0 / float(nbt) if self.momentum is None else self.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            factor = self._average_factor() if self.training else 0.0
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                self.training or self.running_mean is None,
                factor,
                self.eps,
            )
        import torch.distributed.nn as dist_nn

        dims = [0] + list(range(2, x.dim()))
        c = x.shape[1]
        local_n = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), local_n])
        stats = dist_nn.all_reduce(stats)
        s, ss, n = stats[:c], stats[c : 2 * c], stats[2 * c]
        mean = s / n
        var = ss / n - mean * mean
        rm, rv, nbt = self.running_mean, self.running_var, self.num_batches_tracked
        if self.track_running_stats and rm is not None and rv is not None and nbt is not None:
            with torch.no_grad():
                m = self._average_factor()
                rm.mul_(1 - m).add_(mean.detach(), alpha=m)
                rv.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """BatchNorm layers made to average their statistics over all processes.

    Args:
        module: the model (converted recursively).
        device_type: ``"cuda"``: ``torch.nn.SyncBatchNorm``; otherwise this module's
            :class:`CPUSyncBatchNorm` (all-reduce through ``torch.distributed.nn``).

    Returns:
        The converted module (may be a new object; use the return value).
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
