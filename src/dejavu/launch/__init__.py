"""Run any dejavu command locally or on SLURM (through submitit).

Generic on purpose: a job is a python callable named ``"module:function"`` applied
to an argv list (by default ``dejavu.cli:main``), so every stage can offer
``--launcher slurm`` with :func:`add_launcher_args` + :func:`submit`, knowing nothing
of SLURM, and this package knows nothing of any stage.

On SLURM each task of a multi-GPU job exports the torch.distributed environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT via
``submitit.helpers.TorchDistributedEnvironment``) before calling the target, so a
stage that calls ``torch.distributed.init_process_group()`` from the environment
(as ``dejavu train`` does) runs as DDP. On preemption or time-out submitit calls
:meth:`CliJob.checkpoint`, which resubmits the same argv plus ``--resume`` (stages
save their own resumable state; training writes ``last.pth`` every epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

from dejavu import DejavuError, UsageError
from dejavu.io import abspath, atomic_write_json
from dejavu.launch.job import LAUNCHER_OPTIONS, CliJob, strip_launcher_args

CPUS_PER_TASK = 2  # small: a shared cluster's node is split between users (10 stayed pending)

__all__ = ["LAUNCHER_OPTIONS", "CliJob", "add_launcher_args", "strip_launcher_args", "submit", "submit_if_slurm"]


def add_launcher_args(parser: argparse.ArgumentParser, gpus_per_node: int = 8) -> None:
    """Add the ``--launcher`` option group (local or SLURM, and the SLURM resources) to a
    stage's parser; :func:`submit_if_slurm` reads them back.

    Args:
        parser: the stage's parser.
        gpus_per_node: default of ``--gpus-per-node`` (one task per GPU).
    """
    g = parser.add_argument_group("launcher (where the command runs)")
    g.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: run here, in this process (use torchrun for several local GPUs); "
        "slurm: submit through submitit and return (default: %(default)s)",
    )
    g.add_argument("--nodes", type=int, default=1, help="SLURM nodes (default: %(default)s)")
    g.add_argument(
        "--gpus-per-node",
        type=int,
        default=gpus_per_node,
        help="SLURM GPUs per node; one task (DDP process) per GPU; 0: a CPU-only job, one task per node "
        "(default: %(default)s)",
    )
    g.add_argument("--slurm-partition", default=None, help="SLURM partition (default: $SLURM_PARTITION)")
    g.add_argument("--time", type=int, default=4320, help="SLURM time limit in minutes (default: %(default)s)")
    g.add_argument(
        "--cpus-per-task", type=int, default=CPUS_PER_TASK, help="SLURM CPUs per task (default: %(default)s)"
    )
    g.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per node in GB (default: cluster's)")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--constraint", default=None, help="SLURM constraint (e.g. volta32gb)")
    g.add_argument(
        "--slurm-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any sbatch option, repeatable: qos=high, exclude=node[1-2], gres=gpu:a100:8, mem-per-gpu=32G, "
        "reservation=R, exclusive (a flag alone); overrides the options above",
    )
    g.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line run in the job before the command, repeatable (module load ..., conda activate ...)",
    )
    g.add_argument(
        "--signal-delay",
        type=int,
        default=None,
        metavar="S",
        help="seconds before --time at which the job is signalled to requeue itself and resume "
        "(default: a tenth of --time, between 20 and 120)",
    )
    g.add_argument(
        "--slurm-dir", default=None, help="folder for submitit logs and job pickles (default: OUT/slurm or ./slurm)"
    )
    g.add_argument("--job-name", default=None, help="SLURM job name (default: the command name)")
    g.add_argument(
        "--max-requeue",
        type=int,
        default=20,
        help="resubmissions after reaching --time, each resuming; preemptions and `scontrol requeue` "
        "do not count (default: %(default)s)",
    )


def signal_delay(args: argparse.Namespace) -> int:
    """Seconds before the time limit at which SLURM signals the job (``--signal-delay``, else
    a tenth of ``--time`` between 20 and 120 s: a fixed 120 s hit 3-minute jobs in their first
    minute)."""
    if args.signal_delay is not None:
        if not 0 < args.signal_delay < args.time * 60:
            raise UsageError(f"--signal-delay {args.signal_delay}: must be between 1 and --time ({args.time * 60} s)")
        return int(args.signal_delay)
    return int(min(120, max(20, args.time * 6)))


def slurm_options(opts: list[str]) -> dict[str, Any]:
    """``--slurm-opt KEY=VALUE`` (or a bare ``KEY`` flag) as submitit's sbatch parameters;
    ``-`` and ``_`` are one (``mem-per-gpu`` = ``mem_per_gpu``), so a key replaces the
    option of the same name set by the other flags."""
    out: dict[str, Any] = {}
    for o in opts:
        key, eq, val = o.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not key or (eq and not val):
            raise UsageError(f"--slurm-opt {o!r}: expected KEY=VALUE (e.g. qos=high) or a flag KEY (e.g. exclusive)")
        out[key] = val if eq else True
    return out


def _sbatch_parameters(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """submitit ``update_parameters`` of the job (see :func:`submit`)."""

    if min(args.gpus_per_node, args.max_requeue) < 0 or min(args.nodes, args.cpus_per_task, args.time) < 1:
        raise UsageError("--gpus-per-node and --max-requeue must be >= 0; --nodes, --cpus-per-task and --time >= 1")
    params: dict[str, Any] = dict(
        name=args.job_name or name,
        nodes=args.nodes,
        tasks_per_node=max(1, args.gpus_per_node),
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
        slurm_signal_delay_s=signal_delay(args),
    )
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    partition = args.slurm_partition or os.environ.get("SLURM_PARTITION")
    if partition:
        params["slurm_partition"] = partition
    if args.constraint:
        params["slurm_constraint"] = args.constraint
    extra = {"account": args.account} if args.account else {}
    extra.update(slurm_options(args.slurm_opt))
    if extra:
        params["slurm_additional_parameters"] = extra
    if args.slurm_setup:
        params["slurm_setup"] = list(args.slurm_setup)
    return params


def submit(
    argv: list[str],
    args: argparse.Namespace,
    *,
    name: str,
    log_dir: str | Path | None = None,
    target: str = "dejavu.cli:main",
    resume_flag: str | None = "--resume",
    cluster: str | None = None,
):
    """Submit ``target(argv)`` as a SLURM job; returns the submitit Job.

    ``argv`` must be the local form of the command (no launcher options: see
    :func:`strip_launcher_args`). ``cluster`` is passed to ``submitit.AutoExecutor``
    ("debug" runs in-process, for tests). The submission (job id, folder, command,
    sbatch parameters, setup lines) is recorded in ``<folder>/<job id>/launch.json``.

    Args:
        argv: the command's arguments, e.g. ``["train", "--config", "x.yaml"]``.
        args: parsed options of :func:`add_launcher_args` (nodes, GPUs, time in minutes, ...).
        name: job name when ``--job-name`` is not given.
        log_dir: folder for submitit logs when ``--slurm-dir`` is not given (default: ``slurm``);
            each job writes under ``<folder>/<job id>``.
        target: ``"module:function"`` called with ``argv`` on the cluster.
        resume_flag: appended to ``argv`` when the job is requeued or restarted, or None.
        cluster: ``submitit.AutoExecutor``'s ``cluster`` (None: auto-detect).

    Returns:
        The ``submitit.Job``.

    Raises:
        UsageError: a bad launcher option.
        DejavuError: sbatch refused the job (its message).
    """

    import submitit

    folder = abspath(args.slurm_dir or log_dir or "slurm")
    params = _sbatch_parameters(args, name)
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster, slurm_max_num_timeout=args.max_requeue)
    said = io.StringIO()  # submitit prints sbatch's complaints: they go into the one-line error
    try:
        with contextlib.redirect_stderr(said):
            ex.update_parameters(**params)
            job = ex.submit(CliJob(list(argv), target=target, resume_flag=resume_flag))
    except (ValueError, submitit.core.utils.FailedJobError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        hint = ""
        if args.gpus_per_node and ("gres" in msg or "node configuration" in msg):
            hint = f" (--gpus-per-node {args.gpus_per_node}: so many GPUs there? 0 submits a CPU-only job)"
        raise DejavuError(f"SLURM refused the job ({folder}): {msg}{hint}") from None
    sys.stderr.write(said.getvalue())
    record = dict(
        job_id=str(job.job_id),
        cwd=os.getcwd(),
        argv=list(argv),
        target=target,
        resume_flag=resume_flag,
        max_requeue=args.max_requeue,
        parameters=dict(params),
        logs=str(folder / str(job.job_id)),
    )
    atomic_write_json(folder / str(job.job_id) / "launch.json", record)
    return job


def submit_if_slurm(
    args: argparse.Namespace, *, name: str, log_dir: str | Path | None, resume_flag: str | None = None
) -> bool:
    """For a stage's handler: with ``--launcher slurm``, submit the same command (as typed,
    launcher options removed; ``dejavu.cli.main`` stores it in ``args.argv``) and return True.

    The one way every stage resubmits itself: nothing re-lists the stage's flags, so a new
    flag can never be lost on the way to the cluster. ``resume_flag`` (e.g. ``--resume``)
    is appended when SLURM requeues the job after preemption or time-out.

    Args:
        args: the stage's parsed options (``launcher``, the SLURM options and ``argv``).
        name: job name when ``--job-name`` is not given.
        log_dir: folder for submitit logs when ``--slurm-dir`` is not given.
        resume_flag: appended on requeue, or None.

    Returns:
        True when the job was submitted (the handler should stop), False to run locally.

    Raises:
        RuntimeError: ``--launcher slurm`` but ``args.argv`` is missing.
    """
    if getattr(args, "launcher", "local") != "slurm":
        return False
    argv = strip_launcher_args(list(getattr(args, "argv", None) or []))
    if not argv:
        raise RuntimeError("submit_if_slurm: args.argv missing (call through dejavu.cli.main)")
    job = submit(argv, args, name=name, log_dir=log_dir, resume_flag=resume_flag)
    print(f"submitted SLURM job {job.job_id}: dejavu {' '.join(argv)}")
    return True
