"""The FAISS index against brute force: same ids, same scores, same order.

The index keeps vectors in float16; the test data are unit vectors rounded to
float16, so that brute force over them is what the index must find exactly.
``test_vectors_are_kept_in_float16`` checks the rounding of any vector."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import VectorIndex

DIM = 24


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return as_stored(v / np.linalg.norm(v, axis=1, keepdims=True))


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float16 holds them."""
    return vectors.astype(np.float16).astype(np.float32)


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


def _assert_same_answers(index, loaded, queries, ids, vectors) -> None:
    """``loaded`` finds what ``index`` finds, with the same scores, and holds the same vectors."""
    for query in queries:
        a_ids, a_scores = index.search(query, 25)
        b_ids, b_scores = loaded.search(query, 25)
        assert a_ids.tolist() == b_ids.tolist()
        np.testing.assert_array_equal(a_scores, b_scores)
    np.testing.assert_array_equal(loaded.vectors(ids[10:20].tolist()), vectors[10:20])


def test_save_and_load_round_trip(data, tmp_path):
    index, ids, vectors, queries = data
    index.remove(ids[:10].tolist())
    path = tmp_path / "v.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, DIM)
    assert len(loaded) == len(index)
    _assert_same_answers(index, loaded, queries, ids, vectors)


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


# -- size-chosen structure: flat below a threshold, IVF above ----------------------------

import faiss  # noqa: E402

import embeddings.vectors as vectors_module  # noqa: E402

SMALL = 1000  # flat_max for these tests, so that a few thousand vectors make an IVF


@pytest.fixture
def few_probes(monkeypatch):
    """Probe 12 lists (of 63 for 4000 vectors), so that small test indexes are really approximate.

    On ``clustered`` data one probe gives recall@10 near 0.66, so a search that ignored
    nprobe would fail the recall checks.
    """
    monkeypatch.setattr(vectors_module, "NPROBE_MIN", 12)
    monkeypatch.setattr(vectors_module, "NPROBE_DIVISOR", 10**9)


def clustered(rng: np.random.Generator, n: int, centres: int = 40, spread: float = 1.2) -> np.ndarray:
    c = unit_vectors(rng, centres)
    v = c[rng.integers(centres, size=n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return as_stored(v / np.linalg.norm(v, axis=1, keepdims=True))


def near(rng: np.random.Generator, vectors: np.ndarray, n: int) -> np.ndarray:
    q = vectors[rng.choice(len(vectors), size=n, replace=False)]
    q = q + 0.5 * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(DIM)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def recall_at(index, ids, vectors, queries, k=10, allowed=None):
    hits = 0
    for query in queries:
        got, _ = index.search(query, k, allowed=allowed)
        want, _ = brute_force(ids, vectors, query, k)
        hits += len(set(got.tolist()) & set(want.tolist()))
    return hits / (k * len(queries))


@pytest.fixture
def big(few_probes, tmp_path):
    rng = np.random.default_rng(99)
    n = 4000
    ids = rng.choice(np.arange(1, 10_000_000), size=n, replace=False).astype(np.int64)
    vectors = clustered(rng, n)
    index = VectorIndex(DIM, flat_max=SMALL)
    index.add(ids.tolist(), vectors)
    assert index.kind == "flat"  # adding alone never changes the structure
    index.save(tmp_path / "big.faiss")
    assert index.kind == "ivf"
    return index, ids, vectors, near(rng, vectors, 50)


def test_flat_until_the_threshold_then_ivf_at_save(tmp_path):
    rng = np.random.default_rng(5)
    vectors = clustered(rng, SMALL)
    index = VectorIndex(DIM, flat_max=SMALL)
    index.add(list(range(SMALL - 1)), vectors[:-1])
    index.save(tmp_path / "a.faiss")
    assert index.kind == "flat" and VectorIndex.load(tmp_path / "a.faiss", DIM, flat_max=SMALL).kind == "flat"
    index.add([SMALL - 1], vectors[-1:])
    assert index.kind == "flat"
    index.save(tmp_path / "b.faiss")
    assert index.kind == "ivf" and len(index) == SMALL
    assert isinstance(faiss.read_index(str(tmp_path / "b.faiss")), faiss.IndexIVFScalarQuantizer)
    assert VectorIndex.load(tmp_path / "b.faiss", DIM, flat_max=SMALL).kind == "ivf"
    assert index.describe().startswith("ivf nlist=")


def test_ivf_is_approximate_but_recall_at_10_is_high(big):
    index, ids, vectors, queries = big
    ivf = index._index
    assert ivf.nprobe < ivf.nlist  # a real approximation: not every list is scanned
    assert recall_at(index, ids, vectors, queries) >= 0.95
    for query in queries[:5]:  # scores are exact inner products, best first
        got, scores = index.search(query, 10)
        rows = [int(np.flatnonzero(ids == i)[0]) for i in got]
        np.testing.assert_allclose(scores, vectors[rows] @ query, atol=1e-5)
        assert np.all(np.diff(scores) <= 1e-6)


def test_ivf_finds_a_stored_vector_first(big):
    index, ids, vectors, _ = big
    for row in (0, 17, 3999):
        got, scores = index.search(vectors[row], 1)
        assert got.tolist() == [ids[row]] and scores[0] == pytest.approx(vectors[row] @ vectors[row], abs=1e-5)


def test_ivf_returns_k_results_even_when_the_probed_lists_hold_fewer(big):
    index, ids, vectors, queries = big
    got, scores = index.search(queries[0], len(ids) + 10)
    assert sorted(got.tolist()) == sorted(ids.tolist())
    want, want_scores = brute_force(ids, vectors, queries[0], len(ids))
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_ivf_remove_add_and_vectors(big, tmp_path):
    index, ids, vectors, queries = big
    gone = ids[::4]
    assert index.remove(gone.tolist() + [gone[0].item(), 123_456_789_000]) == len(gone)  # repeats, unknowns
    assert len(index) == len(ids) - len(gone)
    assert index.remove(gone[:3].tolist()) == 0
    keep = np.isin(ids, gone, invert=True)
    for query in queries:
        got, _ = index.search(query, 50)
        assert not set(got.tolist()) & set(gone.tolist())
    assert recall_at(index, ids[keep], vectors[keep], queries) >= 0.95
    with pytest.raises(RuntimeError):
        index.vectors([gone[0].item()])
    pick = np.flatnonzero(keep)[[3, 0, 500, 3]]
    np.testing.assert_array_equal(index.vectors(ids[pick].tolist()), vectors[pick])

    rng = np.random.default_rng(7)
    new_ids = np.arange(20_000_000, 20_000_100, dtype=np.int64)
    new_vectors = clustered(rng, 100)
    index.add(new_ids.tolist(), new_vectors)
    np.testing.assert_array_equal(index.vectors(new_ids[[5, 99]].tolist()), new_vectors[[5, 99]])
    got, _ = index.search(new_vectors[42], 1)
    assert got.tolist() == [new_ids[42]]
    all_ids = np.concatenate([ids[keep], new_ids])
    all_vectors = np.concatenate([vectors[keep], new_vectors])
    assert recall_at(index, all_ids, all_vectors, queries) >= 0.95
    index.save(tmp_path / "again.faiss")  # still the same size class: no rebuild
    assert index.kind == "ivf" and len(index) == len(all_ids)


def test_ivf_allowed_is_exact(big):
    index, ids, vectors, queries = big
    rng = np.random.default_rng(3)
    # Enough ids that probing lists in proportion would still skip some: exact only by scoring them.
    rows = rng.choice(len(ids), size=1500, replace=False)
    allowed = ids[rows]
    for query in queries:
        got, scores = index.search(query, 10, allowed=allowed.tolist())
        want, want_scores = brute_force(allowed, vectors[rows], query, 10)
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # Unknown or removed ids in ``allowed`` are ignored, as with a flat index.
    index.remove(allowed[:100].tolist())
    with_strangers = allowed.tolist() + [987_654_321]
    for query in queries[:5]:
        got, scores = index.search(query, 10, allowed=with_strangers)
        want, want_scores = brute_force(allowed[100:], vectors[rows[100:]], query, 10)
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    got, _ = index.search(queries[0], 2000, allowed=with_strangers)
    assert sorted(got.tolist()) == sorted(allowed[100:].tolist())


def test_ivf_large_allowed_sets_probe_more_and_stay_inside(big, monkeypatch):
    index, ids, vectors, queries = big
    monkeypatch.setattr(vectors_module, "EXACT_ALLOWED_MAX", 10)
    rows = np.arange(0, len(ids), 3)
    allowed = ids[rows]
    for query in queries:
        got, _ = index.search(query, 10, allowed=allowed.tolist())
        assert len(got) == 10 and set(got.tolist()) <= set(allowed.tolist())
    assert recall_at(index, allowed, vectors[rows], queries, allowed=allowed.tolist()) >= 0.95


def test_ivf_save_and_load_round_trip(big, tmp_path):
    index, ids, vectors, queries = big
    index.remove(ids[:10].tolist())
    path = tmp_path / "ivf.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, DIM, flat_max=SMALL)
    assert loaded.kind == "ivf" and len(loaded) == len(index)
    assert loaded.describe() == index.describe()
    _assert_same_answers(index, loaded, queries, ids, vectors)
    assert loaded.remove(ids[10:15].tolist()) == 5  # the direct map survived the file
    with pytest.raises(ValueError):
        VectorIndex.load(path, DIM + 1)


def test_ivf_shrinks_back_to_flat(big, tmp_path):
    index, ids, vectors, queries = big
    index.remove(ids[: len(ids) - SMALL // 2].tolist())  # SMALL // 2 left: not yet below
    index.save(tmp_path / "a.faiss")
    assert index.kind == "ivf"
    index.remove([ids[-1].item()])
    index.save(tmp_path / "b.faiss")
    assert index.kind == "flat" and len(index) == SMALL // 2 - 1
    left_ids, left_vectors = ids[len(ids) - SMALL // 2 : -1], vectors[len(ids) - SMALL // 2 : -1]
    for query in queries[:10]:  # exact again
        got, scores = index.search(query, 20)
        want, want_scores = brute_force(left_ids, left_vectors, query, 20)
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_array_equal(index.vectors(left_ids[:5].tolist()), left_vectors[:5])
    assert VectorIndex.load(tmp_path / "b.faiss", DIM, flat_max=SMALL).kind == "flat"


def test_ivf_is_retrained_when_it_has_grown_fourfold(tmp_path):
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 26_000)
    index = VectorIndex(DIM, flat_max=SMALL)
    index.add(list(range(1600)), vectors[:1600])
    index.save(tmp_path / "a.faiss")
    first = index._index.nlist
    index.add(list(range(1600, 6000)), vectors[1600:6000])  # 3.75x: keep the lists
    index.save(tmp_path / "b.faiss")
    assert index._index.nlist == first
    index.add(list(range(6000, 26_000)), vectors[6000:])  # 16x: retrain
    index.save(tmp_path / "c.faiss")
    assert index._index.nlist >= 2 * first and len(index) == 26_000
    ids = np.arange(26_000, dtype=np.int64)
    assert recall_at(index, ids, vectors, near(rng, vectors, 40)) >= 0.95
    np.testing.assert_array_equal(index.vectors([0, 25_999]), vectors[[0, 25_999]])


def test_the_same_content_gives_the_same_ivf(few_probes, tmp_path):
    rng = np.random.default_rng(21)
    ids = rng.choice(np.arange(100_000), size=3000, replace=False).astype(np.int64)
    vectors = clustered(rng, 3000)
    a, b = VectorIndex(DIM, flat_max=SMALL), VectorIndex(DIM, flat_max=SMALL)
    a.add(ids.tolist(), vectors)
    order = rng.permutation(3000)
    b.add(ids[order].tolist(), vectors[order])
    a.save(tmp_path / "a.faiss")
    b.save(tmp_path / "b.faiss")
    for query in near(rng, vectors, 20):
        a_ids, a_scores = a.search(query, 10)
        b_ids, b_scores = b.search(query, 10)
        assert a_ids.tolist() == b_ids.tolist()
        np.testing.assert_allclose(a_scores, b_scores, atol=1e-6)


def test_a_flat_file_from_before_loads_and_converts_at_the_next_save(tmp_path):
    rng = np.random.default_rng(8)
    vectors = clustered(rng, 1500)
    ids = np.arange(100, 1600, dtype=np.int64)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))  # what earlier versions wrote
    old.add_with_ids(vectors, ids)
    faiss.write_index(old, str(tmp_path / "old.faiss"))
    index = VectorIndex.load(tmp_path / "old.faiss", DIM, flat_max=SMALL)
    assert index.kind == "flat" and len(index) == 1500
    query = near(rng, vectors, 1)[0]
    got, _ = index.search(query, 10)
    assert got.tolist() == brute_force(ids, vectors, query, 10)[0].tolist()
    index.save(tmp_path / "new.faiss")
    assert index.kind == "ivf" and index.stored == "float16"
    np.testing.assert_array_equal(index.vectors(ids[[0, 1499]].tolist()), vectors[[0, 1499]])
    # The default threshold leaves an index of this size flat, and a save writes it in float16.
    small = VectorIndex.load(tmp_path / "old.faiss", DIM)
    assert small.describe() == "flat float32"
    small.save(tmp_path / "small.faiss")
    again = VectorIndex.load(tmp_path / "small.faiss", DIM)
    assert again.describe() == "flat float16" and len(again) == 1500
    np.testing.assert_array_equal(again.vectors(ids.tolist()), vectors)
    assert (tmp_path / "small.faiss").stat().st_size < 0.6 * (tmp_path / "old.faiss").stat().st_size


def test_vectors_are_kept_in_float16(tmp_path):
    """Any unit vector comes back within half a float16 step a component, and the scores are
    those of the vectors kept: a cosine moves by about 1e-4 at most."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((500, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = VectorIndex(384)
    index.add(list(range(500)), v)
    index.save(tmp_path / "v.faiss")
    kept = VectorIndex.load(tmp_path / "v.faiss", 384).vectors(list(range(500)))
    assert index.stored == "float16"
    step = np.spacing(np.abs(v).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(kept - v) <= step / 2 + 1e-9)
    query = v[7] + 0.3 * v[8]
    query /= np.linalg.norm(query)
    ids, scores = index.search(query, 500)
    np.testing.assert_allclose(scores, kept[ids] @ query, atol=1e-5)
    assert np.abs(scores - v[ids] @ query).max() < 2e-4


def test_an_unsupported_index_file_is_refused(tmp_path):
    faiss.write_index(faiss.IndexFlatIP(DIM), str(tmp_path / "plain.faiss"))
    with pytest.raises(ValueError):
        VectorIndex.load(tmp_path / "plain.faiss", DIM)
    eight_bits = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit_direct))
    faiss.write_index(eight_bits, str(tmp_path / "sq8.faiss"))
    with pytest.raises(ValueError, match="IndexScalarQuantizer"):
        VectorIndex.load(tmp_path / "sq8.faiss", DIM)


def test_a_search_leaves_the_callers_thread_count_as_it_was(data):
    """One query runs on one OpenMP thread; the caller's setting (training, batches) comes back,
    also when the search fails."""
    index, ids, _, queries = data
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(2)
        assert index.search(queries[0], 5)[0].tolist()
        assert faiss.omp_get_max_threads() == 2
        with pytest.raises(Exception):
            index.search(np.zeros(DIM + 1, dtype=np.float32), 5)
        assert faiss.omp_get_max_threads() == 2
    finally:
        faiss.omp_set_num_threads(before)
