"""Small shared helpers: progress bars, seeding, torch thread selection."""

from __future__ import annotations

import os
import random
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kw) -> Iterable[T]:
    """A tqdm progress bar on stderr; off when DEJAVU_NO_PROGRESS=1."""
    from tqdm.auto import tqdm

    disable = os.environ.get("DEJAVU_NO_PROGRESS", "") not in ("", "0")
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


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads. ``None`` picks by load: 1 when the machine is
    busy (oversubscribed threads were measured 6-10x slower here), else the free cores.
    The environment variable DEJAVU_THREADS overrides."""
    import torch

    env = os.environ.get("DEJAVU_THREADS")
    if env:
        n = int(env)
    if n is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            load1 = 0.0
        free = max(1, int(round(cores - load1)))
        n = max(1, min(cores, free))
    torch.set_num_threads(n)
    return n
