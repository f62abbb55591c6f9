"""The attack across processes: ``torchrun --nproc_per_node 2 -m dejavu attack`` on
the CPU (gloo) writes the same bytes as one process, and the sharded exact KNN merges
exactly (ties by index across ranks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from dejavu.attack.dist import batch_bounds
from dejavu.attack.knn import knn, knn_exact, merge_topk
from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"


def _tied_data(seed: int = 0):
    """Queries and a public set with exact duplicates (equal distances: the order is by index)
    and near-ties that float32 reorders."""
    rng = np.random.default_rng(seed)
    pub = rng.standard_normal((150, 24)).astype(np.float32)
    pub[100:130] = pub[:30]  # duplicates, in the other rank's half
    pub[130:140] = pub[40:50] + np.float32(1e-7)
    q = np.concatenate([pub[:20] + 0.01, rng.standard_normal((37, 24)).astype(np.float32)])
    return q, pub


def test_batch_bounds_split_whole_batches():
    assert batch_bounds(100, 16, 2) == [(0, 48), (48, 100)]
    assert batch_bounds(10, 16, 2) == [(0, 0), (0, 10)]
    assert batch_bounds(0, 16, 3) == [(0, 0), (0, 0), (0, 0)]
    b = batch_bounds(1000, 7, 8)
    assert b[0][0] == 0 and b[-1][1] == 1000 and all(lo % 7 == 0 for lo, _ in b)
    assert all(b[r][1] == b[r + 1][0] for r in range(7))


@pytest.mark.parametrize("cuts", [(0, 75, 150), (0, 11, 100, 150), (0, 0, 150)])
def test_merged_shard_lists_equal_one_search(cuts):
    q, pub = _tied_data()
    k = 17
    parts_d, parts_i = [], []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        d, i = knn_exact(q, pub[lo:hi], k)
        parts_d.append(np.pad(d, ((0, 0), (0, k - d.shape[1])), constant_values=np.inf))
        parts_i.append(np.pad(i + lo, ((0, 0), (0, k - i.shape[1])), constant_values=np.iinfo(np.int64).max))
    d, i = merge_topk(np.concatenate(parts_d, 1), np.concatenate(parts_i, 1), k)
    d1, i1 = knn(q, pub, k)
    assert np.array_equal(i, i1) and np.array_equal(d.astype(np.float32), d1)
    assert (i1[:20, 0] < 30).all() and (i1[:20, 1] >= 100).all()  # the tie goes to the smaller index


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _knn_worker(rank: int, world: int, port: int, out: str, block_q: int) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from dejavu.attack import dist

    dist.setup("cpu")
    q, pub = _tied_data()
    qb, pb = batch_bounds(len(q), 8), batch_bounds(len(pub), 32)
    qs = dist.sharded(q[slice(*qb[rank])], qb)
    ps = dist.sharded(pub[slice(*pb[rank])], pb)
    d, i = dist.knn(qs, ps, 17, backend="torch", block_q=block_q)
    full = dist.gather(qs)
    if rank == 0:
        np.savez(out, d=d, i=i, full=full)
    else:
        assert d.shape == (len(q), 0) and full.shape == (len(q), 0)
    dist.barrier()


@pytest.mark.ddp
def test_two_process_knn_equals_one_process(tmp_path):
    out = tmp_path / "knn.npz"
    mp.spawn(_knn_worker, args=(2, _free_port(), str(out), 13), nprocs=2, join=True)
    got = np.load(out)
    q, pub = _tied_data()
    d1, i1 = knn(q, pub, 17)
    assert np.array_equal(got["i"], i1) and np.array_equal(got["d"], d1)
    assert np.array_equal(got["full"], q)


@pytest.fixture(scope="module")
def ckpts(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist_ckpts")
    idx = scan_imagefolder(synth_small / "train")
    make_checkpoint(d / "a.pth", idx, "A", 10, seed=31)
    make_checkpoint(d / "b.pth", idx, "B", 10, seed=32)
    return d


def _attack_args(ckpts, synth_small, partition_small, out, extra=()):
    return [
        "attack",
        *("--model-a", str(ckpts / "a.pth"), "--model-b", str(ckpts / "b.pth")),
        *("--partition", str(partition_small), "--npc", "10", "--data", str(synth_small)),
        *("--out", str(out), "--k", "23", "--k-attk", "10", "--bootstrap", "30", "--batch-size", "16"),
        *extra,
    ]


def _torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "DEJAVU_THREADS": "1",
        "DEJAVU_NO_PROGRESS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*cmd, "-m", "dejavu", *args], capture_output=True, text=True, env=env, timeout=600)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _same_files(one: Path, two: Path) -> None:
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b)
    assert [n for n in a if a[n] != b[n]] == []


@pytest.fixture(scope="module")
def partition_control(synth_small, tmp_path_factory):
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import partition

    out = tmp_path_factory.mktemp("dist_part") / "part"
    partition(DataPaths.resolve(data=synth_small), [10], out, control=4)
    return out


@pytest.mark.ddp
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="cached-auto"),
        pytest.param(("--cache-dir", "", "--knn", "torch"), id="no-cache-torch-control", marks=pytest.mark.slow),
    ],
)
def test_torchrun_two_processes_write_the_same_bytes(ckpts, synth_small, partition_small, tmp_path, extra, request):
    if extra:  # with the held-out control: its crops, searches and files too
        partition_small = request.getfixturevalue("partition_control")
    one, two = tmp_path / "one" / "att", tmp_path / "two" / "att"
    assert main(_attack_args(ckpts, synth_small, partition_small, one, extra)) == 0
    p = _torchrun(2, _attack_args(ckpts, synth_small, partition_small, two, extra))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("written to") == 1  # rank 0 reports, once
    _same_files(one.parent, two.parent)  # the attack folders, and the embedding caches
    res = json.loads((two / "results.json").read_text())
    assert res["counts"]["A"]["attacked"] > 32  # both ranks embedded crops (batches of 16)
    if not extra:
        assert len(list((two.parent / ".embed_cache").glob("*.npy"))) == 2
    else:
        assert "control" in res and (two / "control_A_attk_A_neighb_idxs.npy").exists()


def test_slurm_attack_asks_one_task_per_gpu(monkeypatch, ckpts, synth_small, partition_small, tmp_path):
    """``--launcher slurm --gpus-per-node N --nodes M``: N tasks per node, each a rank of the
    same distributed attack (submitit exports RANK/WORLD_SIZE/LOCAL_RANK, read by
    :func:`dejavu.attack.dist.setup`)."""
    submitit = pytest.importorskip("submitit")
    seen: dict = {}

    class Executor:
        def __init__(self, folder, cluster=None, **kw):
            seen["folder"] = folder

        def update_parameters(self, **kw):
            seen.update(kw)

        def submit(self, job):
            seen["argv"] = job.argv
            return type("Job", (), {"job_id": "42"})()

    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    out = tmp_path / "att"
    args = _attack_args(ckpts, synth_small, partition_small, out)
    assert main([*args, "--launcher", "slurm", "--gpus-per-node", "4", "--nodes", "2"]) == 0
    assert (seen["nodes"], seen["tasks_per_node"], seen["gpus_per_node"]) == (2, 4, 4)
    assert seen["argv"] == args  # the local command, launcher options removed
    assert not (out / "results.json").exists()
