"""Small shared helpers: progress bars, seeding, torch thread selection (deterministic)."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Sized
from typing import TypeVar

T = TypeVar("T")


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class LogProgress:
    """Progress for logs, used when stderr is not a terminal (a SLURM log, a pipe, CI).

    A redrawn tqdm bar is one unreadable line of carriage returns in a log file; this
    prints whole lines instead: one when the loop starts, one when an item completes and
    at least ``interval`` seconds have passed since the last line (so long epochs get one
    line each), and one when the loop ends. Supports the part of tqdm's API we use
    (iteration, ``set_postfix``, ``update``, ``close``).
    """

    def __init__(
        self,
        iterable: Iterable[T] | None,
        desc: str,
        total: int | None,
        interval: float = 30.0,
        file=None,
        unit: str = "it",
        **_ignored,
    ) -> None:
        import time

        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self.n, self.postfix, self.interval = 0, "", interval
        self.file = file or sys.stderr
        self._clock = time.monotonic
        self._t0 = self._last = self._clock()
        self._closed = False
        self._line("started")

    def _line(self, what: str) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        el = self._clock() - self._t0
        rate = f", {self.n / el:.2f} {self.unit}/s" if el > 0 and self.n else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc}: {what} {self.n}{of} {self.unit} in {el:.0f}s{rate}{post}", file=self.file, flush=True)
        self._last = self._clock()

    def __iter__(self):
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._clock() - self._last >= self.interval:
            self._line("at")

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line("done")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kw) -> Iterable[T]:
    """Progress of a long loop on stderr: a tqdm bar on a terminal, whole lines otherwise.

    Off (nothing printed) with ``DEJAVU_NO_PROGRESS=1`` or tqdm's own ``TQDM_DISABLE=1``.
    When stderr is not a terminal (SLURM logs, pipes) it prints :class:`LogProgress`
    lines instead of redrawing a bar (``DEJAVU_PROGRESS_INTERVAL`` seconds apart at most,
    default 30). Worker processes that run side by side (the demo trains A and B at once)
    set DEJAVU_PROGRESS_POSITION (terminal line) and DEJAVU_PROGRESS_PREFIX so their
    bars do not overwrite each other.

    Args:
        iterable: the loop's iterable.
        desc: what the loop does, shown before the count.
        total: number of items when ``iterable`` has no length.
        **kw: passed to tqdm (e.g. ``unit``).

    Returns:
        An iterable over the same items (a tqdm bar or a :class:`LogProgress`).
    """
    from tqdm.auto import tqdm

    desc = os.environ.get("DEJAVU_PROGRESS_PREFIX", "") + desc
    if _env_on("DEJAVU_NO_PROGRESS") or _env_on("TQDM_DISABLE"):
        return tqdm(iterable, desc=desc, total=total, disable=True, **kw)
    if not sys.stderr.isatty():
        interval = float(os.environ.get("DEJAVU_PROGRESS_INTERVAL", "30") or 30)
        return LogProgress(iterable, desc, total, interval=interval, **kw)
    kw.setdefault("position", int(os.environ.get("DEJAVU_PROGRESS_POSITION", "0") or 0))
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, dynamic_ncols=True, leave=False, **kw)


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
                return max(1, int(value))
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
