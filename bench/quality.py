"""Retrieval quality on the shared SQuAD dev set, every retriever in one run.

    python bench/quality.py [--data ../shared/bench/squad-dev] [--index DIR]

Indexes the articles (once; the index is reused when it exists), asks every
labeled question, and prints recall@1, recall@5, MRR@10 and the share answered
for the hybrid, lexical-only and dense-only retrievers, plus the share of
top-1 hits whose highlighted sentence contains a gold answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA  # noqa: E402
from qa.search import RETRIEVERS  # noqa: E402


def load_questions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def is_gold(hit: dict, question: dict, doc_prefix: str) -> bool:
    return hit["doc"] == doc_prefix + question["doc"] and hit["paragraph"] == question["paragraph"]


def evaluate(qa: QA, questions: list[dict], retriever: str, doc_prefix: str) -> dict:
    ranks: list[int | None] = []
    answered = highlighted = 0
    started = time.perf_counter()
    pairs = ((q["id"], q["question"]) for q in questions)
    for question, answer in zip(questions, qa.ask_many(pairs, k=10, retriever=retriever)):
        results = answer.to_json()["results"]
        rank = next((r["rank"] for r in results if is_gold(r, question, doc_prefix)), None)
        ranks.append(rank)
        answered += answer.answered
        if rank == 1 and any(a in results[0]["highlight"] for a in question.get("answers", [])):
            highlighted += 1
    elapsed = time.perf_counter() - started
    n = len(questions)
    top1 = sum(r == 1 for r in ranks)
    return {
        "retriever": retriever,
        "questions": n,
        "recall@1": round(top1 / n, 4),
        "recall@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
        "mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
        "answered": round(answered / n, 4),
        "highlight_has_answer": round(highlighted / top1, 4) if top1 else 0.0,
        "ms_per_question": round(1000 * elapsed / n, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default: a temporary one)")
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    args = parser.parse_args()

    docs = args.data / "docs"
    questions = load_questions(args.data / "questions.jsonl")
    if args.limit:
        questions = questions[: args.limit]
    index_dir = args.index or Path(tempfile.mkdtemp(prefix="qa-bench-"))
    qa = QA(index_dir)
    started = time.perf_counter()
    report = qa.index([docs])
    index_seconds = time.perf_counter() - started
    print(
        f"indexed {len(report.added) + len(report.updated)} documents, {report.passages_embedded} passages, "
        f"{report.sentences_embedded} sentences in {index_seconds:.1f} s ({len(report.unchanged)} unchanged)"
    )
    rows = [evaluate(qa, questions, retriever, doc_prefix=docs.name + "/") for retriever in RETRIEVERS]
    header = ["retriever", "recall@1", "recall@5", "mrr@10", "answered", "highlight_has_answer", "ms_per_question"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
