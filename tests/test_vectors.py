"""The FAISS index against brute force: same ids, same scores, same order."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import VectorIndex

DIM = 24


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(1234)
    ids = rng.choice(np.arange(10, 100_000), size=300, replace=False).astype(np.int64)
    vectors = unit_vectors(rng, len(ids))
    queries = unit_vectors(rng, 10)
    index = VectorIndex(DIM)
    index.add(ids.tolist(), vectors)
    return index, ids, vectors, queries


def brute_force(ids, vectors, query, k):
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


@pytest.mark.parametrize("k", [1, 5, 17, 300, 1000])
def test_search_equals_brute_force(data, k):
    index, ids, vectors, queries = data
    assert len(index) == len(ids)
    for query in queries:
        got_ids, got_scores = index.search(query, k)
        want_ids, want_scores = brute_force(ids, vectors, query, k)
        assert len(got_ids) == min(k, len(ids))
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-5)
        assert np.all(np.diff(got_scores) <= 1e-6)  # best first
        # Random floats make ties vanishingly unlikely, so the ids agree exactly.
        assert got_ids.tolist() == want_ids.tolist()


def test_search_on_empty_index_and_k_zero():
    index = VectorIndex(DIM)
    query = unit_vectors(np.random.default_rng(0), 1)[0]
    ids, scores = index.search(query, 5)
    assert len(ids) == 0 and len(scores) == 0
    index.add([7], query[None, :])
    ids, _ = index.search(query, 0)
    assert len(ids) == 0


def test_removed_ids_are_never_returned(data):
    index, ids, vectors, queries = data
    gone = ids[::3]
    assert index.remove(gone.tolist()) == len(gone)
    assert len(index) == len(ids) - len(gone)
    keep = np.isin(ids, gone, invert=True)
    for query in queries:
        got_ids, got_scores = index.search(query, len(ids))
        assert not set(got_ids.tolist()) & set(gone.tolist())
        want_ids, want_scores = brute_force(ids[keep], vectors[keep], query, len(ids))
        assert got_ids.tolist() == want_ids.tolist()
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    assert index.remove([]) == 0
    assert index.remove(gone[:2].tolist()) == 0  # already gone


def test_vectors_returns_the_stored_vectors_in_the_order_asked(data):
    index, ids, vectors, _ = data
    pick = [5, 0, 299, 42, 5]
    got = index.vectors(ids[pick].tolist())
    np.testing.assert_array_equal(got, vectors[pick])
    assert index.vectors([]).shape == (0, DIM)


def test_vectors_survive_removal_of_others(data):
    index, ids, vectors, _ = data
    index.remove(ids[:100].tolist())
    np.testing.assert_array_equal(index.vectors(ids[150:160].tolist()), vectors[150:160])


def test_save_and_load_round_trip(data, tmp_path):
    index, ids, vectors, queries = data
    index.remove(ids[:10].tolist())
    path = tmp_path / "v.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, DIM)
    assert len(loaded) == len(index)
    for query in queries:
        a_ids, a_scores = index.search(query, 25)
        b_ids, b_scores = loaded.search(query, 25)
        assert a_ids.tolist() == b_ids.tolist()
        np.testing.assert_array_equal(a_scores, b_scores)
    np.testing.assert_array_equal(loaded.vectors(ids[10:20].tolist()), vectors[10:20])


def test_dimension_mismatch_is_refused(data, tmp_path):
    index, ids, vectors, _ = data
    with pytest.raises(ValueError):
        index.add([1], np.ones((1, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError):
        index.add([1], np.ones(DIM, dtype=np.float32))  # one vector, not a 2-d batch
    with pytest.raises(ValueError):
        index.add([1, 2], np.ones((1, DIM), dtype=np.float32))  # ids and vectors disagree
    path = tmp_path / "v.faiss"
    index.save(path)
    with pytest.raises(ValueError):
        VectorIndex.load(path, DIM * 2)
    assert len(index) == len(ids)  # refused additions changed nothing
