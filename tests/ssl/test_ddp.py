"""DDP on the CPU (gloo, 2 processes): one optimisation step on a global batch split in
two equals one single-process step on the whole batch (losses gathered over ranks,
BatchNorm synchronised), to float tolerance."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from dejavu.ssl.registry import METHODS


def _cfg(method):
    from dejavu.ssl.config import load_train_config

    # SGD: the update is linear in the gradient, so float noise stays float noise
    # (Adam's first step is ~lr*sign(g) and would amplify it).
    return load_train_config(
        None,
        [
            "projector=32-16",
            "optimizer=sgd",
            "lr=0.1",
            "absolute_lr=true",
            "warmup_epochs=0",
            "epochs=1",
            "weight_decay=0",
            "num_classes=10",
        ],
        method=method,
    )


def _batch():
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(2)]
    labels = torch.randint(0, 10, (8,), generator=g)
    return views, labels


def _step(method, views, labels):
    from dejavu.ssl.methods.base import StepInfo
    from dejavu.ssl.train import build_engine, train_step

    eng = build_engine(_cfg(method), torch.device("cpu"))
    nv = eng.method.num_views
    loss = train_step(eng, views[:nv], labels, StepInfo(0, 10, 0))
    return loss, {k: v.detach().clone() for k, v in eng.model.state_dict().items()}


def _worker(rank, world, port, out):
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    from dejavu.ssl.ddp import init_distributed

    init_distributed("cpu")
    views, labels = _batch()
    per = len(labels) // world
    sl = slice(rank * per, (rank + 1) * per)
    res = {}
    for m in METHODS:
        res[m] = _step(m, [v[sl] for v in views], labels[sl])
    if rank == 0:
        torch.save(res, out)
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_step_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    views, labels = _batch()
    for m in METHODS:
        loss, sd = _step(m, views, labels)
        dloss, dsd = ddp[m]
        # the logged DDP loss is the mean of the ranks' losses (VICReg: per-rank invariance means)
        assert dloss == pytest.approx(loss, rel=1e-4), m
        for k in sd:
            torch.testing.assert_close(dsd[k].float(), sd[k].float(), rtol=1e-4, atol=1e-5, msg=f"{m}: {k}")
        changed = any(not torch.equal(sd[k], _init(m)[k]) for k in sd if k.endswith("weight"))
        assert changed, m


def _init(m):
    from dejavu.ssl.train import build_engine

    return build_engine(_cfg(m), torch.device("cpu")).model.state_dict()
