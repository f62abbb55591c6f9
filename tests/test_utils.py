import os

import torch

from dejavu.utils import choose_threads, set_torch_threads, usable_cores


def test_set_torch_threads_explicit_and_env(monkeypatch):
    monkeypatch.delenv("DEJAVU_THREADS", raising=False)
    assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("DEJAVU_THREADS", "1")
    assert set_torch_threads(None) == 1


def test_default_threads_are_the_usable_cores_never_a_timing(monkeypatch):
    monkeypatch.delenv("DEJAVU_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == cores
    assert {choose_threads() for _ in range(5)} == {cores}  # the same answer every time, whatever the load
    assert choose_threads(2) == 2
    torch.set_num_threads(1)


def test_thread_sources_in_order(monkeypatch):
    for k in ("DEJAVU_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * usable_cores()))
    assert choose_threads() == 1  # torchrun: the cores shared among the node's processes
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads() == 3 and choose_threads(2) == 2
    monkeypatch.setenv("DEJAVU_THREADS", "5")
    assert choose_threads(2) == 5
