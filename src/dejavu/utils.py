"""Small shared helpers: progress bars, seeding, torch thread selection (deterministic)."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kw) -> Iterable[T]:
    """A tqdm progress bar on stderr; off when DEJAVU_NO_PROGRESS=1.

    Worker processes that run side by side (the demo trains A and B at once) set
    DEJAVU_PROGRESS_POSITION (terminal line) and DEJAVU_PROGRESS_PREFIX so their bars
    do not overwrite each other."""
    from tqdm.auto import tqdm

    disable = os.environ.get("DEJAVU_NO_PROGRESS", "") not in ("", "0")
    kw.setdefault("position", int(os.environ.get("DEJAVU_PROGRESS_POSITION", "0") or 0))
    desc = os.environ.get("DEJAVU_PROGRESS_PREFIX", "") + desc
    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False, **kw)


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: taskset, SLURM cpus-per-task)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(n: int | None = None) -> int:
    """The torch thread count, chosen without any timing (floating-point results depend
    on it, so the same command must get the same count): DEJAVU_THREADS if set, else
    ``n``, else OMP_NUM_THREADS (torchrun sets 1 per process), else the usable cores shared
    among the node's processes (``usable_cores() // LOCAL_WORLD_SIZE``)."""
    for value in (os.environ.get("DEJAVU_THREADS"), n, os.environ.get("OMP_NUM_THREADS")):
        if value not in (None, "", 0):
            try:
                return max(1, int(value))  # type: ignore[arg-type]
            except ValueError:
                continue  # e.g. OMP_NUM_THREADS="4,2" (nested levels): not ours to parse
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, usable_cores() // max(1, local))


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to :func:`choose_threads` ``(n)`` and return it."""
    import torch

    k = choose_threads(n)
    torch.set_num_threads(k)
    return k
