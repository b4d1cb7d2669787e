"""Late interaction (qa/late.py, embeddings/tokens.py): token vectors stored with each
passage, and the MaxSim scores that ``hybrid`` adds to the fused ranking."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embeddings import encode_passages
from embeddings.tokens import TokenVectors, pack, unpack
from qa import QA
from qa import late
from qa.late import NO_SENTENCE, late_scores, passage_tokens, question_tokens
from qa.lexical import STOP_WORDS
from qa.storage import open_snapshot, read_manifest, sha256_file

KESTREL = "000_kestrel_bay_tidal_barrier.txt"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(0, 20), st.just(16)), elements=st.floats(-1, 1, width=32)))
def test_packed_vectors_come_back_within_one_int8_step(rows):
    blob = pack(rows)
    assert len(blob) == len(rows) * (4 + 16)
    quantized, scales, counts = unpack([blob, pack(rows[:1])], 16)
    back = quantized * scales[:, None]
    assert quantized.dtype == np.int8 and list(counts) == [len(rows), min(1, len(rows))]
    step = np.abs(rows).max(axis=1, keepdims=True) / 127 if len(rows) else 0
    assert np.all(np.abs(back[: len(rows)] - rows) <= step / 2 + 1e-6)


def test_a_blob_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="dimension 16"):
        unpack([b"\x00" * 21], 16)
    rows, scales, counts = unpack([], 16)
    assert rows.shape == (0, 16) and len(scales) == len(counts) == 0


def test_a_passage_keeps_its_content_tokens_with_their_sentence_numbers():
    text = "Install\nRun the make. It builds!"
    words = ["install", "run", "the", "make", ".", "it", "builds", "!"]
    offsets, at = [], 0
    for word in words:
        at = text.lower().index(word, at)
        offsets.append((at, at + len(word)))
        at += len(word)
    tokens = TokenVectors(_unit(np.eye(len(words), 8, dtype=np.float32)), np.array(offsets), tuple(words))
    # "Install" is a heading given as context: outside both sentences.
    numbers, vectors = passage_tokens(tokens, [(8, 21), (22, 32)])
    assert "the" in STOP_WORDS and "it" in STOP_WORDS
    assert list(numbers) == [NO_SENTENCE, 0, 0, 1]  # install, run, make, builds
    assert np.array_equal(vectors, tokens.vectors[[0, 1, 3, 6]])
    # The question keeps whole content words only (no stop words, no word pieces).
    question = TokenVectors(tokens.vectors[:3], np.zeros((3, 2), dtype=np.int64), ("who", "##se", "gates"))
    assert np.array_equal(question_tokens(question), tokens.vectors[2:3])
    only_stop = TokenVectors(tokens.vectors[:2], np.zeros((2, 2), dtype=np.int64), ("what", "is"))
    assert np.array_equal(question_tokens(only_stop), tokens.vectors[:2])  # all of them, then


@pytest.mark.parametrize("chunk", [2, 4, 2048])
def test_late_scores_are_maxsim_over_passages_and_their_best_sentence(chunk, monkeypatch):
    # Rows are converted a chunk at a time straight from the blobs: chunks that end
    # inside a passage, on its last row and after every passage all score alike.
    monkeypatch.setattr(late, "_CHUNK", chunk)
    rng = np.random.default_rng(7)
    question = _unit(rng.normal(size=(3, 16)).astype(np.float32))
    passages = [_unit(rng.normal(size=(n, 16)).astype(np.float32)) for n in (5, 4, 6)]
    numbers = [np.array(s, dtype=np.uint16) for s in ([0, 0, 1, 1, 1], [NO_SENTENCE, 0, 0, 0], [0, 1, 1, 2, 2, 2])]
    stored = [(n.tobytes(), pack(p)) for n, p in zip(numbers, passages)]
    scores = late_scores(question, [stored[0], None, stored[1], stored[2]], 16)
    whole, best = scores.whole, scores.best_sentence
    vectors = [rows * scales[:, None] for rows, scales, _ in (unpack([s[1]], 16) for s in stored)]

    def maxsim(rows: np.ndarray) -> float:
        return float((question @ rows.T).max(axis=1).mean())

    expected_whole = [maxsim(v) for v in vectors]
    expected_best = [max(maxsim(v[n == s]) for s in set(n.tolist()) - {NO_SENTENCE}) for v, n in zip(vectors, numbers)]
    assert np.allclose(whole[[0, 2, 3]], expected_whole, atol=1e-5)
    assert np.allclose(best[[0, 2, 3]], expected_best, atol=1e-5)
    # Each sentence's own score, for the highlight; the heading's tokens are in none.
    for candidate, v, n in zip([0, 2, 3], vectors, numbers):
        expected = {int(s): maxsim(v[n == s]) for s in set(n.tolist()) - {NO_SENTENCE}}
        got = scores.sentences(candidate)
        assert got.keys() == expected.keys() and all(got[k] == pytest.approx(expected[k], abs=1e-5) for k in got)
    assert scores.sentences(1) == {}
    # A passage without tokens gets the lowest of the others' scores.
    assert whole[1] == pytest.approx(min(expected_whole)) and best[1] == pytest.approx(min(expected_best))
    assert late_scores(question, [None, None], 16) is None
    assert late_scores(question[:0], stored, 16) is None


@pytest.mark.model
def test_late_interaction_prefers_the_passage_that_answers(real_embedder):
    texts = [
        "The barrier will cost 1.2 billion pounds and take six years to build.",
        "Farmers on the northern marshes objected to the barrier at every meeting.",
    ]
    _, _, tokens = encode_passages(real_embedder, texts, (), tokens=True)
    stored = []
    for text, token_vectors in zip(texts, tokens):
        numbers, vectors = passage_tokens(token_vectors, [(0, len(text))])
        stored.append((numbers.tobytes(), pack(vectors)))
    _, _, (question,) = encode_passages(real_embedder, ["Who objected to the barrier?"], (), tokens=True)
    scores = late_scores(question_tokens(question), stored, real_embedder.dimension)
    whole, best = scores.whole, scores.best_sentence
    assert whole[1] > whole[0] and best[1] > best[0]
    assert np.all((whole > 0) & (whole <= 1.0001))


def _tokens_table(index: Path) -> dict[int, tuple[bytes, bytes]]:
    """Every token row the index's segments hold (removed documents' too, until merged)."""
    snapshot = open_snapshot(index)
    try:
        return {row[0]: (row[1], row[2]) for row in snapshot._query("SELECT passage_id, sentences, vectors FROM passage_tokens")}
    finally:
        snapshot.close()


@pytest.mark.model
def test_the_index_keeps_every_passage_s_content_tokens_from_its_forward_pass(article_index, real_embedder):
    qa = QA(article_index, embedder=real_embedder)
    snapshot = qa.snapshot()
    passages = snapshot.passages_of(KESTREL)
    stored = snapshot.passage_tokens(p.id for p in passages)
    assert set(stored) == {p.id for p in passages}
    sentences = snapshot.sentences(p.id for p in passages)
    for passage in passages:
        numbers = np.frombuffer(stored[passage.id][0], dtype=np.uint16)
        rows, scales, _ = unpack([stored[passage.id][1]], real_embedder.dimension)
        vectors = rows * scales[:, None]
        (fresh,) = real_embedder.token_vectors([passage.text])
        content = fresh.select([t.lower() not in STOP_WORDS and any(c.isalnum() for c in t) for t in fresh.tokens])
        assert len(vectors) == len(content) > 0
        assert (vectors * content.vectors).sum(axis=1).min() > 0.99  # int8 keeps the direction
        # Each token's sentence is the one holding it, in text order.
        spans = sentences[passage.id]
        assert np.all(np.diff(numbers.astype(int)) >= 0) and numbers.max() < len(spans)
        for number, (start, end) in zip(numbers, content.offsets):
            _, s_start, s_end = spans[number]
            assert s_start <= passage.start + start and passage.start + end <= s_end


@pytest.mark.model
def test_hybrid_adds_late_interaction_and_an_index_without_tokens_ranks_as_fused(article_index, real_embedder, tmp_path):
    questions = ("Who objected to the barrier?", "How much will the barrier cost?", "Who is Kostal's deputy?")
    qa = QA(article_index, embedder=real_embedder)
    changed = 0
    for question in questions:
        hybrid, fused = qa.ask(question, k=5), qa.ask(question, k=5, retriever="fused")
        changed += [h.score for h in hybrid.hits] != [h.score for h in fused.hits]
        scores = [h.score for h in hybrid.hits]
        assert scores == sorted(scores, reverse=True)
    assert changed == len(questions)
    # The same index with its token vectors gone: hybrid falls back to fused, nothing fails.
    copy = tmp_path / "index"
    shutil.copytree(article_index, copy)
    manifest = read_manifest(copy)
    (segment,) = manifest["segments"]
    catalog = copy / segment["files"]["catalog"]
    with sqlite3.connect(catalog) as db:
        db.execute("DELETE FROM passage_tokens")
    db.close()
    segment["checksums"]["catalog"] = sha256_file(catalog)  # as if it had been written so
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    bare = QA(copy, embedder=real_embedder)
    for question in questions:
        hybrid, fused = bare.ask(question, k=5), bare.ask(question, k=5, retriever="fused")
        assert [(h.passage.id, h.score) for h in hybrid.hits] == [(h.passage.id, h.score) for h in fused.hits]


@pytest.mark.model
def test_removing_a_document_removes_its_token_vectors(article_index, real_embedder, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(article_index, copy)
    qa = QA(copy, embedder=real_embedder)
    kept = [d.path for d in qa.documents() if not d.path.endswith(KESTREL)]
    removed = {p.id for d in qa.documents() if d.path.endswith(KESTREL) for p in qa.snapshot().passages_of(d.path)}
    qa.remove([d.path for d in qa.documents() if d.path.endswith(KESTREL)])
    remaining = {p.id for path in kept for p in qa.snapshot().passages_of(path)}
    # Marked removed in their segment, never read again; the next merge drops them.
    assert set(_tokens_table(copy)) == remaining | removed and remaining and removed
    assert set(qa.snapshot().passage_tokens(removed)) == removed  # still stored, but:
    assert not {h.passage.id for h in qa.ask("Kestrel Bay tidal barrier", k=20).hits} & removed
    qa.compact()
    assert set(_tokens_table(copy)) == remaining


class _Recording:
    """The real embedder, recording the texts of every forward pass."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []
        self.name, self.dimension, self.max_tokens = inner.name, inner.dimension, inner.max_tokens

    def encode_passages(self, texts, spans, **options):
        self.calls.append(list(texts))
        return self.inner.encode_passages(texts, spans, **options)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.model
def test_a_follow_up_is_compared_token_by_token_in_the_user_s_own_words(article_index, real_embedder):
    recording = _Recording(real_embedder)
    qa = QA(article_index, embedder=recording)
    first = qa.ask("What did Kostal say about President Aldan?", k=3)
    assert recording.calls[-1] == ["What did Kostal say about President Aldan?"]  # one pass: vector and tokens
    follow_up = qa.ask("What did he say about the courts?", k=3, previous=first)
    assert follow_up.searched and follow_up.searched != follow_up.question
    # One pass: the search text for the vector, the user's words for the tokens.
    assert recording.calls[-1] == [follow_up.searched, "What did he say about the courts?"]


def test_a_model_without_token_vectors_ranks_hybrid_as_fused(fake_qa, corpus):
    assert not hasattr(fake_qa.embedder, "token_vectors")
    fake_qa.index([corpus])
    for question in ("apple trees", "How many apples?"):
        hybrid, fused = fake_qa.ask(question, retriever="hybrid"), fake_qa.ask(question, retriever="fused")
        assert [(h.passage.id, h.score) for h in hybrid.hits] == [(h.passage.id, h.score) for h in fused.hits]
        assert hybrid.hits


@pytest.mark.model
def test_work_on_worker_threads_answers_as_in_turn_and_concurrent_questions_as_one_at_a_time(
    article_index, real_embedder, monkeypatch
):
    """The full-text search and the token-by-token scores run on worker threads beside
    the question's embedding and vector searches (``qa.search.OVERLAP``): the answers
    are the same as with that work in turn, for every retriever, for a search
    restricted to one document, for a batch, and for questions asked from several
    threads at once (the page serves several users)."""
    from concurrent.futures import ThreadPoolExecutor

    import qa.search as search_module

    qa = QA(article_index, embedder=real_embedder)
    kestrel = next(d.path for d in qa.documents() if d.path.endswith(KESTREL))
    questions = ["Who objected to the barrier?", "How much will the barrier cost?", "Who is Kostal's deputy?",
                 "What did the minister promise?"]
    asks = [(q, r, docs) for q in questions for r in ("hybrid", "fused", "lexical", "dense") for docs in (None, [kestrel])]

    def answer(ask):
        question, retriever, docs = ask
        found = qa.ask(question, k=4, retriever=retriever, docs=docs)
        return found.answered, found.confidence, [(h.passage.id, h.score, h.highlight_start, h.confidence) for h in found.hits]

    monkeypatch.setattr(search_module, "OVERLAP", False)
    in_turn = [answer(a) for a in asks]
    batch_in_turn = [answer_of.hits for answer_of in qa.ask_many((None, q) for q in questions)]
    monkeypatch.setattr(search_module, "OVERLAP", True)
    assert [answer(a) for a in asks] == in_turn
    assert [answer_of.hits for answer_of in qa.ask_many((None, q) for q in questions)] == batch_in_turn
    with ThreadPoolExecutor(4) as users:
        assert list(users.map(answer, asks * 2)) == in_turn * 2
    restricted = [hits for (_, _, docs), (_, _, hits) in zip(asks, in_turn) if docs]
    assert all(hits for (_, retriever, docs), (_, _, hits) in zip(asks, in_turn) if docs and retriever == "dense")
    assert {p for hits in restricted for p, *_ in hits} <= {p.id for p in qa.snapshot().passages_of(kestrel)}
