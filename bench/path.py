"""What a user waits for on a real index: the whole question path, a batch, the bytes, one document in and out.

    python bench/path.py [--index DIR] [--questions FILE] [--count 300] [--retrievers hybrid,fused,lexical,dense]
    python bench/path.py --build 100000 [--work DIR]

Defaults to the SciFact index that bench/quality.py builds (``~/.cache/qa/bench/
scifact``: 5,183 abstracts, 14,677 passages) and SciFact's own questions.
``--build N`` first writes a corpus of about N passages of real text and
indexes it (``--work``/real-N, default ``~/.cache/qa/bench``; an index that
exists is reused): the sentences of the shared sets' documents recombined as
bench/lexical.py does (a passage is 3 to 6 consecutive sentences of one
document, from a seeded random start), ten passages a file as paragraphs, and
the questions are the sets' own (SciFact, NFCorpus, SQuAD in turn). Indexing
time and passages a second are then reported too. At 100,000 passages the
build takes about half an hour on 2 cores, embedding being nearly all of it;
at 1,000,000 (a slow mode) some five hours. In one warm process it measures:

- ``qa ask``'s whole path per retriever, one question at a time, as
  ``QA.ask`` runs it for the CLI and the page: the question's embedding, the
  lexical and vector searches, the signals, fusion, highlights, confidence;
  p50 and p95 over ``--count`` questions (after ten to warm up). Each
  question is asked twice in turn: with the full-text search and the
  token-by-token scores on worker threads, as shipped, and with them on the
  calling thread (``qa.search.OVERLAP`` off), the baseline in brackets;
- ``qa batch``: questions a second through ``QA.ask_many`` (64 embedded at a
  time), the default retriever, both ways;
- the index's bytes a passage: every file of the live generation, and the same
  less the passages' and documents' text (what the issue's 6 KB counts);
- the process's peak resident memory;
- adding one document (a new abstract made of two of the index's own, so the
  model embeds real text) and removing it again, each one commit, timed from
  the call to the new generation being live.

The add and the remove leave the index with the documents it had, one
generation later. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA
from qa.storage import open_snapshot  # noqa: E402
import qa.search as search_module  # noqa: E402
from qa.search import RETRIEVERS  # noqa: E402

SHARED = ROOT.parent / "shared" / "bench"


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return 1000 * times[len(times) // 2], 1000 * times[int(0.95 * (len(times) - 1))]


def ask_both_ways(qa: QA, questions: list[str], retriever: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50 and p95 of ``qa.ask`` with the full-text and token-by-token work on worker threads
    (as shipped), and of the same questions with that work in turn (``qa.search.OVERLAP`` off,
    the baseline), each question asked both ways one after the other."""
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for question in questions:
            for overlap in (False, True):
                search_module.OVERLAP = overlap
                start = time.perf_counter()
                qa.ask(question, retriever=retriever)
                times[overlap].append(time.perf_counter() - start)
    finally:
        search_module.OVERLAP = True
    return percentiles(times[True]), percentiles(times[False])


def text_bytes(catalog: Path) -> int:
    db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        (total,) = db.execute(
            "SELECT (SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM passages)"
            " + (SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM documents)"
        ).fetchone()
    finally:
        db.close()
    return int(total)


PER_FILE = 10


def build(size: int, work: Path) -> tuple[Path, list[tuple[str, str]]]:
    """Write and index about ``size`` passages of recombined real text; the index and its build figures."""
    from bench.lexical import passages, sentences_by_document

    folder = work / f"real-{size}"
    docs, index = folder / "docs", folder / "index"
    if not docs.exists():
        docs.mkdir(parents=True)
        texts = list(passages(sentences_by_document(), size))
        for at in range(0, len(texts), PER_FILE):
            (docs / f"rc-{at // PER_FILE:06d}.txt").write_text("\n\n".join(texts[at : at + PER_FILE]) + "\n", encoding="utf-8")
    start = time.perf_counter()
    report = QA(index).index([docs], progress=True)
    seconds = time.perf_counter() - start
    rows = []
    if report.passages_embedded:
        rows.append(("indexing", f"{seconds:,.0f} s, {report.passages_embedded / seconds:.1f} passages/s "
                                 f"({report.passages_embedded:,} passages, {len(report.added):,} files)"))
    return index, rows


def mixed_questions() -> list[str]:
    from bench.lexical import SETS

    per_set = [[json.loads(line)["question"] for line in (SHARED / name / "questions.jsonl").open()] for name in SETS]
    return [q for group in zip(*per_set) for q in group]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path.home() / ".cache" / "qa" / "bench" / "scifact")
    parser.add_argument("--questions", type=Path, default=SHARED / "scifact" / "questions.jsonl")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--retrievers", default=",".join(RETRIEVERS))
    parser.add_argument("--build", type=int, default=0, help="index about this many passages of real text first")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qa" / "bench")
    args = parser.parse_args()

    rows = []
    if args.build:
        args.index, rows = build(args.build, args.work)
        questions = mixed_questions()[: args.count]
    else:
        questions = [json.loads(line)["question"] for line in args.questions.open()][: args.count]
    qa = QA(args.index)
    for question in questions[:10]:
        qa.ask(question)
    for retriever in args.retrievers.split(","):
        overlapped, in_turn = ask_both_ways(qa, questions, retriever)
        rows.append((f"`qa ask`, {retriever}", f"p50 {overlapped[0]:.1f} ms, p95 {overlapped[1]:.1f} ms "
                                              f"(in turn: {in_turn[0]:.1f}, {in_turn[1]:.1f})"))
    rates = {}
    for overlap in (False, True):
        search_module.OVERLAP = overlap
        start = time.perf_counter()
        answered = sum(1 for _ in qa.ask_many((None, q) for q in questions))
        rates[overlap] = answered / (time.perf_counter() - start)
    rows.append(("`qa batch`, hybrid", f"{rates[True]:.1f} questions/s (in turn: {rates[False]:.1f})"))

    snapshot = qa.snapshot()
    passages = snapshot.manifest["counts"]["passages"]
    files = [args.index / name for name in snapshot.manifest["files"].values()]
    catalogs = [args.index / s["files"]["catalog"] for s in snapshot.manifest["segments"]]
    for segment in snapshot.manifest["segments"]:
        files += [args.index / name for key, name in segment["files"].items() if key != "catalog"]
    total = sum(p.stat().st_size for p in files + catalogs)
    text = sum(text_bytes(catalog) for catalog in catalogs)
    rows.append(("index bytes a passage", f"{total / passages:,.0f} ({(total - text) / passages:,.0f} beside the text)"))
    rows.append(("segments", str(len(snapshot.manifest["segments"]))))
    import qa.storage.manifest as manifest_module
    import qa.storage.snapshot as snapshot_module

    verified, loaded = dict(manifest_module._VERIFIED), dict(snapshot_module._LOADED)
    manifest_module._VERIFIED.clear()
    snapshot_module._LOADED.clear()
    start = time.perf_counter()
    open_snapshot(args.index).close()  # every file hashed and every vector file read, as a new process does
    rows.append(("opening the index in a new process (checksums, vectors)", f"{time.perf_counter() - start:.2f} s"))
    manifest_module._VERIFIED.update(verified)
    snapshot_module._LOADED.update(loaded)

    docs = sorted(d.path for d in qa.documents())
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp) / "bench-path-extra.txt"
        extra.write_text(
            "\n\n".join((qa.snapshot().document_text(p) or "") for p in docs[:2]) + "\n\nadded by bench/path.py\n",
            encoding="utf-8",
        )
        start = time.perf_counter()
        qa.index([extra])
        added = time.perf_counter() - start
        rows.append(("add one document (one commit)", f"{added:.2f} s"))
        start = time.perf_counter()
        qa.snapshot()
        rows.append(("a reader's reopen after that commit", f"{time.perf_counter() - start:.2f} s"))
        # The question path over two segments (bm25 term by term with the index-wide idf).
        segments = len(qa.snapshot().manifest["segments"])
        overlapped, in_turn = ask_both_ways(qa, questions, "hybrid")
        rows.append((f"`qa ask`, hybrid, {segments} segments", f"p50 {overlapped[0]:.1f} ms, p95 {overlapped[1]:.1f} ms "
                                                               f"(in turn: {in_turn[0]:.1f}, {in_turn[1]:.1f})"))
        stored = [d.path for d in qa.documents() if d.path.endswith(extra.name)]
        start = time.perf_counter()
        qa.remove(stored)
        removed = time.perf_counter() - start
        rows.append(("remove one document (one commit)", f"{removed:.2f} s"))
        if args.build:  # a built corpus only: its folder puts the document back after
            other = docs[len(docs) // 2]
            start = time.perf_counter()
            qa.remove([other])
            rows.append(("remove one document of the first segment (one commit)",
                         f"{time.perf_counter() - start:.2f} s"))
            qa.index([args.index.parent / "docs"])
    rows.append(("peak resident memory", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"))

    print(f"{args.index}: {passages:,} passages, {len(docs):,} documents, {len(questions)} questions\n")
    print("| measured | figure |\n|---|---|")
    for name, figure in rows:
        print(f"| {name} | {figure} |")


if __name__ == "__main__":
    main()
