"""Results do not depend on machine load: a CPU run SIGKILL-ed after a snapshot and resumed
ends bit-identical to an uninterrupted run of the same command, with NO DEJAVU_THREADS (or
OMP_NUM_THREADS) set for the child: the thread count is chosen without timing and the
resumed run reuses the recorded one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dejavu

SETS = ["epochs=8", "batch_size=10", "projector=32-32", "knn_every=0", "warmup_epochs=0", "snapshot_every=1"]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("DEJAVU_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(dejavu.__file__).parents[1])
    env["DEJAVU_NO_PROGRESS"] = "1"
    return env


def _cmd(synth, index, out, *extra):
    argv = [
        sys.executable,
        "-m",
        "dejavu",
        "train",
        "--method",
        "vicreg",
        "--data",
        str(synth),
        "--index",
        str(index),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    for s in SETS:
        argv += ["--set", s]
    return argv


def _saved_epoch(last: Path) -> int:
    try:
        return int(torch.load(last, weights_only=True)["epoch"])
    except Exception:  # not written yet, or being replaced
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(synth_small, partition_small, tmp_path):
    index = partition_small / "10_per_class" / "train_A.npy"
    full, part = tmp_path / "full", tmp_path / "part"
    subprocess.run(_cmd(synth_small, index, full), env=_env(), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(
        _cmd(synth_small, index, part), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while _saved_epoch(part / "last.pth") < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = _saved_epoch(part / "last.pth")
    assert 2 <= killed_at < 8
    subprocess.run(_cmd(synth_small, index, part, "--resume"), env=_env(), check=True, capture_output=True, timeout=600)

    a = torch.load(full / "last.pth", weights_only=True)
    b = torch.load(part / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    threads = json.loads((full / "config.json").read_text())["torch_threads"]
    assert a["torch_threads"] == b["torch_threads"] == threads >= 1
    assert json.loads((part / "config.json").read_text())["torch_threads"] == threads


def _interrupted(cfg, paths, index, out, stop_after, monkeypatch, resume=False):
    """The real loop, interrupted (KeyboardInterrupt, as a kill) once last.pth of ``stop_after`` is saved."""
    import dejavu.ssl.train as T

    orig = T.atomic_torch_save

    def save_then_stop(path, obj):
        orig(path, obj)
        if path.name == "last.pth" and obj["epoch"] == stop_after:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(T, "atomic_torch_save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, paths, index, out, resume=resume, device="cpu")


def test_resume_reuses_the_recorded_thread_count(synth_small, partition_small, tmp_path, monkeypatch):
    from dejavu.data.imagefolder import DataPaths
    from dejavu.ssl.config import load_train_config

    monkeypatch.delenv("DEJAVU_THREADS", raising=False)
    paths = DataPaths.resolve(data=synth_small)
    index = partition_small / "5_per_class" / "train_A.npy"
    sets = ["projector=16-16", "knn_every=0", "warmup_epochs=0", "batch_size=25", "epochs=3"]
    out = tmp_path / "r"
    _interrupted(load_train_config(None, [*sets, "threads=1"], method="vicreg"), paths, index, out, 1, monkeypatch)
    assert torch.load(out / "last.pth", weights_only=True)["torch_threads"] == 1
    torch.set_num_threads(3)
    # threads=0 (automatic): the resumed run takes the recorded count, not the cores
    _interrupted(load_train_config(None, sets, method="vicreg"), paths, index, out, 2, monkeypatch, resume=True)
    assert torch.get_num_threads() == 1
    assert json.loads((out / "config.json").read_text())["torch_threads"] == 1
    # DEJAVU_THREADS still overrides
    monkeypatch.setenv("DEJAVU_THREADS", "2")
    from dejavu.ssl.train import train

    train(load_train_config(None, sets, method="vicreg"), paths, index, out, resume=True, device="cpu")
    assert torch.load(out / "last.pth", weights_only=True)["torch_threads"] == 2
    torch.set_num_threads(1)


def test_thread_choice_is_deterministic(monkeypatch):
    from dejavu.utils import choose_threads, set_torch_threads, usable_cores

    for k in ("DEJAVU_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert choose_threads() == usable_cores() == len(os.sched_getaffinity(0))
    assert choose_threads(3) == 3
    monkeypatch.setenv("DEJAVU_THREADS", "1")
    assert choose_threads(3) == 1 and set_torch_threads(None) == 1 and torch.get_num_threads() == 1
