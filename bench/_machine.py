"""What machine a bench ran on, for the headers the benches append to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
    """The CPU model and core count (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"
