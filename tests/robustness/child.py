"""Runs ``dejavu.cli.main(argv)`` in a child process, optionally with a fault injected.

``DEJAVU_TEST_KILL_AT=<file name>:<n>``: on the n-th atomic rename onto a file of that name,
truncate the finished temporary file to half its size and SIGKILL this process -- a job
killed in the middle of writing a result (nothing runs after SIGKILL: no cleanup).
``DEJAVU_TEST_FSIZE=<bytes>``: RLIMIT_FSIZE (as ``ulimit -f``) with SIGXFSZ ignored, so a
write past the limit fails with EFBIG as on a full disk.
``DEJAVU_TEST_HOLD_AT=<file name>:<flag>``: at the first atomic rename onto a file of that
name, create ``<flag>.reached`` and wait until ``<flag>`` exists (a run paused mid-write).
"""

from __future__ import annotations

import os
import signal
import sys


def _install_kill(spec: str) -> None:
    name, n = spec.rsplit(":", 1)
    seen = {"n": 0}
    real = os.replace

    def replace(src, dst, *a, **kw):
        if os.path.basename(str(dst)) == name:
            seen["n"] += 1
            if seen["n"] == int(n):
                size = os.path.getsize(src)
                os.truncate(src, size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **kw)

    os.replace = replace


def _install_hold(spec: str) -> None:
    import time

    name, flag = spec.split(":", 1)
    real = os.replace
    done = {"held": False}

    def replace(src, dst, *a, **kw):
        if os.path.basename(str(dst)) == name and not done["held"]:
            done["held"] = True
            open(flag + ".reached", "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.05)
        return real(src, dst, *a, **kw)

    os.replace = replace


def main() -> int:
    if os.environ.get("DEJAVU_TEST_HOLD_AT"):
        _install_hold(os.environ["DEJAVU_TEST_HOLD_AT"])
    if os.environ.get("DEJAVU_TEST_KILL_AT"):
        _install_kill(os.environ["DEJAVU_TEST_KILL_AT"])
    if os.environ.get("DEJAVU_TEST_FSIZE"):
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        lim = int(os.environ["DEJAVU_TEST_FSIZE"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))
    from dejavu.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
