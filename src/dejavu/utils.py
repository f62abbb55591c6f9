"""Small shared helpers: progress bars, seeding, torch thread selection."""

from __future__ import annotations

import os
import random
import sys
from typing import Iterable, TypeVar

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


_CHOSEN: int | None = None


def _time_conv(threads: int, reps: int = 3) -> float:
    """Seconds for a small conv forward (the shape of our CPU workloads) with ``threads``."""
    import time

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, 32, 32, generator=g)
    w = torch.randn(64, 32, 3, 3, generator=g)
    F.conv2d(x, w, padding=1)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        F.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - t)
    return best


def measure_threads(max_threads: int | None = None) -> int:
    """Pick the torch thread count by measurement: 1 thread vs all available cores on a
    small conv, twice each, interleaved. More threads must be >15% faster to be chosen:
    on a busy machine oversubscribed threads were measured 6-10x slower than one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = max(1, min(cores, max_threads or cores))
    if n == 1:
        return 1
    t1 = min(_time_conv(1), _time_conv(1))
    tn = min(_time_conv(n), _time_conv(n))
    return n if tn < 0.85 * t1 else 1


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads and return the number. ``None`` chooses by measurement
    (:func:`measure_threads`, once per process); DEJAVU_THREADS overrides both."""
    global _CHOSEN
    import torch

    env = os.environ.get("DEJAVU_THREADS")
    if env:
        n = int(env)
    if n is None:
        if _CHOSEN is None:
            _CHOSEN = measure_threads()
        n = _CHOSEN
    torch.set_num_threads(max(1, int(n)))
    return max(1, int(n))
