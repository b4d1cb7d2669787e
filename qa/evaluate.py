"""Scoring retrieval on labeled questions: recall@1, recall@5, MRR@10, and how often it answers.

A labeled question names its gold passage either by ``doc`` and ``paragraph``
(and ``page`` for paged formats), where any window of that paragraph is a hit,
or by ``text``, where a hit is a result whose text contains the gold text or is
contained in it (whitespace runs compared as one space; ``doc``, if given, must
match too). ``doc`` may be the stored path, a unique path suffix, or a unique
file name, as in a citation. A gold document that is not in the index counts as
a miss and is counted in ``gold_not_indexed``. Optional ``answers`` are strings
that the highlighted sentence of a correct top hit should contain.

Shared by ``qa eval`` and ``bench/quality.py``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from qa.cite import match_document
from qa.records import Hit

logger = logging.getLogger(__name__)


class EvalError(Exception):
    """A labeled-questions file cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Labeled:
    """One question with where its answer is."""

    id: str
    question: str
    doc: str | None = None
    paragraph: int | None = None
    page: int | None = None
    text: str | None = None
    answers: tuple[str, ...] = ()
    where: str = ""  # "file:line", for messages


@dataclass(frozen=True)
class Outcome:
    """What retrieval did with one labeled question."""

    id: str
    rank: int | None  # of the first gold hit among the results, 1-based
    answered: bool
    confidence: float
    gold_indexed: bool
    highlight_has_answer: bool | None  # None unless the top hit is gold and answers are given


def labeled_from_json(item: object, where: str, default_id: str) -> Labeled:
    """Check one decoded line; raise :class:`EvalError` naming ``where``."""
    if not isinstance(item, dict):
        raise EvalError(f"{where}: expected a JSON object")
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        raise EvalError(f'{where}: "question" must be a non-empty string')
    doc, paragraph, page, text = item.get("doc"), item.get("paragraph"), item.get("page"), item.get("text")
    if doc is not None and (not isinstance(doc, str) or not doc.strip()):
        raise EvalError(f'{where}: "doc" must be a non-empty string')
    for key, value in (("paragraph", paragraph), ("page", page)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EvalError(f'{where}: "{key}" must be a whole number from 1')
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise EvalError(f'{where}: "text" must be a non-empty string')
    if text is None and (doc is None or paragraph is None):
        raise EvalError(f'{where}: give the gold "doc" and "paragraph", or the gold "text"')
    answers = item.get("answers", [])
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) and a for a in answers):
        raise EvalError(f'{where}: "answers" must be a list of non-empty strings')
    return Labeled(
        id=str(item.get("id", default_id)),
        question=question,
        doc=doc,
        paragraph=paragraph,
        page=page,
        text=text,
        answers=tuple(answers),
        where=where,
    )


def read_labeled(path: str | Path) -> list[Labeled]:
    """Labeled questions from a JSON-lines file; blank lines are skipped."""
    try:
        raw = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise EvalError(f"cannot read {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    questions = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except ValueError:
            raise EvalError(f"{where}: not a JSON object") from None
        questions.append(labeled_from_json(item, where, str(number)))
    if not questions:
        raise EvalError(f"{path} holds no questions")
    return questions


class _Gold:
    """Resolves gold document names against the index, as citations do."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(set(paths))

    def resolve(self, ref: str, where: str) -> str | None:
        matches = match_document(self.paths, ref)
        if len(matches) > 1:
            raise EvalError(f"{where}: gold doc {ref!r} is ambiguous: {', '.join(matches)}")
        return matches[0] if matches else None


def _squash(text: str) -> str:
    return " ".join(text.split())


def _is_gold(hit: Hit, q: Labeled, doc: str | None) -> bool:
    p = hit.passage
    if doc is not None and doc not in (p.doc, *p.also):
        return False
    if q.paragraph is not None and q.doc is not None:
        return p.paragraph == q.paragraph and (q.page is None or p.page == q.page)
    gold, got = _squash(q.text or ""), _squash(p.text)
    return gold in got or got in gold


def score_questions(qa, questions: Sequence[Labeled], *, retriever: str = "hybrid", k: int = 10) -> list[Outcome]:
    """Ask every question of ``qa`` (a :class:`qa.QA`) and judge its top ``k`` results."""
    gold = _Gold(d.path for d in qa.documents())
    docs = []
    for q in questions:
        resolved = gold.resolve(q.doc, q.where or q.id) if q.doc is not None else None
        docs.append(resolved)
        if q.doc is not None and resolved is None:
            logger.info("%s: gold doc %r is not in the index", q.where or q.id, q.doc)
    outcomes = []
    answers = qa.ask_many(((q.id, q.question) for q in questions), k=k, retriever=retriever)
    for q, doc, answer in zip(questions, docs, answers):
        indexed = q.doc is None or doc is not None
        rank = None
        if indexed:
            rank = next((hit.rank for hit in answer.hits if _is_gold(hit, q, doc)), None)
        has_answer = None
        if rank == 1 and q.answers:
            has_answer = any(a in answer.hits[0].highlight for a in q.answers)
        outcomes.append(Outcome(q.id, rank, bool(answer.answered), float(answer.confidence), indexed, has_answer))
    return outcomes


def summarize(outcomes: Sequence[Outcome], *, retriever: str, k: int, seconds: float | None = None) -> dict:
    """The figures ``qa eval`` prints. Ranks beyond ``k`` are unseen, so with ``k`` below 10
    recall@5 and MRR@10 count only the ranks retrieved."""
    n = len(outcomes)
    ranks = [o.rank for o in outcomes]
    top1 = sum(r == 1 for r in ranks)
    judged = [o.highlight_has_answer for o in outcomes if o.highlight_has_answer is not None]
    share = lambda count: round(count / n, 4) if n else 0.0  # noqa: E731
    summary = {
        "retriever": retriever,
        "k": k,
        "questions": n,
        "recall@1": share(top1),
        "recall@5": share(sum(r is not None and r <= 5 for r in ranks)),
        "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= 10) / n, 4) if n else 0.0,
        "answered": share(sum(o.answered for o in outcomes)),
        "highlight_has_answer": round(sum(judged) / len(judged), 4) if judged else None,
        "counts": {
            "questions": n,
            "hit@1": top1,
            "hit@5": sum(r is not None and r <= 5 for r in ranks),
            "gold_retrieved": sum(r is not None for r in ranks),  # anywhere in the top k
            "answered": sum(o.answered for o in outcomes),
            "gold_not_indexed": sum(not o.gold_indexed for o in outcomes),
            "top1_with_answers": len(judged),
            "highlight_has_answer": sum(judged),
        },
    }
    if seconds is not None:
        summary["ms_per_question"] = round(1000 * seconds / n, 2) if n else 0.0
    return summary


def evaluate(qa, questions: Sequence[Labeled], *, retriever: str = "hybrid", k: int = 10) -> dict:
    """Score ``questions`` against ``qa``'s index: :func:`score_questions`, then :func:`summarize`.

    ``ms_per_question`` does not count loading the model.
    """
    qa.snapshot()  # a missing index fails here, before the model is loaded
    _ = qa.embedder  # loaded outside the timing
    started = time.perf_counter()
    outcomes = score_questions(qa, questions, retriever=retriever, k=k)
    return summarize(outcomes, retriever=retriever, k=k, seconds=time.perf_counter() - started)
