"""The generic launcher: argv clean-up, requeue with --resume, and a real submitit
submission through its in-process "debug" executor."""

import argparse

from dejavu.launch import CliJob, add_launcher_args, strip_launcher_args, submit


def _args(*argv):
    p = argparse.ArgumentParser()
    add_launcher_args(p)
    return p.parse_args(list(argv))


def test_strip_launcher_args():
    argv = [
        "train",
        "--index",
        "a.npy",
        "--launcher",
        "slurm",
        "--nodes=2",
        "--gpus-per-node",
        "4",
        "--slurm-partition",
        "gpu",
        "--time",
        "60",
        "--out",
        "RUN",
        "--set",
        "epochs=3",
    ]
    assert strip_launcher_args(argv) == ["train", "--index", "a.npy", "--out", "RUN", "--set", "epochs=3"]


def test_requeue_appends_resume_once():
    job = CliJob(["train", "--out", "R"])
    assert job.resumed_argv() == ["train", "--out", "R", "--resume"]
    again = job.checkpoint().function  # submitit.helpers.DelayedSubmission
    assert again.argv == ["train", "--out", "R", "--resume"]
    assert again.checkpoint().function.argv == ["train", "--out", "R", "--resume"]


def test_defaults_and_env_partition(monkeypatch):
    a = _args()
    assert a.launcher == "local" and a.nodes == 1 and a.slurm_partition is None


def test_submit_runs_cli_through_submitit(tmp_path):
    out = tmp_path / "synth"
    argv = ["data", "synth", "--out", str(out), "--classes", "2", "--per-class", "3", "--workers", "1"]
    args = _args(
        "--launcher",
        "slurm",
        "--gpus-per-node",
        "1",
        "--cpus-per-task",
        "1",
        "--time",
        "5",
        "--slurm-dir",
        str(tmp_path / "logs"),
    )
    job = submit(argv, args, name="synth", cluster="debug")
    assert job.result() == 0
    assert len(list((out / "train").rglob("*.JPEG"))) == 6


def test_failing_command_fails_the_job(tmp_path):
    # called directly (submitit's debug executor would open a debugger on failure)
    import pytest

    with pytest.raises(RuntimeError, match="exited with status 1"):
        CliJob(["data", "info", str(tmp_path / "missing")])()


def test_requeue_drops_force():
    # a requeued job continues its own run: --force (discard) must not be replayed with --resume
    job = CliJob(["train", "--out", "R", "--force"])
    assert job.resumed_argv() == ["train", "--out", "R", "--resume"]


def test_no_import_cycle_between_launch_modules():
    import subprocess
    import sys

    # job.py must import on its own (it is unpickled on the cluster before dejavu.launch)
    code = "import dejavu.launch.job as j; print(len(j.strip_launcher_args(['--launcher', 'slurm', 'x'])))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_signal_delay_scales_with_time():
    from dejavu.launch import signal_delay

    # a fixed 120 s signalled 3-minute jobs in their first minute (issue 20, item 6)
    assert [signal_delay(_args("--time", str(t))) for t in (1, 3, 10, 30, 4320)] == [20, 20, 60, 120, 120]
    assert signal_delay(_args("--time", "3", "--signal-delay", "45")) == 45
    import pytest

    from dejavu import UsageError

    with pytest.raises(UsageError, match="--signal-delay 200"):
        signal_delay(_args("--time", "3", "--signal-delay", "200"))


def test_slurm_opts_and_cpu_only_parameters():
    import pytest

    from dejavu import UsageError
    from dejavu.launch import _sbatch_parameters, slurm_options

    assert slurm_options(["qos=high", "--mem-per-gpu=32G", "exclusive", "exclude=n[1-2]"]) == {
        "qos": "high",
        "mem_per_gpu": "32G",
        "exclusive": True,
        "exclude": "n[1-2]",
    }
    for bad in ("=x", "qos="):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            slurm_options([bad])
    cpu = _sbatch_parameters(_args("--gpus-per-node", "0", "--slurm-setup", "module load x"), "n")
    assert cpu["tasks_per_node"] == 1 and "gpus_per_node" not in cpu and cpu["slurm_setup"] == ["module load x"]
    assert cpu["cpus_per_task"] == 2  # small by default: nodes are shared
    gpu = _sbatch_parameters(_args("--gpus-per-node", "4", "--slurm-opt", "cpus-per-task=6"), "n")
    assert gpu["tasks_per_node"] == gpu["gpus_per_node"] == 4
    assert gpu["slurm_additional_parameters"] == {"cpus_per_task": "6"}
    argv = ["train", "--slurm-opt", "qos=x", "--slurm-setup=module load y", "--signal-delay", "30", "--out", "R"]
    assert strip_launcher_args(argv) == ["train", "--out", "R"]


def test_slurm_rerun_of_a_finished_attack_is_refused_before_submission(tmp_path, capsys):
    from dejavu.cli import main

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text("{}")
    argv = ["attack", "--model-a", "a.pth", "--model-b", "b.pth", "--partition", "p", "--npc", "10"]
    argv += ["--data", "d", "--out", str(tmp_path / "o"), "--launcher", "slurm"]
    assert main(argv) == 1  # no scheduler needed: nothing is submitted
    assert "an attack already exists here; pass --force" in capsys.readouterr().err
    assert not (tmp_path / "o" / "slurm").exists()


def test_a_finished_job_ignores_the_time_signal(tmp_path):
    """SLURM sends the --time signal up to a minute early: once the command is done it must not
    kill the exiting task (exit 140, a complete job recorded FAILED) nor requeue it."""
    import signal

    before = signal.getsignal(signal.SIGUSR2)
    try:
        out = tmp_path / "s"
        assert CliJob(["data", "synth", "--out", str(out), "--classes", "2", "--per-class", "2"])() == 0
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before)
