"""The launcher against a real SLURM scheduler (``.ci/slurm.sh``; skipped without one)."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from dejavu.launch import add_launcher_args, submit

pytestmark = pytest.mark.slurm


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_launcher_args(p)
    return p.parse_args(["--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "5", *argv])


def test_cpu_job_with_sbatch_options_and_setup_lines(slurm, tmp_path):
    """Items 4 and 7: a CPU-only job (--gpus-per-node 0: one task, no GPU asked), any sbatch option
    through --slurm-opt, setup lines run before the command, all recorded in launch.json."""
    out, logs = tmp_path / "synth", tmp_path / "logs"
    argv = ["data", "synth", "--out", str(out), "--classes", "2", "--per-class", "3", "--workers", "1"]
    opts = ["--slurm-opt", "comment=dejavu-ci", "--slurm-opt=--nice=5", "--slurm-setup", f"echo ran > {tmp_path}/s"]
    job = submit(argv, _args("--slurm-dir", str(logs), *opts), name="synth", cluster="slurm")
    info = slurm.job(job.job_id)
    assert slurm.wait(job.job_id) == "COMPLETED", _log(logs)
    assert len(list((out / "train").rglob("*.JPEG"))) == 6
    assert (info["Comment"], info["Nice"], info["NumTasks"], info["TRES"].count("gres")) == ("dejavu-ci", "5", "1", 0)
    assert (tmp_path / "s").read_text() == "ran\n"
    launch = json.loads((logs / job.job_id / "launch.json").read_text())
    extra = launch["parameters"]["slurm_additional_parameters"]
    assert extra == {"comment": "dejavu-ci", "nice": "5"} and launch["parameters"]["slurm_setup"] == [
        f"echo ran > {tmp_path}/s"
    ]
    assert "gpus_per_node" not in launch["parameters"] and launch["max_requeue"] == 20


def test_refused_submission_is_one_line(slurm, synth_small, partition_small, tmp_path, capsys):
    """Item 4: more GPUs than the partition has (CI: none or 2): sbatch's reason in one line, exit 1."""
    from dejavu.cli import main

    argv = _train(synth_small, partition_small, tmp_path / "r", 1)
    assert main([*argv, "--launcher", "slurm", "--gpus-per-node", "64", "--cpus-per-task", "1", "--time", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert "SLURM refused the job" in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    if "gres" in err:  # a partition without GPUs
        assert "--gpus-per-node 64: so many GPUs there? 0 submits a CPU-only job" in err


SETS = ["batch_size=10", "projector=16-16", "knn_every=0", "warmup_epochs=0", "snapshot_every=4"]
CPU_JOB = ["--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "1", "--time", "10"]


def _train(synth, part, out, epochs, *extra) -> list[str]:
    argv = ["train", "--method", "vicreg", "--data", str(synth), "--index", str(part / "10_per_class" / "train_A.npy")]
    argv += ["--out", str(out), "--device", "cpu", *extra]
    for s in [*SETS, f"epochs={epochs}"]:
        argv += ["--set", s]
    return argv


def _submit(argv, capsys) -> str:
    from dejavu.cli import main

    capsys.readouterr()
    assert main([*argv, *CPU_JOB]) == 0
    out = capsys.readouterr().out
    assert out.startswith("submitted SLURM job "), out
    return out.split()[3].rstrip(":")


def _rows(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["loss"]) for r in rows]


def _saved_epoch(last: Path) -> int:
    try:
        return int(torch.load(last, weights_only=True)["epoch"])
    except Exception:  # not written yet, or being replaced
        return 0


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = (torch.load(p / "last.pth", weights_only=True)["model"] for p in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _log(folder: Path) -> str:
    """The job logs under ``folder`` (a run's OUT, or a --slurm-dir)."""
    return "\n".join(p.read_text() for p in sorted(folder.rglob("*_log.*")))


def test_train_fresh_out_relative_paths_then_rerun(slurm, synth_small, partition_small, tmp_path, capsys, monkeypatch):
    """Issue 20 items 1 and 7: a fresh OUT (its slurm/ logs made before the job starts), paths typed
    relative recorded absolute, the rerun refused at submission without --resume or --force."""
    monkeypatch.chdir(tmp_path)
    for name, src in (("data", synth_small), ("part", partition_small)):
        (tmp_path / name).symlink_to(src)
    argv = _train(Path("data"), Path("part"), Path("run"), 2)
    job = _submit(argv, capsys)
    assert slurm.wait(job) == "COMPLETED", _log(tmp_path / "run")
    assert [e for e, _ in _rows(tmp_path / "run")] == [1, 2]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["index_file"] == str(tmp_path / "part" / "10_per_class" / "train_A.npy")
    launch = json.loads((tmp_path / "run" / "slurm" / job / "launch.json").read_text())
    assert launch["job_id"] == job and launch["cwd"] == str(tmp_path) and launch["argv"] == argv
    sbatch = (tmp_path / "run" / "slurm" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --signal=USR2@60" in sbatch and "#SBATCH --cpus-per-task=1" in sbatch  # --time 10: 60 s

    from dejavu.cli import main

    assert main([*argv, *CPU_JOB]) == 1  # refused here, nothing submitted
    assert "a training run exists here; pass --resume" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "run" / "slurm").iterdir() if not p.name.startswith(".")] == [job]


def _wait_epochs(run: Path, n: int) -> None:
    """Until ``n`` more epochs are in last.pth."""
    deadline, start = time.time() + 90, _saved_epoch(run / "last.pth")
    while _saved_epoch(run / "last.pth") < start + n and time.time() < deadline:
        time.sleep(0.1)


def test_requeue_and_usr2_restarts_resume_bit_identical(slurm, synth_small, partition_small, tmp_path, capsys):
    """Item 2: `scontrol requeue` (SIGTERM, then the original job pickle: what every outside requeue
    does) of a --force run mid-training, then submitit's own signal (USR2, as --time sends): each
    restart resumes from the run's last.pth, not over again (--force applies to the first start
    only); metrics and weights are bit-identical to an uninterrupted local run."""
    from dejavu.cli import main

    epochs = 80  # long enough that the first start, still training for KillWait after SIGTERM, stops midway
    run = tmp_path / "slurm_run"
    job = _submit(_train(synth_small, partition_small, run, epochs, "--force"), capsys)
    try:
        _wait_epochs(run, 4)
        first = (run / "model_ep4.pth").stat()  # made by the first start: starting over would remake it
        slurm.requeue(job)
        slurm.wait(job, until=("PENDING", "REQUEUED"), timeout=30)
        slurm.wait(job, until=("RUNNING",), timeout=60)
        _wait_epochs(run, 1)
        assert _saved_epoch(run / "last.pth") < epochs - 4, "finished before the second interruption"
        subprocess.run(["scancel", "--signal", "USR2", job], check=True)
        assert main(_train(synth_small, partition_small, tmp_path / "local", epochs)) == 0
        assert slurm.wait(job) == "COMPLETED", _log(run)
    finally:
        subprocess.run(["scancel", job], check=False)
    assert int(slurm.job(job)["Restarts"]) == 2
    assert (run / "model_ep4.pth").stat().st_mtime_ns == first.st_mtime_ns, "restarted over again"
    log = _log(run)
    assert "SLURM restart 1 of this job" in log and "this job is timed-out" in log, log
    assert _rows(run) == _rows(tmp_path / "local")
    _same_weights(run, tmp_path / "local")


def test_max_requeue_is_honoured(slurm, synth_small, partition_small, tmp_path, capsys):
    """Item 3: with --max-requeue 0 the first --time signal ends the job (submitit 1.5.4 once
    ignored the option and requeued 3 times)."""
    run = tmp_path / "run"
    job = _submit([*_train(synth_small, partition_small, run, 500), "--max-requeue", "0"], capsys)
    try:
        _wait_epochs(run, 1)
        subprocess.run(["scancel", "--signal", "USR2", job], check=True)
        assert slurm.wait(job) == "FAILED"
    finally:
        subprocess.run(["scancel", job], check=False)
    assert int(slurm.job(job)["Restarts"]) == 0
    assert "timed-out too many times" in _log(run)
    assert json.loads(next((run / "slurm").glob("*/launch.json")).read_text())["max_requeue"] == 0


def test_two_gpu_tasks_train_as_ddp(slurm, synth_small, partition_small, tmp_path, capsys):
    """`--gpus-per-node 2` runs two DDP tasks (CI's scheduler advertises 2 placeholder GPUs:
    .ci/slurm.sh with DEJAVU_SLURM_GPUS=2; the tasks find no CUDA and use gloo on the CPU)."""
    if not slurm.gpus():
        pytest.skip("the scheduler advertises no GPUs (DEJAVU_SLURM_GPUS=2 .ci/slurm.sh start)")
    from dejavu.cli import main

    run = tmp_path / "ddp"
    capsys.readouterr()
    job_argv = ["--launcher", "slurm", "--gpus-per-node", "2", "--cpus-per-task", "1", "--time", "10"]
    assert main([*_train(synth_small, partition_small, run, 2), *job_argv]) == 0
    job = capsys.readouterr().out.split()[3].rstrip(":")
    assert slurm.wait(job) == "COMPLETED", _log(run)
    assert slurm.job(job)["NumTasks"] == "2"
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert [e for e, _ in _rows(run)] == [1, 2]
