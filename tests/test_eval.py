"""Scoring labeled questions: ``qa.evaluate`` and ``qa eval``.

The arithmetic and the file checks need no model; the command runs once per
retriever with the real model on the seed index and a small labeled set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.cli import cli
from qa.evaluate import (
    EvalError,
    Outcome,
    document_scores,
    evaluate,
    hit_names,
    labeled_from_json,
    ranked_documents,
    read_labeled,
    score_questions,
    summarize,
)

KESTREL = "000_kestrel_bay_tidal_barrier.txt"
MORVAN = "001_morvan_exile_government.txt"

# Five questions whose gold passage every retriever ranks first; one labeled
# with a paragraph that does not exist (a miss); one about a document that is
# not indexed (a miss, counted apart).
SEED_QUESTIONS = [
    {"id": "cost", "question": "How much will the barrier cost?", "doc": KESTREL, "paragraph": 3,
     "answers": ["212 million euros"]},
    {"id": "aldan", "question": "What did Kostal say about President Aldan?", "doc": f"articles/{MORVAN}",
     "paragraph": 5, "answers": ["Aldan"]},
    # the answer is in ¶5 but not in the sentence highlighted
    {"id": "homes", "question": "How many homes were flooded in January?", "doc": KESTREL, "paragraph": 5,
     "answers": ["old fish market"]},
    {"id": "fled", "question": "How many people fled Morvan?",
     "text": "About 96,000 people fled Morvan in the nine days after the offensive began", "answers": ["96,000"]},
    {"id": "begin", "question": "When will construction begin?", "doc": KESTREL, "paragraph": 11,
     "answers": ["no such words", "spring of 2028"]},
    {"id": "mislabeled", "question": "When will the barrier be finished?", "doc": KESTREL, "paragraph": 99},
    {"id": "cake", "question": "How do I bake a chocolate cake?", "doc": "cookbook.txt", "paragraph": 2},
]


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return path


# -- the arithmetic -----------------------------------------------------------------------


def outcome(rank, answered=True, highlight=None, indexed=True) -> Outcome:
    return Outcome(id="q", rank=rank, answered=answered, confidence=0.5, gold_indexed=indexed,
                   highlight_has_answer=highlight)


def test_summarize_recall_mrr_and_shares():
    outcomes = [
        outcome(1, highlight=True),
        outcome(2),
        outcome(5, answered=False),
        outcome(6),
        outcome(12),  # retrieved (k=20) but beyond MRR@10
        outcome(None, answered=False, indexed=False),
    ]
    s = summarize(outcomes, retriever="lexical", k=20)
    assert (s["retriever"], s["k"], s["questions"]) == ("lexical", 20, 6)
    assert s["recall@1"] == round(1 / 6, 4)
    assert s["recall@5"] == 0.5
    assert s["mrr@10"] == round((1 + 1 / 2 + 1 / 5 + 1 / 6) / 6, 4)
    assert s["answered"] == round(4 / 6, 4)
    assert s["highlight_has_answer"] == 1.0
    assert s["counts"] == {
        "questions": 6, "hit@1": 1, "hit@5": 3, "gold_retrieved": 5, "answered": 4,
        "gold_not_indexed": 1, "top1_with_answers": 1, "highlight_has_answer": 1,
    }
    assert "ms_per_question" not in s


def test_summarize_without_answers_has_no_highlight_share():
    s = summarize([outcome(1), outcome(3)], retriever="hybrid", k=10, seconds=0.5)
    assert s["highlight_has_answer"] is None
    assert s["mrr@10"] == round((1 + 1 / 3) / 2, 4)
    assert s["ms_per_question"] == 250.0


def test_document_scores_follow_trec_eval():
    """nDCG@10 by hand: gains 2, 0, 1 at ranks 1-3; the ideal ranking puts the grades 2, 2, 1 first."""
    grades = {"a": 2, "b": 2, "c": 1, "z": 0}
    ranked = [("a",), ("x",), ("c", "c-copy"), ("y",)]
    first, scores = document_scores(ranked, grades)
    dcg = 2 / math.log2(2) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert first == 1
    assert scores["ndcg@10"] == pytest.approx(dcg / idcg)
    assert scores["recall@10"] == scores["recall@100"] == pytest.approx(2 / 3)
    # a relevant document only at rank 11 counts for recall@100, not @10 or nDCG@10
    late = [(f"n{i}",) for i in range(10)] + [("b",)]
    first, scores = document_scores(late, grades)
    assert first == 11 and scores["ndcg@10"] == 0 and scores["recall@10"] == 0
    assert scores["recall@100"] == pytest.approx(1 / 3)
    # the names of one content count once, at their first passage
    assert document_scores([("a", "b")], grades)[1]["recall@10"] == pytest.approx(1 / 3)


def test_ranked_documents_keeps_each_document_at_its_first_passage():
    from types import SimpleNamespace as NS

    hits = [NS(passage=NS(doc=d, also=also)) for d, also in [("a", ()), ("b", ("b2",)), ("a", ()), ("b2", ()), ("c", ())]]
    assert ranked_documents(hit_names(hits)) == [("a",), ("b", "b2"), ("c",)]
    assert ranked_documents(hit_names(hits), limit=2) == [("a",), ("b", "b2")]


def test_calibration_figures_count_right_answers_and_outside_questions():
    outcomes = [
        outcome(1, answered=True),
        outcome(1, answered=False),
        outcome(2, answered=True),  # not right at rank 1: not counted in the first figure
        outcome(None, answered=False, indexed=False),
        outcome(None, answered=True, indexed=False),
        outcome(None, answered=False, indexed=False),
    ]
    s = summarize(outcomes, retriever="hybrid", k=10)
    assert s["answered_when_top1_right"] == 0.5
    assert s["abstained_outside"] == round(2 / 3, 4)
    alone = summarize([outcome(3)], retriever="hybrid", k=10)
    assert alone["answered_when_top1_right"] is None and alone["abstained_outside"] is None


# -- reading labeled questions ------------------------------------------------------------


def test_read_labeled_accepts_both_gold_forms(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": "Where?", "doc": "a.txt", "paragraph": 2, "answers": ["here"]}\n'
        "\n"
        '{"id": 7, "question": "What?", "text": "gold words", "answers": "one"}\n',
        encoding="utf-8",
    )
    first, second = read_labeled(path)
    assert (first.id, first.doc, first.paragraph, first.text, first.answers) == ("1", "a.txt", 2, None, ("here",))
    assert first.where == f"{path}:1"
    assert (second.id, second.doc, second.text, second.answers) == ("7", None, "gold words", ("one",))


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"doc": "a.txt", "paragraph": 1}', '"question" must be a non-empty string'),
        ('{"question": "  ", "text": "t"}', '"question" must be a non-empty string'),
        ('{"question": "q"}', 'give the gold "doc" and "paragraph", the gold "text", or "qrels"; or "answerable": false for a question the documents cannot answer'),
        ('{"question": "q", "doc": "a.txt"}', 'give the gold "doc" and "paragraph", the gold "text", or "qrels"; or "answerable": false for a question the documents cannot answer'),
        ('{"question": "q", "qrels": {}}', '"qrels" must map document names to whole-number grades from 0'),
        ('{"question": "q", "qrels": {"a.txt": -1}}', '"qrels" must map document names to whole-number grades from 0'),
        ('{"question": "q", "qrels": {"a.txt": 1.5}}', '"qrels" must map document names to whole-number grades from 0'),
        ('{"question": "q", "qrels": {"a.txt": 0}}', '"qrels" judges no document relevant (every grade is 0)'),
        ('{"question": "q", "answerable": "no"}', '"answerable" must be true or false'),
        ('{"question": "q", "answerable": false, "text": "t"}', 'a question with "answerable": false has no gold'),
        ('{"question": "q", "doc": "a.txt", "paragraph": 0}', '"paragraph" must be a whole number from 1'),
        ('{"question": "q", "doc": "a.txt", "paragraph": true}', '"paragraph" must be a whole number from 1'),
        ('{"question": "q", "text": ""}', '"text" must be a non-empty string'),
        ('{"question": "q", "text": "t", "answers": [1]}', '"answers" must be a list of non-empty strings'),
    ],
)
def test_read_labeled_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine", "text": "gold"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(EvalError) as caught:
        read_labeled(path)
    assert str(caught.value) == f"{path}:2: {message}"


def test_read_labeled_missing_and_empty_files(tmp_path):
    with pytest.raises(EvalError, match="no such file"):
        read_labeled(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(EvalError, match="holds no questions"):
        read_labeled(empty)


# -- judging hits, with the fake model ----------------------------------------------------


def labeled(**item):
    return labeled_from_json({"question": "q", **item}, "test", "1")


def test_gold_doc_by_path_suffix_or_name_and_gold_text_both_ways(fake_qa, corpus):
    fake_qa.index([corpus])
    snapshot = fake_qa.snapshot()
    pruning = "Apple trees need pruning in late winter. Pears are pruned in summer."
    questions = [
        labeled(id="name", question="When are apple trees pruned?", doc="beta.md", paragraph=2),
        labeled(id="path", question="When are apple trees pruned?", doc="docs/beta.md", paragraph=2),
        labeled(id="suffix", question="Who counted ships at dawn?", doc="sub/gamma.txt", paragraph=1),
        # a fragment of the passage, with its own line breaks
        labeled(id="inside", question="When are apple trees pruned?", text="pruning in\nlate   winter"),
        # the whole document holds the passage
        labeled(id="around", question="When are apple trees pruned?", text=snapshot.document_text("docs/beta.md")),
        labeled(id="wrong-doc", question="When are apple trees pruned?", doc="alpha.txt", text=pruning),
        labeled(id="absent", question="When are apple trees pruned?", doc="nowhere.txt", paragraph=2),
    ]
    outcomes = {o.id: o for o in score_questions(fake_qa, questions, k=5)}
    for qid in ("name", "path", "suffix", "inside", "around"):
        assert outcomes[qid].rank is not None and outcomes[qid].gold_indexed, qid
    assert outcomes["name"].rank == outcomes["path"].rank
    assert outcomes["wrong-doc"].rank is None and outcomes["wrong-doc"].gold_indexed
    assert outcomes["absent"].rank is None and not outcomes["absent"].gold_indexed


def test_qrels_and_unanswerable_questions_with_the_fake_model(fake_qa, corpus):
    fake_qa.index([corpus])
    questions = [
        labeled(id="judged", question="When are apple trees pruned?", qrels={"beta.md": 2, "alpha.txt": 1}),
        labeled(id="elsewhere", question="When are apple trees pruned?", qrels={"other.txt": 1}),
        labeled(id="none", question="Who painted the ceiling?", answerable=False),
    ]
    outcomes = {o.id: o for o in score_questions(fake_qa, questions, k=10)}
    judged = outcomes["judged"]
    assert judged.gold_indexed and judged.documents is not None
    assert judged.documents["recall@10"] == 1.0  # three documents in all: both judged ones are in the top 10
    assert 0 < judged.documents["ndcg@10"] <= 1
    assert not outcomes["elsewhere"].gold_indexed and outcomes["elsewhere"].documents["ndcg@10"] == 0
    assert not outcomes["none"].gold_indexed and outcomes["none"].rank is None and outcomes["none"].documents is None
    summary = summarize(list(outcomes.values()), retriever="hybrid", k=10)
    assert summary["counts"]["judged_by_qrels"] == 2
    assert summary["ndcg@10"] == round(judged.documents["ndcg@10"] / 2, 4)


def test_ambiguous_gold_doc_is_an_error(fake_qa, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "docs" / folder).mkdir(parents=True)
        (tmp_path / "docs" / folder / "x.txt").write_text(f"Folder {folder} notes.\n", encoding="utf-8")
    fake_qa.index([tmp_path / "docs"])
    with pytest.raises(EvalError, match=r"here: gold doc 'x.txt' is ambiguous: docs/a/x.txt, docs/b/x.txt"):
        score_questions(fake_qa, [labeled_from_json({"question": "q", "doc": "x.txt", "paragraph": 1}, "here", "1")])
    summary = evaluate(fake_qa, [labeled(doc="a/x.txt", paragraph=1, question="Folder a notes")], k=2)
    assert summary["counts"]["gold_not_indexed"] == 0 and summary["recall@5"] == 1.0


# -- qa eval, with the real model ---------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.model
@pytest.mark.parametrize("retriever", ["hybrid", "fused", "lexical", "dense"])
def test_cli_eval_prints_one_json_object(model, article_index, tmp_path, retriever):
    questions = write_jsonl(tmp_path / "seeds.jsonl", SEED_QUESTIONS)
    result = invoke("eval", questions, "--index", article_index, "--retriever", retriever)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    s = json.loads(result.stdout)
    assert (s["retriever"], s["k"], s["questions"]) == (retriever, 10, 7)
    assert s["recall@1"] == s["recall@5"] == s["mrr@10"] == round(5 / 7, 4)
    assert s["answered"] == round(6 / 7, 4)  # not the cake question
    assert s["highlight_has_answer"] == 0.8  # all but the fish market
    assert s["counts"] == {
        "questions": 7, "hit@1": 5, "hit@5": 5, "gold_retrieved": 5, "answered": 6,
        "gold_not_indexed": 1, "top1_with_answers": 5, "highlight_has_answer": 4,
    }
    assert s["ms_per_question"] >= 0


@pytest.mark.model
def test_cli_eval_k_is_passed_on(model, article_index, tmp_path):
    questions = write_jsonl(tmp_path / "seeds.jsonl", SEED_QUESTIONS[:2])
    result = invoke("eval", questions, "--index", article_index, "-k", "1")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["k"] == 1 and s["recall@1"] == 1.0 and s["counts"]["gold_retrieved"] == 2


@pytest.mark.model
def test_cli_eval_errors_are_one_line(model, article_index, tmp_path):
    missing = tmp_path / "missing.jsonl"
    assert one_line_error(invoke("eval", missing, "--index", article_index)) == f"Error: cannot read {missing}: no such file"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SEED_QUESTIONS[0]) + "\n{oops\n", encoding="utf-8")
    assert one_line_error(invoke("eval", bad, "--index", article_index)) == f"Error: {bad}:2: not a JSON object"

    no_gold = write_jsonl(tmp_path / "nogold.jsonl", [{"question": "Where?"}])
    assert one_line_error(invoke("eval", no_gold, "--index", article_index)).endswith(
        'nogold.jsonl:1: give the gold "doc" and "paragraph", the gold "text", or "qrels"; or "answerable": false for a question the documents cannot answer'
    )

    good = write_jsonl(tmp_path / "good.jsonl", SEED_QUESTIONS[:1])
    assert one_line_error(invoke("eval", good, "--index", tmp_path / "nowhere")).startswith(
        f"Error: no index at {tmp_path / 'nowhere'}"
    )
