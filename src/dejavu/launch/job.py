"""The picklable job submitit runs, and argv clean-up for the remote side."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import Any

LAUNCHER_OPTIONS = {  # option -> takes a value
    "--launcher": True,
    "--nodes": True,
    "--gpus-per-node": True,
    "--slurm-partition": True,
    "--time": True,
    "--cpus-per-task": True,
    "--mem-gb": True,
    "--slurm-dir": True,
    "--job-name": True,
    "--max-requeue": True,
    "--account": True,
    "--constraint": True,
    "--slurm-opt": True,
    "--slurm-setup": True,
    "--signal-delay": True,
}


def _resolve(target: str):
    mod, _, fn = target.partition(":")
    if not fn:
        raise ValueError(f"target {target!r}: expected 'module:function'")
    return getattr(importlib.import_module(mod), fn)


def restart_count() -> int:
    """How many times SLURM restarted this job (``SLURM_RESTART_COUNT``: 0 on its first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def _ignore_time_signal() -> None:
    """The work is done: the --time signal (SLURM sends it up to a minute early) arriving now
    must neither requeue the finished job nor kill its exiting task (exit 140: the job was
    recorded FAILED with its outputs complete)."""
    import signal

    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if sig is not None:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(sig, signal.SIG_IGN)


class CliJob:
    """``target(argv)`` in the job; a non-zero int return fails the job.

    ``checkpoint`` (called by submitit on its signal: preemption / time-out) requeues the
    same command with ``resume_flag`` appended once, so the stage continues from its last
    saved state. A job requeued from outside (``scontrol requeue``, a preemption by
    SIGTERM, a node failure) restarts from the original pickle: there ``SLURM_RESTART_COUNT``
    says it is a restart, and the job runs :meth:`resumed_argv` too. ``--force`` applies to
    the first start only.
    """

    def __init__(self, argv: list[str], target: str = "dejavu.cli:main", resume_flag: str | None = "--resume"):
        self.argv = list(argv)
        self.target = target
        self.resume_flag = resume_flag

    def __call__(self) -> Any:
        try:
            import submitit

            env = submitit.JobEnvironment()
            if env.num_tasks > 1:
                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        except RuntimeError:  # not inside a submitit job (called directly)
            pass
        argv = self.argv
        if restart_count() > 0:
            argv = self.resumed_argv()
            print(f"SLURM restart {restart_count()} of this job: dejavu {' '.join(argv)}", file=sys.stderr, flush=True)
        rc = _resolve(self.target)(argv)
        if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
            raise RuntimeError(f"{self.target} {' '.join(argv)} exited with status {rc}")
        _ignore_time_signal()
        return rc

    def resumed_argv(self) -> list[str]:
        """The requeued command: ``resume_flag`` appended once; ``--force`` dropped, since a
        requeued job must continue its own run, not discard it again."""
        if self.resume_flag and self.resume_flag not in self.argv:
            return [a for a in self.argv if a != "--force"] + [self.resume_flag]
        return list(self.argv)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(CliJob(self.resumed_argv(), self.target, self.resume_flag))


def strip_launcher_args(argv: list[str]) -> list[str]:
    """Remove launcher options (``--launcher slurm``, ``--nodes 2``, ``--time=60`` ...)
    so the job runs the local form of the same command."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0]
        if key in LAUNCHER_OPTIONS:
            i += 1 if "=" in a or not LAUNCHER_OPTIONS[key] else 2
            continue
        out.append(a)
        i += 1
    return out
