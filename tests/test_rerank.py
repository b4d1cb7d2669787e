"""Late interaction (qa/rerank.py): word-by-word scores from the model's token vectors,
re-ranking only the first passages of ``hybrid``, with scores that still fall with rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qa import QA
from qa.rerank import DEPTH, LateInteraction, rerank

MORVAN = "001_morvan_exile_government.txt"


@given(
    st.lists(st.floats(-10, 10), min_size=1, max_size=12),
    st.lists(st.floats(0, 1), min_size=0, max_size=DEPTH),
)
def test_rerank_moves_only_the_first_and_keeps_them_above_the_rest(fused, late):
    fused = np.sort(np.array(fused))[::-1]
    late = np.array(late[: len(fused)])
    out = rerank(fused, late)
    assert out.shape == fused.shape
    head, tail = out[: len(late)], out[len(late) :]
    if len(tail) and len(head):
        assert head.min() >= tail.max() - 1e-9
    assert np.all(np.diff(tail) <= 1e-9)  # the rest keep their order
    if len(late) >= 2 and late.std() > 1e-6:
        # A larger late score never ranks a text lower when the fused scores tie.
        tied = rerank(np.zeros(len(late)), late)
        for i in range(len(late)):
            for j in range(len(late)):
                if late[i] > late[j] + 1e-6:
                    assert tied[i] > tied[j]


def test_rerank_without_a_spread_changes_nothing():
    fused = np.array([3.0, 2.0, 1.0])
    assert np.array_equal(rerank(fused, np.array([0.5, 0.5])), fused + 0.0)
    assert np.array_equal(rerank(fused, np.array([0.9])), fused)


class Counting:
    """The real embedder, counting the texts it is asked to embed token by token."""

    def __init__(self, embedder) -> None:
        self.inner, self.texts = embedder, []

    def token_vectors(self, texts):
        self.texts += list(texts)
        return self.inner.token_vectors(texts)


@pytest.mark.model
def test_late_interaction_prefers_the_sentence_that_answers(real_embedder):
    counting = Counting(real_embedder)
    late = LateInteraction(counting)
    texts = [
        "The barrier will cost 1.2 billion pounds and take six years to build.",
        "Farmers on the northern marshes objected to the barrier at every meeting.",
    ]
    scores = late.scores("Who objected to the barrier?", texts)
    assert scores.shape == (2,) and scores[1] > scores[0]
    assert np.all((scores > 0) & (scores <= 1.0001))
    # One forward pass for the question and both texts; asked again, only the question.
    assert counting.texts == ["Who objected to the barrier?", *texts]
    again = late.scores("Who objected to the barrier?", texts)
    assert counting.texts[3:] == ["Who objected to the barrier?"]
    assert np.allclose(again, scores, atol=1e-3)
    # A question of stop words only still gets scores, from all its tokens.
    assert late.scores("What is it?", texts).shape == (2,)


@pytest.mark.model
def test_token_vectors_are_unit_rows_without_special_tokens(real_embedder):
    (vectors, tokens), = real_embedder.token_vectors(["Kestrel Bay's barrier."])
    assert tokens == ("ke", "##strel", "bay", "'", "s", "barrier", ".")
    assert "[CLS]" not in tokens and "[SEP]" not in tokens
    assert vectors.shape == (len(tokens), real_embedder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.model
def test_hybrid_reorders_only_the_first_passages_of_fused(seed_index, real_embedder):
    qa = QA(seed_index, embedder=real_embedder)
    for question in ("What did Kostal say about Aldan?", "How much will the barrier cost?",
                     "Who is Kostal's deputy?", "Where did the exile government meet?"):
        fused = qa.ask(question, k=8, retriever="fused")
        hybrid = qa.ask(question, k=8, retriever="hybrid")
        key = lambda hit: (hit.passage.doc, hit.passage.paragraph)  # noqa: E731
        assert {key(h) for h in hybrid.hits[:DEPTH]} == {key(h) for h in fused.hits[:DEPTH]}, question
        assert [key(h) for h in hybrid.hits[DEPTH:]] == [key(h) for h in fused.hits[DEPTH:]], question
        scores = [h.score for h in hybrid.hits]
        assert scores == sorted(scores, reverse=True), question
        assert [h.rank for h in hybrid.hits] == list(range(1, len(hybrid.hits) + 1))


def test_a_model_without_token_vectors_ranks_hybrid_as_fused(fake_qa, corpus):
    assert not LateInteraction.available(fake_qa.embedder)
    fake_qa.index([corpus])
    for question in ("apple trees", "How many apples?"):
        hybrid, fused = fake_qa.ask(question, retriever="hybrid"), fake_qa.ask(question, retriever="fused")
        assert [(h.passage.id, h.score) for h in hybrid.hits] == [(h.passage.id, h.score) for h in fused.hits]
        assert hybrid.hits
