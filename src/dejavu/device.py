"""The one device chooser every stage uses (train, attack, probe, audit, rcdm)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dejavu import UsageError

if TYPE_CHECKING:
    import torch


def choose_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """The torch device for ``--device``.

    Args:
        device: ``None`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        local_rank: the process's GPU under DDP, used when ``device`` is ``"cuda"`` without index.

    Returns:
        The device. Asking for CUDA where none is available is a usage error (one line),
        not a failure deep inside the first ``.to()``.
    """
    import torch

    if device is None or str(device) == "":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available (use --device cpu)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        elif dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    return dev
