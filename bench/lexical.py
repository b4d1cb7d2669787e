"""Lexical search at scale: SQLite FTS5 (what the index uses) against tantivy (block-max WAND), same queries.

    python bench/lexical.py [--sizes 15000,100000,1000000] [--queries 300] [--work DIR]

The corpus is real text recombined. Every document of the shared sets
(``../shared/bench``: SciFact's and NFCorpus's abstracts, SQuAD's articles) is
cut into sentences (a full stop, question or exclamation mark and a space); a
passage is 3 to 6 consecutive sentences of one document, from a random first
sentence (seeded), so passages read like the sets' own and the words keep their
real frequencies, while at a million passages every term's postings are some
70 times longer than in SciFact. The questions are the sets' own (SciFact,
NFCorpus, SQuAD in turn), made into the OR of their content words as
``qa.lexical.fts_query`` does.

Both engines score bm25 over the same words (FTS5's ``porter unicode61``
tokenizer; tantivy's ``en_stem``, also a Porter stemmer) and are asked what
``qa.search`` asks: the 100 best passages of a question (``top 100``), and the
bm25 of 100 chosen passages (``given 100``: the dense candidates the lexical
side did not bring, here the ids ranked 101-200 by the same engine). FTS5 is
measured as ``qa.storage.Snapshot.lexical`` runs it (every match's score in
one query) and as ``ORDER BY bm25 LIMIT 100``; tantivy with a term-set filter
for the given ids. ``agree@10`` is the share of FTS5's ten best that tantivy
also ranks in its ten best: the two bm25s differ in detail (FTS5 adds the
section column into one document length; tantivy's idf and length norms are
Lucene's), so it says how close a switch would leave the rankings, not which
is right; that is for bench/lexical_quality.py (every set, FTS5 and tantivy
in one run).

Prints one markdown table: build seconds, index bytes a passage, and per engine
and query kind p50/p95 milliseconds, one query at a time on one thread.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.lexical import question_terms  # noqa: E402

BENCH = ROOT.parent / "shared" / "bench"
SETS = ("scifact", "nfcorpus", "squad-dev")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_BM25 = "bm25(passages_fts, 0.5, 1.0)"


def sentences_by_document() -> list[list[str]]:
    docs = []
    for name in SETS:
        for path in sorted((BENCH / name / "docs").iterdir()):
            text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            parts = [s for s in _SENTENCE_END.split(text) if len(s) > 20]
            if parts:
                docs.append(parts)
    return docs


def passages(docs: list[list[str]], n: int, seed: int = 13):
    rng = random.Random(seed)
    for _ in range(n):
        doc = docs[rng.randrange(len(docs))]
        length = rng.randint(3, 6)
        first = rng.randrange(max(1, len(doc) - length + 1))
        yield " ".join(doc[first : first + length])


def questions(limit: int) -> list[list[str]]:
    per_set = [
        [question_terms(json.loads(line)["question"]) for line in (BENCH / name / "questions.jsonl").open()]
        for name in SETS
    ]
    mixed = [q for group in zip(*per_set) for q in group if q]
    return mixed[:limit]


class Fts5:
    name = "FTS5"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "fts.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "CREATE TABLE passages (id INTEGER PRIMARY KEY, section TEXT, text TEXT NOT NULL);"
            "CREATE VIRTUAL TABLE passages_fts USING fts5(section, text, content='passages', content_rowid='id',"
            " tokenize='porter unicode61 remove_diacritics 2');"
        )

    def build(self, texts) -> None:
        with self.db:
            self.db.executemany("INSERT INTO passages (id, section, text) VALUES (?, NULL, ?)", enumerate(texts, 1))
            self.db.execute("INSERT INTO passages_fts (rowid, section, text) SELECT id, section, text FROM passages")
            self.db.execute("INSERT INTO passages_fts (passages_fts) VALUES ('optimize')")

    def bytes(self) -> int:
        # Only the full-text index: the passages table is the text itself.
        (pages,) = self.db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'passages_fts%'").fetchone()
        return int(pages)

    @staticmethod
    def _match(terms: list[str]) -> str:
        return " OR ".join(f'"{t}"' for t in terms)

    def every_match(self, terms: list[str]) -> dict[int, float]:
        sql = f"SELECT rowid, -{_BM25} FROM passages_fts WHERE passages_fts MATCH ?"
        return dict(self.db.execute(sql, (self._match(terms),)).fetchall())

    def top(self, terms: list[str], k: int) -> list[int]:
        sql = f"SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY {_BM25} LIMIT ?"
        return [r[0] for r in self.db.execute(sql, (self._match(terms), k))]


class Tantivy:
    name = "tantivy"

    def __init__(self, folder: Path) -> None:
        import tantivy

        self.t = tantivy
        self.folder = folder / "tantivy"
        self.folder.mkdir()
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("id", stored=False, indexed=True, fast=True)
        builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
        self.schema = builder.build()
        self.index = tantivy.Index(self.schema, path=str(self.folder))

    def build(self, texts) -> None:
        writer = self.index.writer(heap_size=256_000_000, num_threads=1)
        for i, text in enumerate(texts, 1):
            writer.add_document(self.t.Document(id=i, text=text))
        writer.commit()
        writer.wait_merging_threads()
        self.index.reload()
        self.searcher = self.index.searcher()

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def _query(self, terms: list[str]):
        # Plain lower-case words, so the parser sees no operator; OR is its default.
        return self.index.parse_query(" ".join(terms), ["text"])

    def _ids(self, result) -> list[tuple[int, float]]:
        addresses = [address for _, address in result.hits]
        ids = self.searcher.fast_field_values("id", addresses)
        return [(int(i), float(score)) for i, (score, _) in zip(ids, result.hits)]

    def top(self, terms: list[str], k: int) -> list[int]:
        return [i for i, _ in self._ids(self.searcher.search(self._query(terms), k))]

    def given(self, terms: list[str], ids: list[int]) -> dict[int, float]:
        if not ids:
            return {}
        t = self.t
        only = t.Query.const_score_query(t.Query.term_set_query(self.schema, "id", ids), 0.0)
        query = t.Query.boolean_query([(t.Occur.Must, self._query(terms)), (t.Occur.Must, only)])
        return dict(self._ids(self.searcher.search(query, len(ids))))


def timed(call, items) -> tuple[list, float, float]:
    out, times = [], []
    for item in items:
        start = time.perf_counter()
        out.append(call(item))
        times.append(time.perf_counter() - start)
    times.sort()
    return out, 1000 * statistics.median(times), 1000 * times[int(0.95 * (len(times) - 1))]


def measure(size: int, docs, queries, work: Path) -> list[str]:
    folder = Path(tempfile.mkdtemp(dir=work))
    rows = []
    try:
        fts, tan = Fts5(folder), Tantivy(folder)
        built = {}
        for engine in (fts, tan):
            start = time.perf_counter()
            engine.build(passages(docs, size))
            built[engine.name] = time.perf_counter() - start
        fts_top, p50, p95 = timed(lambda q: fts.top(q, 100), queries)
        _, e50, e95 = timed(fts.every_match, queries)
        tan_top, t50, t95 = timed(lambda q: tan.top(q, 100), queries)
        nexts = [fts.top(q, 200)[100:] for q in queries]
        pairs = list(zip(queries, nexts))
        _, g50, g95 = timed(lambda pair: tan.given(*pair), pairs)
        agree = statistics.mean(len(set(a[:10]) & set(b[:10])) / max(1, min(10, len(a))) for a, b in zip(fts_top, tan_top))
        rows.append(
            f"| {size:,} | FTS5 | {built['FTS5']:.0f} | {fts.bytes() / size:.0f} | "
            f"{p50:.1f} / {p95:.1f} | {e50:.1f} / {e95:.1f} (every match, as `qa` asks) | {agree:.2f} |"
        )
        rows.append(
            f"| {size:,} | tantivy | {built['tantivy']:.0f} | {tan.bytes() / size:.0f} | "
            f"{t50:.1f} / {t95:.1f} | {g50:.1f} / {g95:.1f} (100 given ids) | |"
        )
        fts.db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="15000,100000,1000000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    docs = sentences_by_document()
    queries = questions(args.queries)
    print(f"{sum(map(len, docs)):,} sentences of {len(docs):,} documents; {len(queries)} questions\n")
    print("| passages | engine | build s | index bytes / passage | top 100 p50 / p95 ms | scores p50 / p95 ms | agree@10 |")
    print("|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for row in measure(size, docs, queries, args.work):
            print(row, flush=True)


if __name__ == "__main__":
    main()
