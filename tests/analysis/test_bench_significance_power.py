"""Power with 3 and 5 pairs in bench/bench_significance.py, on generated neighbour arrays."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dejavu.analysis.metrics import ARRAYS
from dejavu.analysis.tables import scores_from_arrays

C, K, N = 10, 10, 100


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_significance.py"
    spec = importlib.util.spec_from_file_location("bench_significance", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pair(rng, p_memo: float):
    """The four X_attk_Y scores: model X attacking set Y; X == Y memorizes with ``p_memo``."""
    out = {}
    for name in ARRAYS:
        own = name[0] == name[-1]
        labels = np.arange(N) % C
        noise = rng.integers(C, size=(N, K))
        hit = rng.random(N) < (p_memo if own else 0.0)
        neighb = np.where(hit[:, None], labels[:, None], noise)
        idx = np.arange(N) + (0 if name.endswith("A") else N)
        out[name] = scores_from_arrays({"attk_idxs": idx, "labels": labels, "neighb_labels": neighb}, K, C)
    return out


def test_subset_power_detects_a_strong_effect_and_not_a_null_one():
    bench = _bench()
    rng = np.random.default_rng(0)
    strong = [(_pair(rng, 0.6), _pair(rng, 0.0)) for _ in range(5)]
    null = [(_pair(rng, 0.0), _pair(rng, 0.0)) for _ in range(5)]
    ps = bench.subset_power(strong, n_boot=200)
    assert ps["3"]["subsets"] == 10 and ps["5"]["subsets"] == 1
    assert ps["3"]["power"] == 1.0 and ps["5"]["detected"] == 1
    assert ps["5"]["ci95"][0] > 0 and ps["3"]["ci95"][1] == 1.0
    pn = bench.subset_power(null, n_boot=200)
    assert pn["3"]["power"] <= 0.2 and pn["3"]["ci95"][0] == 0.0
    assert "7" not in bench.subset_power(null, sizes=(7,), n_boot=50)
