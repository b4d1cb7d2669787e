"""Scoring retrieval on labeled questions: recall, MRR, nDCG, and whether "answered" can be trusted.

A labeled question names its gold in one of three ways:

- a passage, by ``doc`` and ``paragraph`` (and ``page`` for paged formats),
  where any window of that paragraph is a hit, or by ``text``, where a hit is a
  result whose text contains the gold text or is contained in it (whitespace
  runs compared as one space; ``doc``, if given, must match too);
- documents, by ``qrels`` (``{"doc": grade, ...}``, as BEIR distributes its
  judgements): the results are ranked as documents, each at the first position
  at which any of its passages appears, and scored with nDCG@10 (trec_eval's
  formula: gain = grade, log2 discount, the ideal ranking from every judged
  document), recall@10 and recall@100 (share of the relevant documents found)
  and MRR@10 (the first relevant document);
- none, with ``"answerable": false``: a question the documents cannot answer.

``doc`` may be the stored path, a unique path suffix, or a unique file name, as
in a citation. A question none of whose gold documents is in the index is
counted in ``gold_not_indexed``: for the figures on abstention it is a question
from outside the index, like an unanswerable one. Optional ``answers`` are
strings that the highlighted sentence of a correct top hit should contain.

Two figures say whether ``answered`` means what a reader takes it to mean:
``answered_when_top1_right``, the share answered of the questions whose first
result is right, and ``abstained_outside``, the share *not* answered of the
questions from outside the index.

Shared by ``qa eval`` and ``bench/quality.py``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

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
    qrels: tuple[tuple[str, int], ...] = ()  # (document, grade) judgements
    answerable: bool = True
    where: str = ""  # "file:line", for messages


@dataclass(frozen=True)
class Outcome:
    """What retrieval did with one labeled question."""

    id: str
    rank: int | None  # of the first gold hit (with qrels: the first relevant document), 1-based
    answered: bool
    confidence: float
    gold_indexed: bool  # False for an unanswerable question too
    highlight_has_answer: bool | None  # None unless the top hit is gold and answers are given
    documents: dict | None = None  # with qrels: ndcg@10, recall@10, recall@100


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
    qrels = item.get("qrels")
    if qrels is not None:
        if (
            not isinstance(qrels, dict)
            or not qrels
            or not all(isinstance(d, str) and d.strip() for d in qrels)
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in qrels.values())
        ):
            raise EvalError(f'{where}: "qrels" must map document names to whole-number grades from 0')
        if not any(qrels.values()):
            raise EvalError(f'{where}: "qrels" judges no document relevant (every grade is 0)')
    answerable = item.get("answerable", True)
    if not isinstance(answerable, bool):
        raise EvalError(f'{where}: "answerable" must be true or false')
    has_gold = text is not None or (doc is not None and paragraph is not None) or qrels is not None
    if not answerable and (has_gold or doc is not None):
        raise EvalError(f'{where}: a question with "answerable": false has no gold')
    if answerable and not has_gold:
        raise EvalError(
            f'{where}: give the gold "doc" and "paragraph", the gold "text", or "qrels"; '
            'or "answerable": false for a question the documents cannot answer'
        )
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
        qrels=tuple(sorted(qrels.items())) if qrels else (),
        answerable=answerable,
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


class Gold:
    """Resolves gold document names against the index, as citations do."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(set(paths))
        self._stored = set(self.paths)
        self._by_name: dict[str, list[str]] = {}
        for path in self.paths:  # a BEIR set judges thousands of names: look them up, not scan
            self._by_name.setdefault(path.rsplit("/", 1)[-1], []).append(path)

    def resolve(self, ref: str, where: str) -> str | None:
        if ref in self._stored:
            return ref
        matches = self._by_name.get(ref, []) if "/" not in ref else match_document(self.paths, ref)
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


def ranked_documents(passages_names: Iterable[tuple[str, ...]], limit: int | None = None) -> list[tuple[str, ...]]:
    """The documents of ranked passages (each given by its document's names: its path and the
    other paths of the same content) in order, each where its first passage is; ``limit`` at most."""
    seen: set[str] = set()
    ranked = []
    for names in passages_names:
        if limit is not None and len(ranked) >= limit:
            break
        if not seen.intersection(names):
            ranked.append(names)
        seen.update(names)
    return ranked


def hit_names(hits: Sequence[Hit]) -> Iterator[tuple[str, ...]]:
    """Each hit's document's names, as ``ranked_documents`` takes them."""
    return ((hit.passage.doc, *hit.passage.also) for hit in hits)


def document_scores(ranked: Sequence[tuple[str, ...]], grades: dict[str, int]) -> tuple[int | None, dict]:
    """Rank of the first relevant document, and nDCG@10, recall@10 and recall@100 of ``ranked``
    (documents, each a tuple of its names) against ``grades`` (document -> grade)."""
    gains = [max((grades.get(name, 0) for name in names), default=0) for names in ranked]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    relevant = sum(g > 0 for g in grades.values())
    first = next((i + 1 for i, g in enumerate(gains) if g > 0), None)
    scores = {
        "ndcg@10": dcg / idcg if idcg else 0.0,
        "recall@10": sum(g > 0 for g in gains[:10]) / relevant if relevant else 0.0,
        "recall@100": sum(g > 0 for g in gains[:100]) / relevant if relevant else 0.0,
    }
    return first, scores


def score_questions(qa, questions: Sequence[Labeled], *, retriever: str = "hybrid", k: int = 10) -> list[Outcome]:
    """Ask every question of ``qa`` (a :class:`qa.QA`) and judge its top ``k`` results."""
    gold = Gold(d.path for d in qa.documents())
    docs, grades = [], []
    for q in questions:
        resolved = gold.resolve(q.doc, q.where or q.id) if q.doc is not None else None
        docs.append(resolved)
        if q.doc is not None and resolved is None:
            logger.info("%s: gold doc %r is not in the index", q.where or q.id, q.doc)
        judged: dict[str, int] = {}
        for name, grade in q.qrels:
            stored = gold.resolve(name, q.where or q.id)
            judged[stored or f"\0{name}"] = grade  # a judged document outside the index still counts in the ideal
        grades.append(judged)
    outcomes = []
    answers = qa.ask_many(((q.id, q.question) for q in questions), k=k, retriever=retriever)
    for q, doc, judged, answer in zip(questions, docs, grades, answers):
        documents = None
        if not q.answerable:
            indexed, rank = False, None
        elif q.qrels:
            indexed = any(g > 0 and not name.startswith("\0") for name, g in judged.items())
            rank, documents = document_scores(ranked_documents(hit_names(answer.hits)), judged)
        else:
            indexed = q.doc is None or doc is not None
            rank = next((hit.rank for hit in answer.hits if _is_gold(hit, q, doc)), None) if indexed else None
        has_answer = None
        if rank == 1 and q.answers:
            has_answer = any(a in answer.hits[0].highlight for a in q.answers)
        outcomes.append(
            Outcome(q.id, rank, bool(answer.answered), float(answer.confidence), indexed, has_answer, documents)
        )
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
        **_calibration(outcomes),
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
    scored = [o.documents for o in outcomes if o.documents is not None]
    if scored:  # document-level figures of the questions judged by qrels
        for key in ("ndcg@10", "recall@10", "recall@100"):
            summary[key] = round(sum(d[key] for d in scored) / len(scored), 4)
        summary["counts"]["judged_by_qrels"] = len(scored)
    if seconds is not None:
        summary["ms_per_question"] = round(1000 * seconds / n, 2) if n else 0.0
    return summary


def _calibration(outcomes: Sequence[Outcome]) -> dict:
    """How far ``answered`` can be trusted: the share answered of the questions whose first
    result is right, and the share not answered of those from outside the index (None without any)."""
    right = [o.answered for o in outcomes if o.rank == 1]
    outside = [not o.answered for o in outcomes if not o.gold_indexed]
    return {
        "answered_when_top1_right": round(sum(right) / len(right), 4) if right else None,
        "abstained_outside": round(sum(outside) / len(outside), 4) if outside else None,
    }


def evaluate(qa, questions: Sequence[Labeled], *, retriever: str = "hybrid", k: int = 10) -> dict:
    """Score ``questions`` against ``qa``'s index: :func:`score_questions`, then :func:`summarize`.

    ``ms_per_question`` does not count loading the model.
    """
    qa.snapshot()  # a missing index fails here, before the model is loaded
    _ = qa.embedder  # loaded outside the timing
    started = time.perf_counter()
    outcomes = score_questions(qa, questions, retriever=retriever, k=k)
    return summarize(outcomes, retriever=retriever, k=k, seconds=time.perf_counter() - started)
