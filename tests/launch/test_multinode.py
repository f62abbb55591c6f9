"""DDP across two "nodes" on one machine (issue 20, item 5): two `torchrun --nnodes 2` launchers
meet through a c10d rendezvous on localhost, one gloo process each, and train the same weights
as one process with the same global batch (to float tolerance: the gradient is averaged over
ranks, measured 3e-4 apart after 10 steps). Augmentation off: each rank draws its own augmentation, one process draws another."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dejavu

SETS = ["epochs=1", "batch_size=20", "projector=16-16", "optimizer=sgd", "lr=0.02", "absolute_lr=true"]
SETS += ["warmup_epochs=0", "weight_decay=0", "knn_every=0", "augment=none", "snapshot_every=1"]


def _train(synth, part, out) -> list[str]:
    argv = ["-m", "dejavu", "train", "--method", "vicreg", "--data", str(synth), "--device", "cpu"]
    argv += ["--index", str(part / "10_per_class" / "train_A.npy"), "--out", str(out)]
    for s in SETS:
        argv += ["--set", s]
    return argv


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.slow
def test_two_nodes_by_torchrun_equal_one_process(synth_small, partition_small, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(dejavu.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    env["DEJAVU_THREADS"] = "1"
    rdzv = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", "dejavu-test"]
    rdzv += ["--rdzv-endpoint", f"127.0.0.1:{_port()}"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rdzv,
        *_train(synth_small, partition_small, tmp_path / "ddp"),
    ]
    nodes = [
        subprocess.Popen(torchrun, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "01"
    ]
    single = subprocess.run(
        [sys.executable, *_train(synth_small, partition_small, tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    logs = [n.communicate(timeout=300)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(logs)
    assert single.returncode == 0, single.stderr

    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    a = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "one" / "last.pth", weights_only=True)["model"]
    rows = [json.loads((tmp_path / r / "metrics.jsonl").read_text())["loss"] for r in ("ddp", "one")]
    assert rows[0] == pytest.approx(rows[1], rel=1e-5)
    for k in b:  # 5 SGD steps of float noise (the gradient summed in another order)
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-3, msg=k)
