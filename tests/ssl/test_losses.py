"""Each loss against an independent, loop-based formula on tiny tensors."""

import math

import pytest
import torch

from dejavu.ssl.losses import BarlowTwinsLoss, DINOLoss, byol_loss, ntxent_loss, vicreg_loss


def _z(seed, n=6, d=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_vicreg_formula():
    a, b = _z(0)
    n, d = a.shape
    inv = sum(((a[i] - b[i]) ** 2).sum() for i in range(n)) / (n * d)

    def var(x):
        return sum(max(0.0, 1 - math.sqrt(float(x[:, j].var(unbiased=True)) + 1e-4)) for j in range(d)) / d

    def cov(x):
        xc = x - x.mean(0)
        c = xc.T @ xc / (n - 1)
        return sum(float(c[i, j]) ** 2 for i in range(d) for j in range(d) if i != j) / d

    expect = 25 * float(inv) + 25 * (var(a) + var(b)) / 2 + 1 * (cov(a) + cov(b))
    assert float(vicreg_loss()(a, b)) == pytest.approx(expect, rel=1e-5)


def test_ntxent_formula():
    a, b = _z(1)
    t = 0.15
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(denom))
    assert float(ntxent_loss(t)(a, b)) == pytest.approx(total / (2 * n), rel=1e-5)


def test_barlow_formula():
    a, b = _z(2)
    n, d = a.shape
    lam = 0.0051

    def std(x):
        mu = x.mean(0)
        return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(0) + 1e-5)

    sa, sb = std(a), std(b)
    c = [[float(sum(sa[k, i] * sb[k, j] for k in range(n))) / n for j in range(d)] for i in range(d)]
    expect = sum((1 - c[i][i]) ** 2 for i in range(d)) + lam * sum(
        c[i][j] ** 2 for i in range(d) for j in range(d) if i != j
    )
    assert float(BarlowTwinsLoss(lam)(a, b)) == pytest.approx(expect, rel=1e-5)
    # perfectly correlated, standardised identical inputs with orthogonal dims -> near-zero on-diagonal loss
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(BarlowTwinsLoss(lam)(x, x)) < 1e-3


def test_byol_formula():
    p, z = _z(3)
    expect = sum(2 - 2 * float(p[i] @ z[i]) / (float(p[i].norm()) * float(z[i].norm())) for i in range(len(p))) / len(p)
    assert float(byol_loss(p, z)) == pytest.approx(expect, rel=1e-5)
    assert float(byol_loss(z, 3 * z)) == pytest.approx(0.0, abs=1e-6)


def test_dino_formula_and_center():
    s1, s2 = _z(4, n=3, d=4)
    t1, t2 = _z(5, n=3, d=4)
    loss = DINOLoss(out_dim=4, student_temp=0.1, center_momentum=0.9)
    loss.center.fill_(0.5)
    tt = 0.04

    def softmax(v, temp):
        e = [math.exp(float(x) / temp) for x in v]
        return [x / sum(e) for x in e]

    def ce(t, s):
        return sum(
            -sum(pt * math.log(ps) for pt, ps in zip(softmax(t[i] - 0.5, tt), softmax(s[i], 0.1)))
            for i in range(len(t))
        ) / len(t)

    expect = (ce(t1, s2) + ce(t2, s1)) / 2
    got = loss([s1, s2], [t1, t2], tt)
    assert float(got) == pytest.approx(expect, rel=1e-5)
    mean = torch.cat([t1, t2]).mean(0)
    torch.testing.assert_close(loss.center[0], 0.9 * 0.5 + 0.1 * mean)
