"""CPUSyncBatchNorm outside a process group behaves as nn.BatchNorm: outputs, running
statistics and the batch count, with a fixed momentum and with ``momentum=None`` (the
cumulative average)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dejavu.ssl.ddp import CPUSyncBatchNorm


@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_batchnorm_without_a_process_group(momentum):
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4, momentum=momentum)
    ours = CPUSyncBatchNorm(4, momentum=momentum)
    ours.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(8, 4, 5, 5) * 3 + 1
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-5)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
