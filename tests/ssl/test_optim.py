import itertools
import math

import pytest
import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.optim import LARS, build_optimizer, lr_at, param_groups


def test_lars_step_matches_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = LARS(param_groups([lin], 0.1), lr=0.5, weight_decay=0.1, momentum=0.9, eta=0.001)
    lin(torch.randn(4, 3)).pow(2).sum().backward()
    gw, gb = lin.weight.grad.clone(), lin.bias.grad.clone()
    opt.step()
    dw = gw + 0.1 * w0
    q = 0.001 * w0.norm() / dw.norm()
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.5 * q * dw)
    # 1-D parameters: no weight decay and no adaptation
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.5 * gb)


def test_no_decay_on_1d_for_adamw():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    opt = build_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.5), [m])
    wd = {p.ndim: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd == {2: 0.5, 1: 0.0}


def test_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.001) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lr_at(100, 100, 10, 1.0, 0.001) == pytest.approx(0.001)
    assert lrs[55] == pytest.approx(0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_effective_lr():
    assert TrainConfig(lr=0.2, batch_size=1024, absolute_lr=False).effective_lr == pytest.approx(0.8)
    assert TrainConfig(lr=2e-3, batch_size=100, absolute_lr=True).effective_lr == pytest.approx(2e-3)
