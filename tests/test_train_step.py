"""The one optimisation step shared by SSL and RCDM training: NaN/inf check, gradient
clipping, AMP choices; and the shared helpers (index hash, format tags) both stages use."""

import hashlib

import numpy as np
import pytest
import torch

from dejavu import formats
from dejavu.io import index_hash
from dejavu.train_step import NonFiniteLoss, amp_dtype, autocast, check_finite, make_scaler, optimizer_step


def _model_and_loss(scale: float = 1.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    x = torch.randn(16, 8) * scale
    return model, (model(x) ** 2).mean()


def test_optimizer_step_clips_the_gradient_norm():
    model, loss = _model_and_loss(scale=100.0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer_step(loss, opt, make_scaler(torch.device("cpu"), None), clip_grad=0.5)
    norm = float(torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])))
    assert norm == pytest.approx(0.5, rel=1e-4)  # clipped from a norm far above 0.5
    step = float(torch.norm(torch.stack([(p.detach() - b).norm() for p, b in zip(model.parameters(), before)])))
    assert step == pytest.approx(0.5, rel=1e-4)  # SGD lr 1 moved the weights by the clipped gradient


def test_optimizer_step_without_clipping_is_plain_sgd():
    model, loss = _model_and_loss()
    ref = torch.nn.Linear(8, 4)
    ref.load_state_dict(model.state_dict())
    optimizer_step(loss, torch.optim.SGD(model.parameters(), lr=0.1), make_scaler(torch.device("cpu"), None))
    torch.manual_seed(0)
    torch.nn.Linear(8, 4)  # same RNG draws as _model_and_loss
    x = torch.randn(16, 8)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    (ref(x) ** 2).mean().backward()
    opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_check_finite_and_amp_choices():
    assert check_finite(1.5) == 1.5
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteLoss):
            check_finite(bad)
    cpu = torch.device("cpu")
    assert all(amp_dtype(cpu, m) is None for m in ("none", "bf16", "fp16", "auto"))  # AMP on CUDA only
    assert not make_scaler(cpu, torch.float16).is_enabled()
    with autocast(cpu, None):
        assert torch.ones(2).dtype == torch.float32


def test_index_hash_keeps_the_stored_16_char_hashes():
    idx = np.array([5, 1, 9, 3])
    # the formula ssl/train.py and rcdm/train.py used before, whose hashes are stored in runs
    old = hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
    assert index_hash(idx) == old
    assert index_hash(idx.astype(np.int32)) == old  # dtype does not matter, order does
    assert index_hash(idx[::-1]) != old
    assert index_hash(idx, 24).startswith(old) and len(index_hash(idx, 24)) == 24


def test_format_tags_are_the_ones_written():
    from dejavu.probe import FORMAT as PROBE
    from dejavu.rcdm.model import FORMAT as RCDM
    from dejavu.ssl.checkpoint import FORMAT as CKPT

    assert (
        (CKPT, PROBE, RCDM)
        == (formats.CHECKPOINT, formats.PROBE, formats.RCDM)
        == ("dejavu-ckpt/1", "dejavu-probe/1", "dejavu-rcdm/1")
    )
