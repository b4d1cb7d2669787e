"""qa.storage.fulltext: the tantivy full-text index, checked against the catalog's own FTS5 table."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from qa.lexical import fts_query, question_terms
from qa.storage import segments
from qa.storage.fulltext import FullText, catalog_passages

# (passage id, document id, section, text): ids far apart and past 32 bits, to see them come back as given.
TOY = [
    (7, 1, None, "The cats were running across the garden after the birds."),
    (12, 1, None, "A cat sleeps. A cat eats. A cat runs, and the cat sleeps again."),
    (3_000_000_001, 2, "Coffee", "The café served a naïve blend of roasted beans."),
    (40, 2, None, "Vaccines against covid 19 were tested in trials."),
    (41, 3, None, "In 19 trials covid was not the disease studied."),
    (99, 3, "Cats", "Dogs bark at the postman every morning."),
]


# Passages that match none of the questions below: with them no question word is in half the
# passages or more, where FTS5's idf (``log((N - n + 0.5) / (n + 0.5))``) is nought and Lucene's is not.
FILLER = [(1000 + i, 4, None, text) for i, text in enumerate([
    "Rain fell on the harbour through the night.",
    "Markets opened lower on Tuesday morning.",
    "The committee approved the budget for next year.",
    "A new bridge links both banks of the river.",
    "Students sat their final examinations in June.",
    "Farmers harvested wheat before the storm arrived.",
])]


def build(rows=TOY, folder=None) -> FullText:
    index = FullText(folder)
    index.add(rows)
    index.commit()
    return index


def fts5(rows=TOY) -> sqlite3.Connection:
    """The catalog's FTS5 table, with the tokenizer ``qa.storage.segments`` declares, over ``rows``."""
    tokenize = re.search(r"tokenize='([^']+)'", segments.SEGMENT_SCHEMA).group(1)
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE passages_fts USING fts5(section, text, tokenize='{tokenize}')")
    db.executemany("INSERT INTO passages_fts(rowid, section, text) VALUES (?, ?, ?)", [(i, s, t) for i, _, s, t in rows])
    return db


def fts5_scores(db, question: str) -> dict[int, float]:
    sql = "SELECT rowid, -bm25(passages_fts, 0.5, 1.0) FROM passages_fts WHERE passages_fts MATCH ?"
    return dict(db.execute(sql, (fts_query(question),)).fetchall())


def ranked(scores: dict[int, float]) -> list[int]:
    return sorted(scores, key=lambda i: (-scores[i], i))


def test_stemming_matches_other_forms_of_a_word():
    index = build()
    assert set(index.lexical(["cat"])) == {7, 12, 99}  # "cats" in 7's text and 99's section
    assert set(index.lexical(["running"])) == {7, 12}  # "running", "runs"
    assert set(index.lexical(["vaccine"])) == {40}


def test_diacritics_and_case_are_folded():
    index = build()
    assert set(index.lexical(["cafe"])) == {3_000_000_001}
    assert set(index.lexical(["naive"])) == {3_000_000_001}
    assert set(index.lexical(["CAFÉ"])) == {3_000_000_001}


def test_ids_round_trip_and_every_match_is_returned():
    index = build()
    assert len(index) == len(TOY)
    scores = index.lexical(["the"])
    assert set(scores) == {7, 12, 3_000_000_001, 41, 99}  # not 40, which has no "the"
    assert all(isinstance(i, int) and s > 0 for i, s in scores.items())


def test_a_word_split_in_two_is_a_phrase():
    index = build()
    # "covid_19" is two tokens: adjacent in 40, apart and reversed in 41 (as FTS5 reads "covid_19").
    assert set(index.lexical(["covid_19"])) == {40}
    assert set(index.lexical(["covid", "19"])) == {40, 41}
    assert index.lexical(["_"]) == {}
    assert index.lexical([]) == {}


def test_same_matches_and_ranking_as_fts5_on_a_toy_corpus():
    index, db = build(TOY + FILLER), fts5(TOY + FILLER)
    for question in ["cat", "cats running", "covid vaccine trials", "the garden birds", "dogs bark", "café beans"]:
        mine, theirs = index.lexical(question_terms(question)), fts5_scores(db, question)
        assert set(mine) == set(theirs), question
        assert ranked(mine) == ranked(theirs), question
    # More occurrences of a word in a passage of similar length score higher in both.
    assert ranked(index.lexical(["cat"]))[0] == 12


def test_section_counts_half_as_much_as_text():
    rows = [(1, 1, None, "Otters and beavers"), (2, 1, "Otters and beavers", "Rivers and lakes")]
    scores = build(rows).lexical(["otters"])
    assert scores[1] > scores[2] > 0
    even = FullText(weights={"section": 1.0, "text": 1.0})
    even.add(rows)
    even.commit()
    assert scores[2] == pytest.approx(0.5 * even.lexical(["otters"])[2])
    assert scores[1] == pytest.approx(even.lexical(["otters"])[1])
    text_only = FullText(weights={"text": 1.0})
    text_only.add(rows)
    text_only.commit()
    assert set(text_only.lexical(["otters"])) == {1}
    with pytest.raises(ValueError, match="weights"):
        FullText(weights={"title": 1.0})
    theirs = fts5_scores(fts5(rows), "otters")
    assert theirs[1] > theirs[2] > 0


def test_doc_ids_restrict_to_those_documents():
    index = build()
    assert set(index.lexical(["cat"], doc_ids=[1])) == {7, 12}
    assert set(index.lexical(["cat"], doc_ids=[3, 2])) == {99}
    assert index.lexical(["cat"], doc_ids=[]) == {}
    # A filter changes which passages come back, not their scores.
    assert index.lexical(["cat"], doc_ids=[1]) == {i: s for i, s in index.lexical(["cat"]).items() if i in (7, 12)}


def test_limit_keeps_the_best_with_the_same_scores():
    index = build()
    every = index.lexical(["cat", "running", "garden"])
    best = index.lexical(["cat", "running", "garden"], limit=2)
    assert list(best) == ranked(every)[:2]
    assert best == {i: every[i] for i in best}
    assert index.lexical(["cat"], limit=0) == {}


def test_scores_of_given_passages_are_those_of_every_match():
    index = build(TOY + FILLER)
    every = index.lexical(["cat", "covid", "rain"])
    given = index.scores(["cat", "covid", "rain"], [12, 41, 1000, 1001, 3_000_000_001, 5])
    # 1001, 3_000_000_001 and 5 (no such passage) do not match: absent, as from lexical().
    assert given == {12: every[12], 41: every[41], 1000: every[1000]}
    assert index.scores(["cat"], []) == {}
    assert index.scores(["_"], [12]) == {}


def test_deletes_are_seen_at_commit_only():
    index = build()
    index.delete([12, 99])
    assert set(index.lexical(["cat"])) == {7, 12, 99}  # readers keep the last commit
    index.commit()
    assert set(index.lexical(["cat"])) == {7}
    assert len(index) == len(TOY) - 2
    index.add([(12, 1, None, "The cat is back.")])
    index.commit()
    assert set(index.lexical(["cat"])) == {7, 12}


def test_a_folder_index_keeps_its_commits_and_drops_the_rest(tmp_path):
    index = build(folder=tmp_path / "fulltext")
    index.add([(500, 9, None, "An uncommitted cat.")])
    index.close()
    reopened = FullText(tmp_path / "fulltext")
    assert set(reopened.lexical(["cat"])) == {7, 12, 99}
    assert reopened.lexical(["cafe"]) == index.lexical(["cafe"])


@pytest.mark.model
def test_same_matches_as_the_index_fts5_on_the_seeds(seed_index):
    from qa.evaluate import read_labeled
    from qa.storage import Snapshot

    snapshot = Snapshot(seed_index)
    index = FullText()
    assert index.add(catalog_passages(snapshot)) == snapshot.manifest[
        "counts"]["passages"]
    index.commit()
    labeled = read_labeled(Path(__file__).parent / "seed_questions" / "paraphrased.jsonl")
    assert labeled
    same_matches = top_same = 0
    for q in labeled:
        mine, theirs = index.lexical(question_terms(q.question)), snapshot.lexical(fts_query(q.question))
        assert mine, q.question
        same_matches += set(mine) == set(theirs)
        top_same += ranked(mine)[0] == ranked(theirs)[0]
    # The stemmers differ on a few words (Porter's "used" is "us", and matches "[US]"; Snowball's is
    # "use"), and the bm25s in detail (see the module): nearly every match agrees, most first passages.
    assert same_matches >= 0.9 * len(labeled)
    assert top_same >= 0.8 * len(labeled)
    snapshot.close()
