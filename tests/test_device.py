import pytest
import torch

from dejavu import UsageError
from dejavu.device import choose_device


def test_default_and_cpu():
    assert choose_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA device"):
        choose_device("cuda")


def test_garbage_is_a_usage_error():
    with pytest.raises(UsageError, match="expected cpu, cuda"):
        choose_device("tpu7")
