"""The fusion's coverage signal: question words weighted by their idf among the candidates."""

from __future__ import annotations

import pytest

from qa.search import _term_weights, _weighted_coverage, _words


def test_a_word_every_candidate_has_weighs_less_than_a_rare_one():
    passages = [_words("The Huguenots fled France."), _words("Huguenots settled in Dublin."), _words("Huguenot churches")]
    weights = _term_weights({"hugue", "dubli"}, passages)
    assert weights["hugue"] < weights["dubli"]
    assert all(w > 0 for w in weights.values())  # bm25's idf never goes negative


def test_the_sentence_with_the_rare_word_covers_more():
    weights = _term_weights({"hugue", "dubli"}, [_words("Huguenots in Dublin"), _words("Huguenots"), _words("Huguenots")])
    common_only = _weighted_coverage(weights, [_words("The Huguenots arrived.")])
    rare_only = _weighted_coverage(weights, [_words("They settled in Dublin.")])
    assert rare_only > common_only
    assert _weighted_coverage(weights, [_words("x"), _words("Huguenots settled in Dublin.")]) == pytest.approx(1.0)


def test_no_question_words_or_no_sentences_cover_nothing():
    assert _weighted_coverage({}, [_words("anything")]) == 0.0
    assert _weighted_coverage(_term_weights({"dubli"}, [set()]), []) == 0.0


@pytest.mark.parametrize("size", [0, 3, 100, 101, 2000])
def test_the_lexical_pool_is_the_best_bm25_ties_by_passage_id(size):
    import random

    from qa.search import _best

    rng = random.Random(size)
    scores = {rng.randrange(10**6): rng.choice([1.0, 2.5, rng.random()]) for _ in range(size)}
    assert _best(scores, 100) == sorted(scores, key=lambda i: (-scores[i], i))[:100]
