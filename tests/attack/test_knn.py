"""Exact KNN: torch (blocked) and faiss agree with a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from dejavu import DejavuError
from dejavu.attack.knn import knn


def brute(q, p, k):
    d = ((q[:, None, :].astype(np.float64) - p[None, :, :]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(p)), d.shape), d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_backend_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(517, 24)).astype(np.float32)
    q = rng.normal(size=(63, 24)).astype(np.float32)
    kw = {"block_q": 10, "block_p": 50} if backend == "torch" else {"block_q": 10}
    d, i = knn(q, p, 17, backend=backend, **kw)
    dr, ir = brute(q, p, 17)
    assert i.shape == (63, 17) and i.dtype == np.int64
    np.testing.assert_allclose(d, dr, rtol=1e-4, atol=1e-4)
    assert np.array_equal(i, ir)


def test_backends_agree_up_to_ties():
    rng = np.random.default_rng(1)
    # integer-valued embeddings create many exact distance ties
    p = rng.integers(0, 3, size=(400, 8)).astype(np.float32)
    q = rng.integers(0, 3, size=(50, 8)).astype(np.float32)
    dt, it = knn(q, p, 30, backend="torch", block_p=64)
    df, if_ = knn(q, p, 30, backend="faiss")
    np.testing.assert_allclose(dt, df, atol=1e-5)
    for r in range(len(q)):
        kth = dt[r, -1]
        # strictly closer than the k-th distance: identical sets; at the k-th distance: any tie
        assert set(it[r][dt[r] < kth - 1e-5]) == set(if_[r][df[r] < kth - 1e-5])
        # within a tied distance the torch backend orders by index
        for v in np.unique(dt[r]):
            sel = it[r][dt[r] == v]
            assert np.all(np.diff(sel) > 0)


def test_k_larger_than_public_and_bad_shapes():
    p = np.eye(3, dtype=np.float32)
    d, i = knn(p, p, 10, backend="torch")
    assert i.shape == (3, 3) and np.array_equal(i[:, 0], [0, 1, 2])
    with pytest.raises(DejavuError):
        knn(np.zeros((2, 4), np.float32), p, 2)
