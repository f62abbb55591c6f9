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
from pathlib import Path

from dejavu.launch.job import LAUNCHER_OPTIONS, CliJob, strip_launcher_args

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
        help="SLURM GPUs per node; one task (DDP process) per GPU (default: %(default)s)",
    )
    g.add_argument("--slurm-partition", default=None, help="SLURM partition (default: $SLURM_PARTITION)")
    g.add_argument("--time", type=int, default=4320, help="SLURM time limit in minutes (default: %(default)s)")
    g.add_argument("--cpus-per-task", type=int, default=10, help="SLURM CPUs per task (default: %(default)s)")
    g.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per node in GB (default: cluster's)")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--constraint", default=None, help="SLURM constraint (e.g. volta32gb)")
    g.add_argument(
        "--slurm-dir", default=None, help="folder for submitit logs and job pickles (default: OUT/slurm or ./slurm)"
    )
    g.add_argument("--job-name", default=None, help="SLURM job name (default: the command name)")
    g.add_argument(
        "--max-requeue",
        type=int,
        default=20,
        help="resubmissions after preemption or time-out, each resuming (default: %(default)s)",
    )


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
    ("debug" runs in-process, for tests).

    Args:
        argv: the command's arguments, e.g. ``["train", "--config", "x.yaml"]``.
        args: parsed options of :func:`add_launcher_args` (nodes, GPUs, time in minutes, ...).
        name: job name when ``--job-name`` is not given.
        log_dir: folder for submitit logs when ``--slurm-dir`` is not given (default: ``slurm``);
            each job writes under ``<folder>/<job id>``.
        target: ``"module:function"`` called with ``argv`` on the cluster.
        resume_flag: appended to ``argv`` when the job is requeued, or None.
        cluster: ``submitit.AutoExecutor``'s ``cluster`` (None: auto-detect).

    Returns:
        The ``submitit.Job``.
    """
    import os

    import submitit

    folder = Path(args.slurm_dir or log_dir or "slurm")
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params = dict(
        name=args.job_name or name,
        nodes=args.nodes,
        tasks_per_node=args.gpus_per_node,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
    )
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    partition = args.slurm_partition or os.environ.get("SLURM_PARTITION")
    if partition:
        params["slurm_partition"] = partition
    extra = {}
    if args.account:
        extra["account"] = args.account
    if args.constraint:
        params["slurm_constraint"] = args.constraint
    if extra:
        params["slurm_additional_parameters"] = extra
    params["slurm_signal_delay_s"] = 120
    ex.update_parameters(**params)
    with contextlib.suppress(Exception):
        ex.update_parameters(slurm_max_num_timeout=args.max_requeue)
    return ex.submit(CliJob(list(argv), target=target, resume_flag=resume_flag))


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
