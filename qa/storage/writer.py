"""Writing an index folder: the next generation built beside the live one, committed by replacing the manifest.

Each commit is a generation: the writer builds ``catalog-N.sqlite``,
``passages-N.faiss`` and ``sentences-N.faiss`` beside the live files, flushes
them, then replaces ``manifest.json`` (which names them and holds their
checksums) in one ``os.replace``. A crash at any instant leaves the previous
manifest, and so the previous generation, whole and readable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from embeddings import VectorIndex
from embeddings.tokens import pack as pack_tokens
from qa.records import OcrWord, PassageSpan, mean_confidence
from qa.storage.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    IndexLocked,
    IndexMissing,
    IndexOutdated,
    ModelInfo,
    StoreError,
    check_model,
    fsync_dir,
    read_manifest,
    sha256_file,
)
from qa.storage.snapshot import Snapshot

logger = logging.getLogger(__name__)

LOCK = ".lock"

_SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    format TEXT NOT NULL,
    encoding TEXT,
    text TEXT NOT NULL
);
CREATE TABLE paths (
    path TEXT PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id),
    source TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    indexed_at REAL NOT NULL
);
CREATE INDEX paths_doc ON paths(doc_id);
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
"""
_OCR_WORDS = """
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
_SCHEMA += _OCR_WORDS

# Earlier formats that the current one only adds to, and the SQL that adds it: nothing
# stored changes meaning, so such an index is brought up to date on a copy of its
# catalog, its vectors kept, with no embedding (``qa.upgrade``). Format 4 read no
# scans, so its passages have no OCR confidence and its documents no OCR words.
MIGRATIONS = {4: "ALTER TABLE passages ADD COLUMN ocr_confidence REAL;" + _OCR_WORDS}


@dataclass(frozen=True)
class PathState:
    sha256: str
    source: str | None
    size: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class StoredPassage:
    """A passage span with where a reader finds it: page, paragraph on that page, section."""

    span: PassageSpan
    paragraph: int
    page: int | None = None
    section: str | None = None


_FOLDER_LOCKS: dict[str, threading.Lock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def _folder_lock(folder: Path) -> threading.Lock:
    with _FOLDER_LOCKS_GUARD:
        return _FOLDER_LOCKS.setdefault(str(folder.resolve()), threading.Lock())


class Writer:
    """Builds the next generation of an index; ``commit()`` makes it live.

    Only one writer may hold an index at a time (an advisory file lock); readers
    are never blocked and keep seeing the previous generation until the commit.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        model: ModelInfo,
        *,
        settings: dict | None = None,
        fresh: bool = False,
        migrate: bool = False,
    ) -> None:
        """``fresh`` starts the next generation empty, whatever the live one holds
        (an index of an older format, being rebuilt: ``qa.upgrade``); ``migrate``
        starts it from a live one of a format in ``MIGRATIONS``, brought up to date."""
        self.folder = Path(folder)
        self.model = model
        self.settings = settings or {}
        self.fresh = fresh
        self.migrate = migrate
        self._lock_handle = None
        self._thread_lock: threading.Lock | None = None
        self._db: sqlite3.Connection | None = None
        self._new_files: dict[str, Path] = {}
        self._old_files: list[Path] = []

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> "Writer":
        self.folder.mkdir(parents=True, exist_ok=True)
        # POSIX record locks (lockf) exclude other processes and, unlike flock,
        # are not inherited by the parser children forked while indexing, so a
        # killed indexer never leaves its lock behind in an orphan. They do not
        # exclude threads of this process: a lock per folder does that, and is
        # taken first, because closing any handle of the lock file would drop
        # this process's record lock.
        self._thread_lock = _folder_lock(self.folder)
        if not self._thread_lock.acquire(blocking=False):
            self._thread_lock = None
            raise IndexLocked(f"index {self.folder} is being updated; try again later")
        self._lock_handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.lockf(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_handle.close()
            self._lock_handle = None
            self._thread_lock.release()
            self._thread_lock = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexLocked(f"index {self.folder} is being updated by another process; try again later") from None
            raise
        try:
            self._begin()
        except BaseException:
            self._abort()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._db is not None:
                self.commit()
        finally:
            self._abort()

    def _begin(self) -> None:
        migration = None  # the SQL that brings an outdated catalog up to date (``migrate``)
        try:
            manifest = read_manifest(self.folder)
        except IndexMissing:
            manifest = None
        except IndexOutdated:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
            if not (self.fresh or (self.migrate and manifest.get("format") in MIGRATIONS)):
                raise
            if not self.fresh:
                migration = MIGRATIONS[manifest["format"]]
        self._remove_stray_files(manifest)
        generation = (manifest["generation"] if manifest else 0) + 1
        self.generation = generation
        self._new_files = {
            "catalog": self.folder / f"catalog-{generation}.sqlite",
            "passages": self.folder / f"passages-{generation}.faiss",
            "sentences": self.folder / f"sentences-{generation}.faiss",
        }
        dim = self.model.dimension
        if manifest:
            check_model(manifest, self.model, self.folder)
            self._old_files = [self.folder / name for name in manifest["files"].values()]
        if manifest and not self.fresh:
            old = Snapshot(self.folder, verify=True, manifest=manifest if migration else None)
            try:
                self._db = sqlite3.connect(self._new_files["catalog"])
                with old._lock:
                    old._db.backup(self._db)
                if migration:
                    self._db.executescript(migration)
                self.passage_vectors = old.passage_vectors
                self.sentence_vectors = old.sentence_vectors
            finally:
                old.close()
        else:  # a new index, or a fresh start (``fresh``)
            self._db = sqlite3.connect(self._new_files["catalog"])
            self._db.executescript(_SCHEMA)
            self.passage_vectors = VectorIndex(dim)
            self.sentence_vectors = VectorIndex(dim)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("BEGIN")

    def _remove_stray_files(self, manifest: dict | None) -> None:
        """Delete files left by a writer that crashed before its commit."""
        live = set(manifest["files"].values()) if manifest else set()
        for path in self.folder.iterdir():
            if path.name in live or path.name in (MANIFEST, LOCK):
                continue
            if path.name.startswith(("catalog-", "passages-", "sentences-", MANIFEST + ".")):
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Drop the new generation; the current one stays live."""
        self._abort()

    def _abort(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for path in self._new_files.values():
            path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._lock_handle is not None:
            fcntl.lockf(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None
        if self._thread_lock is not None:
            self._thread_lock.release()
            self._thread_lock = None

    # -- reads the writer needs ----------------------------------------------------

    def path_states(self) -> dict[str, PathState]:
        """What the index knows of every stored path."""
        rows = self._db.execute(
            "SELECT pa.path, d.sha256, pa.source, pa.size, pa.mtime_ns FROM paths pa JOIN documents d ON d.id = pa.doc_id"
        ).fetchall()
        return {row[0]: PathState(*row[1:]) for row in rows}

    def has_content(self, sha256: str) -> bool:
        return self._db.execute("SELECT 1 FROM documents WHERE sha256 = ?", (sha256,)).fetchone() is not None

    # -- changes -------------------------------------------------------------------

    def touch_path(self, path: str, *, size: int, mtime_ns: int) -> None:
        """Record a new stat for an unchanged file, so the next check need not read it."""
        self._db.execute("UPDATE paths SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def remove_document(self, path: str) -> int:
        """Forget ``path``; its content goes too unless another path shares it.

        Returns the number of passages removed from the index.
        """
        row = self._db.execute("SELECT doc_id FROM paths WHERE path = ?", (path,)).fetchone()
        if row is None:
            return 0
        doc_id = row[0]
        self._db.execute("DELETE FROM paths WHERE path = ?", (path,))
        if self._db.execute("SELECT 1 FROM paths WHERE doc_id = ?", (doc_id,)).fetchone():
            return 0
        passages = self._db.execute("SELECT id, section, text FROM passages WHERE doc_id = ?", (doc_id,)).fetchall()
        sentence_ids = [
            r[0]
            for r in self._db.execute(
                "SELECT s.id FROM sentences s JOIN passages p ON p.id = s.passage_id WHERE p.doc_id = ?", (doc_id,)
            )
        ]
        self._db.executemany(
            "INSERT INTO passages_fts(passages_fts, rowid, section, text) VALUES('delete', ?, ?, ?)", passages
        )
        self._db.execute("DELETE FROM sentences WHERE passage_id IN (SELECT id FROM passages WHERE doc_id = ?)", (doc_id,))
        self._db.execute(
            "DELETE FROM passage_tokens WHERE passage_id IN (SELECT id FROM passages WHERE doc_id = ?)", (doc_id,)
        )
        self._db.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM ocr_words WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        self.passage_vectors.remove([p[0] for p in passages])
        self.sentence_vectors.remove(sentence_ids)
        return len(passages)

    def _put_path(self, path: str, doc_id: int, source: str | None, size: int | None, mtime_ns: int | None) -> None:
        self.remove_document(path)
        self._db.execute(
            "INSERT INTO paths(path, doc_id, source, size, mtime_ns, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (path, doc_id, source, size, mtime_ns, time.time()),
        )

    def add_alias(self, path: str, *, sha256: str, source: str | None, size: int | None, mtime_ns: int | None) -> None:
        """Store ``path`` as one more name of content already in the index (no embedding)."""
        doc_id = self._db.execute("SELECT id FROM documents WHERE sha256 = ?", (sha256,)).fetchone()[0]
        self._put_path(path, doc_id, source, size, mtime_ns)

    def add_document(
        self,
        *,
        path: str,
        source: str | None,
        sha256: str,
        format: str,
        encoding: str | None,
        text: str,
        passages: Sequence[StoredPassage],
        passage_vectors: np.ndarray,
        sentence_vectors: np.ndarray,
        token_vectors: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
        ocr_words: Sequence[OcrWord] = (),
    ) -> None:
        """Store a document (replacing what ``path`` held) with its vectors.

        ``sentence_vectors`` has one row per sentence of every passage, in order.
        ``token_vectors``, if given, holds for each passage the sentence number
        (uint16) and vector of each of its tokens kept for late interaction (``qa.late``).
        ``ocr_words``, the words of its text read by OCR (in text order), are kept
        with their boxes for the page view; each passage keeps their mean confidence.
        """
        self.remove_document(path)
        cur = self._db.execute(
            "INSERT INTO documents(sha256, format, encoding, text) VALUES (?, ?, ?, ?)",
            (sha256, format, encoding, text),
        )
        doc_id = cur.lastrowid
        self._put_path(path, doc_id, source, size, mtime_ns)
        self._db.executemany(
            "INSERT INTO ocr_words(doc_id, page, line, start, end, confidence, x0, y0, x1, y1) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(doc_id, w.page, w.line, w.start, w.end, w.confidence, w.x0, w.y0, w.x1, w.y1) for w in ocr_words],
        )
        ends = [w.end for w in ocr_words]
        passage_ids: list[int] = []
        sentence_ids: list[int] = []
        tokens = token_vectors if token_vectors is not None else [None] * len(passages)
        for stored, passage_tokens in zip(passages, tokens, strict=True):
            span = stored.span
            body = text[span.start : span.end]
            ocr = mean_confidence(ocr_words, span.start, span.end, ends) if ocr_words else None
            cur = self._db.execute(
                "INSERT INTO passages(doc_id, seq, paragraph, window, windows, start, end, page, section, text, "
                "ocr_confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, span.paragraph, stored.paragraph, span.window, span.windows, span.start, span.end,
                 stored.page, stored.section, body, ocr),
            )
            passage_id = cur.lastrowid
            passage_ids.append(passage_id)
            self._db.execute(
                "INSERT INTO passages_fts(rowid, section, text) VALUES (?, ?, ?)", (passage_id, stored.section, body)
            )
            for sentence in span.sentences:
                cur = self._db.execute(
                    "INSERT INTO sentences(passage_id, start, end) VALUES (?, ?, ?)",
                    (passage_id, sentence.start, sentence.end),
                )
                sentence_ids.append(cur.lastrowid)
            if passage_tokens is not None:
                numbers, vectors = passage_tokens
                self._db.execute(
                    "INSERT INTO passage_tokens(passage_id, sentences, vectors) VALUES (?, ?, ?)",
                    (passage_id, np.asarray(numbers, dtype=np.uint16).tobytes(), pack_tokens(vectors)),
                )
        self.passage_vectors.add(passage_ids, passage_vectors)
        self.sentence_vectors.add(sentence_ids, sentence_vectors)

    # -- commit ----------------------------------------------------------------------

    def commit(self) -> dict:
        """Flush the new generation and make it live by replacing the manifest."""
        db = self._db
        db.commit()
        counts = {
            "documents": db.execute("SELECT COUNT(*) FROM paths").fetchone()[0],
            "passages": db.execute("SELECT COUNT(*) FROM passages").fetchone()[0],
            "sentences": db.execute("SELECT COUNT(*) FROM sentences").fetchone()[0],
        }
        if counts["passages"] != len(self.passage_vectors) or counts["sentences"] != len(self.sentence_vectors):
            raise StoreError("internal error: vector and catalog counts differ; nothing was committed")
        db.execute("PRAGMA journal_mode = DELETE")
        db.close()
        self._db = None
        with open(self._new_files["catalog"], "rb+") as handle:
            os.fsync(handle.fileno())
        self.passage_vectors.save(self._new_files["passages"])
        self.sentence_vectors.save(self._new_files["sentences"])
        manifest = {
            "format": FORMAT_VERSION,
            "generation": self.generation,
            "model": {"name": self.model.name, "dimension": self.model.dimension, "max_tokens": self.model.max_tokens},
            "settings": self.settings,
            "counts": counts,
            "files": {key: path.name for key, path in self._new_files.items()},
            "checksums": {key: sha256_file(path) for key, path in self._new_files.items()},
            "committed_at": time.time(),
        }
        staging = self.folder / f"{MANIFEST}.{os.getpid()}.tmp"
        with open(staging, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.folder / MANIFEST)
        self._new_files = {}  # live now: an error from here on must not delete them
        fsync_dir(self.folder)
        live = set(manifest["files"].values())
        for old in self._old_files:
            if old.name not in live:
                old.unlink(missing_ok=True)
        logger.info("committed generation %d of %s: %s", self.generation, self.folder, counts)
        return manifest
