"""An index's segments: files written once by one commit, read together as one catalog.

A generation (``manifest.json``) is a small *live* catalog, copied at every
commit, and a list of segments. The live catalog holds what changes in place
and grows with the number of files, not of passages: every stored path and the
ids of documents *removed* since their segment was written. A segment holds what
one commit (or one merge) added: the documents' text, passages, sentences,
token vectors, OCR words, their full-text index, and two FAISS files of
passage and sentence vectors. It is never written again, so a commit writes
what it changed and copies nothing else, and each of its files keeps the
checksum it was committed with.

Readers see the segments as one catalog: each is ATTACHed to the live
catalog's connection and a temporary view of each table is the UNION ALL of
its segments' tables (ids are allocated across segments, so they never
collide). SQLite attaches at most ten databases, so a generation has at most
``MAX_SEGMENTS``; a commit that would leave more merges neighbouring ones.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Sequence

LIVE_SCHEMA = """
CREATE TABLE paths (
    path TEXT PRIMARY KEY,
    doc_id INTEGER NOT NULL,
    source TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    indexed_at REAL NOT NULL
);
CREATE INDEX paths_doc ON paths(doc_id);
-- Documents no path names any more whose rows are still in their segment, until a merge drops them.
CREATE TABLE removed (doc_id INTEGER PRIMARY KEY);
"""

OCR_WORDS_SCHEMA = """
CREATE TABLE ocr_words (
    doc_id INTEGER NOT NULL REFERENCES documents(id),
    page INTEGER NOT NULL,
    line INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    confidence REAL NOT NULL,
    x0 REAL NOT NULL,
    y0 REAL NOT NULL,
    x1 REAL NOT NULL,
    y1 REAL NOT NULL
);
CREATE INDEX ocr_words_doc ON ocr_words(doc_id, page, start);
"""

SEGMENT_SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    format TEXT NOT NULL,
    encoding TEXT,
    text TEXT NOT NULL
);
CREATE INDEX documents_sha ON documents(sha256);
CREATE TABLE passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id),
    seq INTEGER NOT NULL,
    paragraph INTEGER NOT NULL,
    window INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    page INTEGER,
    section TEXT,
    text TEXT NOT NULL,
    ocr_confidence REAL  -- mean confidence (0-1) of its words read by OCR; NULL when none was
);
CREATE INDEX passages_doc ON passages(doc_id, seq, window);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    passage_id INTEGER NOT NULL REFERENCES passages(id),
    start INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE INDEX sentences_passage ON sentences(passage_id);
CREATE TABLE passage_tokens (
    passage_id INTEGER PRIMARY KEY REFERENCES passages(id),
    sentences BLOB NOT NULL,
    vectors BLOB NOT NULL
);
CREATE VIRTUAL TABLE passages_fts USING fts5(
    section, text, content='passages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
""" + OCR_WORDS_SCHEMA

# The tables a segment holds, each seen by readers as one view over every segment.
TABLES = ("documents", "passages", "sentences", "passage_tokens", "ocr_words")
# Ids allocated across segments: a new segment's tables count on from the last id given.
COUNTED = ("documents", "passages", "sentences")

MAX_SEGMENTS = 8
"""A commit leaving more segments merges neighbouring ones (SQLite attaches at most ten databases)."""


def segment_files(number: int) -> dict[str, str]:
    return {"catalog": f"seg-{number}.sqlite", "passages": f"seg-{number}-passages.faiss",
            "sentences": f"seg-{number}-sentences.faiss"}


def connect(live: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection to a live catalog that can ATTACH segments by URI (read-only ones shared between threads)."""
    if read_only:
        return sqlite3.connect(f"file:{live}?mode=ro", uri=True, check_same_thread=False)
    return sqlite3.connect(f"file:{live}", uri=True)


def attach(db: sqlite3.Connection, folder: Path, catalogs: Sequence[str], *, writable: str | None = None) -> list[str]:
    """ATTACH each segment catalog read-only (``writable``, the new segment's, read-write as ``new``)
    and make the views; returns the schema names, the writable one first."""
    schemas = []
    if writable is not None:
        db.execute("ATTACH DATABASE ? AS new", (f"file:{folder / writable}",))
        schemas.append("new")
    for number, name in enumerate(catalogs):
        schema = f"s{number}"
        db.execute(f"ATTACH DATABASE ? AS {schema}", (f"file:{folder / name}?mode=ro",))
        # Read through memory maps (SQLite caps them at 2 GB a file): a segment is never
        # written or truncated once committed, and a question's token vectors (some
        # 7 MB on SciFact) then cost 1.4 ms instead of 2.6 through read() calls.
        db.execute(f"PRAGMA {schema}.mmap_size = {1 << 40}")
        schemas.append(schema)
    for table in TABLES:
        db.execute(f"DROP VIEW IF EXISTS temp.{table}")
        if schemas:
            union = " UNION ALL ".join(_select_all(db, schema, table) for schema in schemas)
        else:  # no segment (every document removed): an empty view of the right shape
            union = "SELECT " + ", ".join(f"NULL AS {c}" for c in COLUMNS[table]) + " WHERE 0"
        db.execute(f"CREATE TEMP VIEW {table} AS {union}")
    return schemas


def _columns() -> dict[str, list[str]]:
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SEGMENT_SCHEMA)
        return {table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")] for table in TABLES}
    finally:
        db.close()


COLUMNS = _columns()


def _select_all(db: sqlite3.Connection, schema: str, table: str) -> str:
    """Every column of the current segment schema, in its order; NULL for one an older segment lacks
    (a format 5 catalog linked as a segment, never rewritten)."""
    have = {row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")}
    columns = ", ".join(c if c in have else f"NULL AS {c}" for c in COLUMNS[table])
    return f"SELECT {columns} FROM {schema}.{table}"


def create_segment(path: Path, next_ids: dict[str, int]) -> None:
    """An empty segment catalog whose ids start where the index's left off."""
    db = sqlite3.connect(path)
    try:
        db.executescript(SEGMENT_SCHEMA)
        db.executemany(
            "INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", [(t, next_ids[t] - 1) for t in COUNTED]
        )
        db.commit()
    finally:
        db.close()


def id_ranges(db: sqlite3.Connection, schema: str) -> dict[str, list[int]]:
    """``table -> [lowest, highest]`` id of one attached segment (``[0, -1]`` when empty)."""
    out = {}
    for table in COUNTED:
        low, high = db.execute(f"SELECT MIN(id), MAX(id) FROM {schema}.{table}").fetchone()
        out[table] = [low, high] if low is not None else [0, -1]
    return out


def removed_ids(db: sqlite3.Connection) -> tuple[list[int], list[int]]:
    """Passage and sentence ids of the removed documents still in their segments."""
    passages = [r[0] for r in db.execute("SELECT id FROM passages WHERE doc_id IN (SELECT doc_id FROM main.removed)")]
    sentences = [
        r[0]
        for r in db.execute(
            "SELECT s.id FROM sentences s JOIN passages p ON p.id = s.passage_id "
            "WHERE p.doc_id IN (SELECT doc_id FROM main.removed)"
        )
    ]
    return passages, sentences


def copy_live_rows(db: sqlite3.Connection, source: str, target: str) -> None:
    """Copy one segment's rows of documents not removed into ``target`` (a merge), full-text index rebuilt after."""
    alive = "NOT IN (SELECT doc_id FROM main.removed)"
    live_passages = f"(SELECT id FROM {source}.passages WHERE doc_id {alive})"
    where = {"documents": f"id {alive}", "passages": f"doc_id {alive}", "sentences": f"passage_id IN {live_passages}",
             "passage_tokens": f"passage_id IN {live_passages}", "ocr_words": f"doc_id {alive}"}
    for table in TABLES:
        db.execute(f"INSERT INTO {target}.{table} SELECT * FROM ({_select_all(db, source, table)}) WHERE {where[table]}")


def choose_merge(sizes: Sequence[int], limit: int = MAX_SEGMENTS) -> tuple[int, int] | None:
    """The run of neighbouring segments ``[start, stop)`` to merge so that at most ``limit`` remain.

    Of the runs long enough, the one holding the fewest passages: like Lucene's
    log merge policy, merges mostly join small recent segments, so a commit
    rarely rewrites much, and a big segment is rewritten only by ``qa compact``
    or once enough mid-sized ones have grown beside it.
    """
    excess = len(sizes) - limit
    if excess <= 0:
        return None
    width = excess + 1
    best = min(range(len(sizes) - width + 1), key=lambda i: (sum(sizes[i : i + width]), -i))
    return best, best + width


def global_idf(rows: int, hits: int) -> float:
    """FTS5's bm25 idf for a phrase matching ``hits`` of ``rows`` rows (floored as FTS5 floors it)."""
    idf = math.log((rows - hits + 0.5) / (hits + 0.5))
    return idf if idf > 0 else 1e-6
