"""The real seed corpus, asked the way readers ask, with the real offline model.

``tests/seed_questions/paraphrased.jsonl`` holds questions written for the two
seed articles in other words than the paragraph's ("foreign minister" for
"Minister for Foreign Affairs"), each with its gold paragraph; the paragraph
oracle here is independent of qa.split (a paragraph is a block between blank
lines). ``unanswerable.jsonl`` holds questions close to the articles' topic
(the same countries, people and events) that they do not answer.
bench/quality.py reports the same sets beside the benchmark's.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from qa import QA
from qa.evaluate import read_labeled, score_questions, summarize

pytestmark = pytest.mark.model

HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent / "seeds"
PARAPHRASED = read_labeled(HERE / "seed_questions" / "paraphrased.jsonl")
UNANSWERABLE = read_labeled(HERE / "seed_questions" / "unanswerable.jsonl")
SHARED_SEEDS = HERE.parent.parent / "shared" / "seeds"


def paragraph_spans(name: str) -> list[tuple[int, int]]:
    text = (SEEDS / name).read_text(encoding="utf-8")
    return [(m.start(), m.end()) for m in re.finditer(r"[^\n]+(?:\n(?!\n)[^\n]+)*", text) if m.group().strip()]


@pytest.fixture(scope="module")
def seed_qa(seed_index, real_embedder) -> QA:
    return QA(seed_index, embedder=real_embedder)


@pytest.fixture(scope="module")
def outcomes(seed_qa):
    return score_questions(seed_qa, PARAPHRASED, k=5)


@pytest.mark.skipif(not SHARED_SEEDS.is_dir(), reason="no ../shared/seeds beside the checkout")
def test_seeds_folder_holds_exactly_the_shared_seed_articles():
    ours = sorted(p.name for p in SEEDS.iterdir())
    assert ours == sorted(p.name for p in SHARED_SEEDS.iterdir())
    for name in ours:
        assert (SEEDS / name).read_bytes() == (SHARED_SEEDS / name).read_bytes()


def test_the_question_files_are_what_the_benchmark_promises():
    assert len(PARAPHRASED) >= 40 and len(UNANSWERABLE) >= 15
    names = {p.name for p in SEEDS.iterdir()}
    for q in PARAPHRASED:
        assert q.doc in names and 1 <= q.paragraph <= len(paragraph_spans(q.doc)), q.id
    assert all(not q.answerable for q in UNANSWERABLE)
    assert len({q.question for q in PARAPHRASED + UNANSWERABLE}) == len(PARAPHRASED) + len(UNANSWERABLE)


def test_paraphrased_questions_find_their_paragraph(outcomes):
    """Measured: 40 of 47 first, 45 in the top 5; the two beyond need knowledge the model lacks
    ("social network" for "a post on X", "made to work against their will" for "forced labour")."""
    s = summarize(outcomes, retriever="hybrid", k=5)
    missed = [q.question for q, o in zip(PARAPHRASED, outcomes) if o.rank is None]
    assert len(missed) <= 2, f"gold paragraph not in the top 5: {missed}"
    assert s["recall@1"] >= 0.83, s


def test_right_answers_are_answered(outcomes):
    """Measured: 36 of the 40 right first passages answered (the README's 97% is not reached on
    the seeds: the four left are paraphrases whose best sentence has a cosine of 0.24-0.36)."""
    right = [o for o in outcomes if o.rank == 1]
    answered = sum(o.answered for o in right) / len(right)
    assert answered >= 0.85, f"only {answered:.0%} of the right first passages are answered"


def test_near_topic_questions_score_below_right_answers(seed_qa, outcomes):
    """Measured: right first passages median 0.64, near-topic questions 0.51. Most near-topic
    questions still pass the threshold (README): a passage about Pakistan's foreign policy looks
    like an answer about its prime minister to every signal here."""
    near = score_questions(seed_qa, UNANSWERABLE, k=5)
    right = sorted(o.confidence for o in outcomes if o.rank == 1)
    near_confidence = sorted(o.confidence for o in near)
    assert near_confidence[len(near) // 2] < right[len(right) // 2] - 0.05


@pytest.mark.parametrize("question", [
    "How do I bake a chocolate cake?", "Who won the Champions League final last night?",
    "What is the boiling point of water?",
])
def test_off_topic_questions_are_not_answered(seed_qa, question):
    answer = seed_qa.ask(question, k=3)
    assert not answer.answered and answer.confidence < 0.05, answer.confidence
    assert len(answer.hits) == 3  # the closest passages are still shown


def test_every_result_on_the_seeds_quotes_them_exactly(seed_qa):
    checked = 0
    for answer in seed_qa.ask_many(((q.id, q.question) for q in PARAPHRASED[:12]), k=3):
        for hit in answer.hits:
            r = hit.to_json()
            name = Path(r["doc"]).name
            text = (SEEDS / name).read_bytes().decode("utf-8")
            assert r["doc"] == f"seeds/{name}"
            assert text[r["start"] : r["end"]] == r["text"]
            p_start, p_end = paragraph_spans(name)[r["paragraph"] - 1]
            assert p_start <= r["start"] and r["end"] <= p_end, r["citation"]
            assert text[r["highlight_start"] : r["highlight_end"]] == r["highlight"]
            checked += 1
    assert checked == 36


def test_the_foreign_minister_question_of_the_issue(seed_qa):
    answer = seed_qa.ask("Who is the foreign minister of the exile government?", k=3)
    top = answer.hits[0]
    assert (Path(top.passage.doc).name, top.passage.paragraph) == ("000_1e317d521278b0dc.txt", 4)
    assert "Salih Hudayar" in top.highlight
    assert answer.answered


def test_the_confidence_reads_how_the_candidates_match_as_a_crowd(seed_qa):
    """A question from another field finds candidates that match none of its words' meanings;
    one about the articles finds many that match some. The median token-by-token score over the
    candidates (``qa.confidence``) tells them apart and raises the confidence where it is high."""
    from qa.confidence import FEATURES, confidence
    from qa.search import confidence_features

    about, other = seed_qa.signals_many(
        ["Who is the foreign minister of the exile government?", "What is the boiling point of water?"]
    )
    at = FEATURES.index("median_late")
    (f_about, known), (f_other, _) = confidence_features(about, 0), confidence_features(other, 0)
    assert known
    assert f_about[at] == pytest.approx(float(np.median(about.values["late_whole"])))
    assert f_about[at] > f_other[at] + 0.2, (f_about[at], f_other[at])
    lifted = tuple(f_about[at] if i == at else v for i, v in enumerate(f_other))
    assert confidence(lifted) > confidence(f_other) * 5
