"""Retrieval quality on the shared SQuAD dev set, every retriever in one run, and abstention.

    python bench/quality.py [--data ../shared/bench/squad-dev] [--index DIR] [--half-index DIR]

Indexes the articles (once; the index is reused when it exists), asks every
labeled question, and prints recall@1, recall@5, MRR@10 and the share answered
for the hybrid, lexical-only and dense-only retrievers, plus the share of
top-1 hits whose highlighted sentence contains a gold answer. The scoring is
``qa.evaluate``, the same as ``qa eval``.

Then abstention: every other article (in sorted order) goes into a second
index; the questions about the other half are out of corpus and should get
``answered == false``, those about the indexed half should get ``answered ==
true``. Prints both shares at the library's threshold and, for whoever
calibrates it, at other thresholds on the top passage's best-sentence cosine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA  # noqa: E402
from qa.evaluate import evaluate, read_labeled, score_questions  # noqa: E402
from qa.search import ANSWER_CONFIDENCE, RETRIEVERS  # noqa: E402

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)


def table(rows: list[dict], header: list[str]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


def half_index(qa: QA, docs: Path, folder: Path) -> tuple[set[str], dict]:
    """Index every other article of ``docs`` (sorted) into ``folder``; the names indexed."""
    files = sorted(p for p in docs.iterdir() if p.is_file() and not p.name.startswith("."))
    inside = files[0::2]
    half = QA(folder, embedder=qa.embedder)
    started = time.perf_counter()
    report = half.index(inside)
    names = {f.name for f in inside}
    stale = sorted({d.path for d in half.documents()} - names)  # a cached index built from another split
    if stale:
        half.remove(stale)
    info = {
        "indexed": len(names),
        "held_out": len(files) - len(names),
        "seconds": round(time.perf_counter() - started, 1),
        "unchanged": len(report.unchanged),
    }
    return names, info


def abstention(qa: QA, docs: Path, questions, folder: Path) -> dict:
    names, info = half_index(qa, docs, folder)
    half = QA(folder, embedder=qa.embedder)
    inside = [q for q in questions if PurePosixPath(q.doc).name in names]
    outside = [q for q in questions if PurePosixPath(q.doc).name not in names]
    seen = score_questions(half, inside, retriever="hybrid", k=10)
    unseen = score_questions(half, outside, retriever="hybrid", k=10)
    share = lambda xs: round(sum(xs) / len(xs), 4) if xs else 0.0  # noqa: E731
    sweep = []
    for t in sorted({*THRESHOLDS, ANSWER_CONFIDENCE}):
        sweep.append({
            "threshold": t,
            "out_of_corpus_abstained": share([o.confidence < t for o in unseen]),
            "in_corpus_answered": share([o.confidence >= t for o in seen]),
            "in_corpus_answered_and_top1_right": share([o.confidence >= t and o.rank == 1 for o in seen]),
        })
    return {
        **info,
        "threshold": ANSWER_CONFIDENCE,
        "out_of_corpus_questions": len(unseen),
        "out_of_corpus_abstained": share([not o.answered for o in unseen]),
        "in_corpus_questions": len(seen),
        "in_corpus_answered": share([o.answered for o in seen]),
        "in_corpus_recall@1": share([o.rank == 1 for o in seen]),
        "sweep": sweep,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default: a temporary one)")
    parser.add_argument(
        "--half-index", type=Path, default=None,
        help="index folder for the abstention half (default: INDEX-half, else a temporary one)",
    )
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    args = parser.parse_args()

    docs = args.data / "docs"
    questions = read_labeled(args.data / "questions.jsonl")
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
    rows = [evaluate(qa, questions, retriever=retriever, k=10) for retriever in RETRIEVERS]
    table(rows, ["retriever", "recall@1", "recall@5", "mrr@10", "answered", "highlight_has_answer", "ms_per_question"])
    print(json.dumps(rows))

    half_dir = args.half_index or (
        index_dir.with_name(index_dir.name + "-half") if args.index else Path(tempfile.mkdtemp(prefix="qa-bench-half-"))
    )
    result = abstention(qa, docs, questions, half_dir)
    print(
        f"\nabstention (hybrid): {result['indexed']} articles indexed, {result['held_out']} held out; "
        f"answered means confidence (mean of best-sentence cosine and question-word coverage) >= {result['threshold']}"
    )
    print(
        f"out of corpus: {result['out_of_corpus_abstained']} of {result['out_of_corpus_questions']} questions "
        f"get answered == false"
    )
    print(
        f"in corpus:     {result['in_corpus_answered']} of {result['in_corpus_questions']} questions "
        f"get answered == true (recall@1 {result['in_corpus_recall@1']})"
    )
    table(
        result["sweep"],
        ["threshold", "out_of_corpus_abstained", "in_corpus_answered", "in_corpus_answered_and_top1_right"],
    )
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}))


if __name__ == "__main__":
    main()
