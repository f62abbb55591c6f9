import os

import torch

from dejavu.utils import measure_threads, set_torch_threads


def test_set_torch_threads_explicit_and_env(monkeypatch):
    monkeypatch.delenv("DEJAVU_THREADS", raising=False)
    assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("DEJAVU_THREADS", "1")
    assert set_torch_threads(None) == 1


def test_measure_threads_in_range():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = measure_threads()
    assert n == 1 or n == cores
    assert measure_threads(max_threads=1) == 1
    torch.set_num_threads(1)
