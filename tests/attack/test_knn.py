"""Exact KNN: torch and faiss (both streamed in blocks) equal a float64 brute force, near
ties included, whatever the block sizes."""

from __future__ import annotations

import numpy as np
import pytest

from dejavu import DejavuError
from dejavu.attack.knn import knn


def brute(q, p, k):
    """float64 reference, ties by index."""
    d = ((q[:, None, :].astype(np.float64) - p[None, :, :].astype(np.float64)) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(p)), d.shape), d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("block_p", [50, 517, 100000])
def test_backend_matches_brute_force_for_any_block_size(backend, block_p):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(517, 24)).astype(np.float32)
    q = rng.normal(size=(63, 24)).astype(np.float32)
    d, i = knn(q, p, 17, backend=backend, block_q=10, block_p=block_p)
    dr, ir = brute(q, p, 17)
    assert i.shape == (63, 17) and i.dtype == np.int64 and d.dtype == np.float32
    np.testing.assert_allclose(d, dr, rtol=1e-6, atol=1e-6)
    assert np.array_equal(i, ir)


def _near_ties(rng, n_pub=600, dim=512, n_q=40, gap=3e-6):
    """Public points at almost the same distance from each query: pairs p, p' with
    |q - p'|^2 = |q - p|^2 (1 + gap), far below float32's error on |q|^2 - 2q.p + |p|^2."""
    q = (rng.normal(size=(n_q, dim)) * 10 + 30).astype(np.float32)
    pub = []
    for j in range(n_q):
        for _ in range(n_pub // n_q // 2):
            u = rng.normal(size=dim)
            u /= np.linalg.norm(u)
            r = rng.uniform(3, 6)
            pub.append(q[j] + r * u)
            v = rng.normal(size=dim)
            v /= np.linalg.norm(v)
            pub.append(q[j] + r * np.sqrt(1 + rng.choice([-1, 1]) * gap) * v)
    return q, np.asarray(pub, np.float32)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_near_ties_ordered_as_float64(backend):
    rng = np.random.default_rng(7)
    q, p = _near_ties(rng)
    ir = brute(q, p, 10)[1]
    # plain float32 |q|^2 - 2q.p + |p|^2 (the formula every block search uses) misorders some
    d32 = (q * q).sum(1)[:, None] - 2 * q @ p.T + (p * p).sum(1)[None, :]
    naive = np.lexsort((np.broadcast_to(np.arange(len(p)), d32.shape), d32), axis=-1)[:, :10]
    assert (naive != ir).any(1).sum() > 0
    _, i = knn(q, p, 10, backend=backend, block_p=128)
    assert np.array_equal(i, ir)


def test_backends_agree_exactly_with_exact_ties():
    rng = np.random.default_rng(1)
    # integer-valued embeddings create many exact distance ties: both keep the smaller index
    p = rng.integers(0, 3, size=(400, 8)).astype(np.float32)
    q = rng.integers(0, 3, size=(50, 8)).astype(np.float32)
    dt, it = knn(q, p, 30, backend="torch", block_p=64)
    df, if_ = knn(q, p, 30, backend="faiss", block_p=100)
    ir = brute(q, p, 30)[1]
    assert np.array_equal(it, ir) and np.array_equal(if_, ir)
    np.testing.assert_array_equal(dt, df)


def test_streams_a_memmap(tmp_path):
    rng = np.random.default_rng(2)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    np.save(tmp_path / "pub.npy", p)
    mm = np.load(tmp_path / "pub.npy", mmap_mode="r")
    q = rng.normal(size=(20, 16)).astype(np.float32)
    for backend in ("torch", "faiss"):
        _, i = knn(q, mm, 7, backend=backend, block_p=64)
        assert np.array_equal(i, brute(q, p, 7)[1])


def test_k_larger_than_public_and_bad_shapes():
    p = np.eye(3, dtype=np.float32)
    i = knn(p, p, 10, backend="torch")[1]
    assert i.shape == (3, 3) and np.array_equal(i[:, 0], [0, 1, 2])
    with pytest.raises(DejavuError):
        knn(np.zeros((2, 4), np.float32), p, 2)
