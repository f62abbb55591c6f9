"""Both views go through the network as ONE batch (the original's ``images_big``), so
BatchNorm statistics span both views: every method's loss equals the joint-forward
formula written here independently of the losses module, and differs from the loss of
the views forwarded one at a time."""

import pytest
import torch
import torch.nn.functional as F

from dejavu.ssl.config import load_train_config
from dejavu.ssl.methods.base import StepInfo
from dejavu.ssl.train import build_engine

SETS = {
    "vicreg": [],
    "simclr": [],
    "barlow": [],
    "byol": ["byol.hidden=24"],
    "dino": ["dino.out_dim=20", "dino.warmup_teacher_temp_epochs=0", "dino.teacher_temp=0.04"],
}


def _engine(method):
    cfg = load_train_config(None, ["projector=32-16", "knn_every=0", "warmup_epochs=0", *SETS[method]], method=method)
    eng = build_engine(cfg, torch.device("cpu"))
    eng.trainable.train()
    return eng


def _views():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(8, 3, 16, 16, generator=g) * (1 + v) + v for v in range(2)]


def _off(c):
    return c - torch.diag(torch.diag(c))


def _vicreg(a, b):
    def var_cov(x):
        xc = x - x.mean(0)
        std = torch.sqrt(x.var(0) + 1e-4)
        cov = xc.T @ xc / (len(x) - 1)
        return torch.relu(1 - std).mean(), _off(cov).pow(2).sum() / x.shape[1]

    (va, ca), (vb, cb) = var_cov(a), var_cov(b)
    return 25 * F.mse_loss(a, b) + 25 * (va + vb) / 2 + ca + cb


def _ntxent(a, b, t=0.15):
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    sim = z @ z.T / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, pos)


def _barlow(a, b, lambd=0.0051):
    def bn(x):
        return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)

    c = bn(a).T @ bn(b) / len(a)
    return (torch.diag(c) - 1).pow(2).sum() + lambd * _off(c).pow(2).sum()


def _expected(method, eng, views, joint: bool):
    """The method's loss from its modules, views forwarded jointly or one at a time."""
    m, meth = eng.model, eng.method

    def fwd(net):
        if joint:
            return list(net(torch.cat(views)).chunk(2))
        return [net(v) for v in views]

    with torch.no_grad():
        if method == "vicreg":
            return _vicreg(*fwd(lambda x: m(x)[1]))
        if method == "simclr":
            return _ntxent(*fwd(lambda x: m(x)[1]))
        if method == "barlow":
            return _barlow(*fwd(lambda x: m(x)[1]))
        if method == "byol":
            p1, p2 = fwd(lambda x: meth.predictor(m(x)[1]))
            t1, t2 = fwd(lambda x: meth.teacher[1](meth.teacher[0](x)))
            return sum((2 - 2 * F.cosine_similarity(p, t, dim=-1)).mean() for p, t in ((p1, t2), (p2, t1)))
        s = fwd(lambda x: meth.prototypes(m(x)[1]))
        t = fwd(lambda x: meth.teacher[2](meth.teacher[1](meth.teacher[0](x))))
        q = [F.softmax((x - meth.loss.center) / 0.04, dim=-1) for x in t]
        terms = [
            (-q[i] * F.log_softmax(s[j] / 0.1, dim=-1)).sum(-1).mean() for i in range(2) for j in range(2) if i != j
        ]
        return sum(terms) / len(terms)


@pytest.mark.parametrize("method", list(SETS))
def test_loss_is_the_joint_forward_formula(method):
    eng = _engine(method)
    views = _views()
    joint = float(_expected(method, eng, views, joint=True))
    separate = float(_expected(method, eng, views, joint=False))
    loss, _ = eng.trainable(views, torch.zeros(8, dtype=torch.long), StepInfo(0, 10, 0))
    assert float(loss.detach()) == pytest.approx(joint, rel=1e-5, abs=1e-6), method
    # BatchNorm over both views changes the value: the per-view forward is a different loss
    assert abs(separate - joint) > 1e-4 * max(1.0, abs(joint)), (method, joint, separate)


def test_supervised_trains_on_one_view():
    cfg = load_train_config(
        None, ["projector=32-16", "knn_every=0", "warmup_epochs=0", "num_classes=4"], method="supervised"
    )
    eng = build_engine(cfg, torch.device("cpu"))
    eng.trainable.train()
    x = _views()[0]
    y = torch.arange(8) % 4
    loss, _ = eng.trainable([x], y, StepInfo(0, 10, 0))
    with torch.no_grad():
        expect = F.cross_entropy(eng.model.classifier(eng.model(x)[1]), y)
        # the original forwarded view 1 twice (repeat(2)): the same loss
        twice = F.cross_entropy(eng.model.classifier(eng.model(x.repeat(2, 1, 1, 1))[1]), y.repeat(2))
    assert float(loss.detach()) == pytest.approx(float(expect), rel=1e-6)
    assert float(twice) == pytest.approx(float(expect), rel=1e-5)
