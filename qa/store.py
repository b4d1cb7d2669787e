"""The index folder: a manifest, an SQLite catalog with FTS5, and FAISS vector files.

Each commit is a generation: the writer builds ``catalog-N.sqlite``,
``passages-N.faiss`` and ``sentences-N.faiss`` beside the live files, flushes
them, then replaces ``manifest.json`` (which names them and holds their
checksums) in one ``os.replace``. A crash at any instant leaves the previous
manifest, and so the previous generation, whole and readable.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from embeddings import VectorIndex, canonical_model_name
from qa.records import Document, Passage, PassageSpan

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".lock"

_SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    source TEXT,
    sha256 TEXT NOT NULL,
    encoding TEXT,
    indexed_at REAL NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE passages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    paragraph INTEGER NOT NULL,
    window INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    page INTEGER,
    text TEXT NOT NULL
);
CREATE INDEX passages_doc ON passages(doc_id, paragraph, window);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    passage_id INTEGER NOT NULL REFERENCES passages(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE INDEX sentences_passage ON sentences(passage_id);
CREATE VIRTUAL TABLE passages_fts USING fts5(
    text, content='passages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
"""


class StoreError(Exception):
    """Something is wrong with an index folder; the message is one line for the user."""


class IndexMissing(StoreError):
    pass


class IndexCorrupt(StoreError):
    pass


class ModelMismatch(StoreError):
    pass


class IndexLocked(StoreError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dimension: int
    max_tokens: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexMissing(f"no index at {folder} (create one with: qa index PATH --index {folder})") from None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"{path} is unreadable ({exc}); rebuild the index with qa index") from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexCorrupt(f"{path}: unknown index format {manifest.get('format')!r}")
    return manifest


def check_model(manifest: dict, model: ModelInfo | str | None, folder) -> None:
    """Refuse to mix embedding models in one index."""
    if model is None:
        return
    name = canonical_model_name(model if isinstance(model, str) else model.name)
    stored = manifest["model"]["name"]
    if name != canonical_model_name(stored):
        raise ModelMismatch(
            f"index {folder} was built with model {stored!r}, not {name!r}; "
            f"use --model {stored!r} or another --index"
        )
    if not isinstance(model, str) and model.dimension != manifest["model"]["dimension"]:
        raise ModelMismatch(f"model {name!r} gives dimension {model.dimension}, index has {manifest['model']['dimension']}")


class Snapshot:
    """One committed generation, opened read-only. Safe to share between threads."""

    def __init__(self, folder: str | os.PathLike, *, verify: bool = True) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        files = self.manifest["files"]
        paths = {key: self.folder / name for key, name in files.items()}
        for key, path in paths.items():
            if not path.exists():
                raise IndexCorrupt(f"index file {path} is missing; rebuild the index with qa index")
            if verify and _sha256(path) != self.manifest["checksums"][key]:
                raise IndexCorrupt(f"index file {path} fails its checksum; rebuild the index with qa index")
        info = self.manifest["model"]
        self.model = ModelInfo(info["name"], info["dimension"], info["max_tokens"])
        self._db = sqlite3.connect(f"file:{paths['catalog']}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self.passage_vectors = VectorIndex.load(paths["passages"], self.model.dimension)
            self.sentence_vectors = VectorIndex.load(paths["sentences"], self.model.dimension)
            counts = self.manifest["counts"]
            if len(self.passage_vectors) != counts["passages"] or len(self.sentence_vectors) != counts["sentences"]:
                raise IndexCorrupt(f"index {self.folder}: vector counts do not match the catalog")
        except (RuntimeError, ValueError) as exc:
            self._db.close()
            raise IndexCorrupt(f"cannot read vectors in {self.folder}: {str(exc).splitlines()[0]}") from exc
        except IndexCorrupt:
            self._db.close()
            raise

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- documents ---------------------------------------------------------------

    def documents(self) -> list[Document]:
        rows = self._query(
            "SELECT d.id, d.path, d.sha256, COUNT(p.id) FROM documents d "
            "LEFT JOIN passages p ON p.doc_id = d.id GROUP BY d.id ORDER BY d.path"
        )
        return [Document(id=r[0], path=r[1], sha256=r[2], passages=r[3]) for r in rows]

    def document_text(self, path: str) -> str | None:
        rows = self._query("SELECT text FROM documents WHERE path = ?", (path,))
        return rows[0][0] if rows else None

    # -- passages ----------------------------------------------------------------

    _PASSAGE_SQL = (
        "SELECT p.id, d.path, p.paragraph, p.window, p.windows, p.start, p.end, p.text, p.page "
        "FROM passages p JOIN documents d ON d.id = p.doc_id "
    )

    def _query_in(self, sql: str, ids: Iterable[int]) -> Iterator[tuple]:
        """Rows of ``sql`` whose ``{ids}`` placeholder is filled in chunks (SQLite caps parameters)."""
        ids = [int(i) for i in ids]
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            yield from self._query(sql.format(ids=",".join("?" * len(part))), part)

    def passages(self, ids: Iterable[int]) -> dict[int, Passage]:
        rows = self._query_in(self._PASSAGE_SQL + "WHERE p.id IN ({ids})", ids)
        return {row[0]: Passage(*row) for row in rows}

    def passages_of(self, doc: str, paragraph: int | None = None) -> list[Passage]:
        sql = self._PASSAGE_SQL + "WHERE d.path = ?"
        params: list = [doc]
        if paragraph is not None:
            sql += " AND p.paragraph = ?"
            params.append(paragraph)
        return [Passage(*row) for row in self._query(sql + " ORDER BY p.paragraph, p.window", params)]

    def paragraph_count(self, doc: str) -> int:
        rows = self._query(
            "SELECT MAX(p.paragraph) FROM passages p JOIN documents d ON d.id = p.doc_id WHERE d.path = ?", (doc,)
        )
        return rows[0][0] or 0

    def sentences(self, passage_ids: Iterable[int]) -> dict[int, list[tuple[int, int, int]]]:
        """``passage id -> [(sentence id, start, end), ...]`` in text order."""
        ids = list(passage_ids)
        out: dict[int, list[tuple[int, int, int]]] = {int(i): [] for i in ids}
        sql = "SELECT passage_id, id, start, end FROM sentences WHERE passage_id IN ({ids}) ORDER BY id"
        for passage_id, sentence_id, start, end in self._query_in(sql, ids):
            out[passage_id].append((sentence_id, start, end))
        return out

    def passage_of_sentences(self, sentence_ids: Iterable[int]) -> dict[int, int]:
        return dict(self._query_in("SELECT id, passage_id FROM sentences WHERE id IN ({ids})", sentence_ids))

    # -- lexical -----------------------------------------------------------------

    def lexical(self, match: str, limit: int, only: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """``(passage id, bm25)`` for an FTS5 MATCH expression; larger is better."""
        sql = "SELECT rowid, -bm25(passages_fts) FROM passages_fts WHERE passages_fts MATCH ?"
        params: list = [match]
        if only is not None:
            if not only:
                return []
            sql += f" AND rowid IN ({','.join('?' * len(only))})"
            params.extend(int(i) for i in only)
        sql += " ORDER BY bm25(passages_fts) LIMIT ?"
        params.append(limit)
        return [(int(r[0]), float(r[1])) for r in self._query(sql, params)]


def open_snapshot(folder: str | os.PathLike, *, verify: bool = True) -> Snapshot:
    return Snapshot(folder, verify=verify)


class Writer:
    """Builds the next generation of an index; ``commit()`` makes it live.

    Only one writer may hold an index at a time (an advisory file lock); readers
    are never blocked and keep seeing the previous generation until the commit.
    """

    def __init__(self, folder: str | os.PathLike, model: ModelInfo, *, settings: dict | None = None) -> None:
        self.folder = Path(folder)
        self.model = model
        self.settings = settings or {}
        self._lock_handle = None
        self._db: sqlite3.Connection | None = None
        self._new_files: dict[str, Path] = {}
        self._old_files: list[Path] = []

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> "Writer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_handle.close()
            self._lock_handle = None
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
        try:
            manifest = read_manifest(self.folder)
        except IndexMissing:
            manifest = None
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
            old = Snapshot(self.folder, verify=True)
            try:
                self._db = sqlite3.connect(self._new_files["catalog"])
                with old._lock:
                    old._db.backup(self._db)
                self.passage_vectors = old.passage_vectors
                self.sentence_vectors = old.sentence_vectors
            finally:
                old.close()
            self._old_files = [self.folder / name for name in manifest["files"].values()]
        else:
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
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # -- reads the writer needs ----------------------------------------------------

    def document_hashes(self) -> dict[str, tuple[str, str | None]]:
        """``path -> (sha256, source)`` of every stored document."""
        rows = self._db.execute("SELECT path, sha256, source FROM documents").fetchall()
        return {path: (sha, source) for path, sha, source in rows}

    # -- changes -------------------------------------------------------------------

    def remove_document(self, path: str) -> int:
        """Remove a document and its vectors; returns the number of passages removed."""
        row = self._db.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
        if row is None:
            return 0
        doc_id = row[0]
        passages = self._db.execute("SELECT id, text FROM passages WHERE doc_id = ?", (doc_id,)).fetchall()
        passage_ids = [p[0] for p in passages]
        sentence_ids = [
            r[0]
            for r in self._db.execute(
                "SELECT s.id FROM sentences s JOIN passages p ON p.id = s.passage_id WHERE p.doc_id = ?", (doc_id,)
            )
        ]
        self._db.executemany(
            "INSERT INTO passages_fts(passages_fts, rowid, text) VALUES('delete', ?, ?)", passages
        )
        self._db.execute("DELETE FROM sentences WHERE passage_id IN (SELECT id FROM passages WHERE doc_id = ?)", (doc_id,))
        self._db.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        self.passage_vectors.remove(passage_ids)
        self.sentence_vectors.remove(sentence_ids)
        return len(passage_ids)

    def add_document(
        self,
        *,
        path: str,
        source: str | None,
        sha256: str,
        encoding: str,
        text: str,
        passages: Sequence[PassageSpan],
        passage_vectors: np.ndarray,
        sentence_vectors: np.ndarray,
    ) -> None:
        """Store a document (replacing one of the same path) with its vectors.

        ``sentence_vectors`` has one row per sentence of every passage, in order.
        """
        self.remove_document(path)
        cur = self._db.execute(
            "INSERT INTO documents(path, source, sha256, encoding, indexed_at, text) VALUES (?, ?, ?, ?, ?, ?)",
            (path, source, sha256, encoding, time.time(), text),
        )
        doc_id = cur.lastrowid
        passage_ids: list[int] = []
        sentence_ids: list[int] = []
        for span in passages:
            body = text[span.start : span.end]
            cur = self._db.execute(
                "INSERT INTO passages(doc_id, paragraph, window, windows, start, end, page, text) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (doc_id, span.paragraph, span.window, span.windows, span.start, span.end, body),
            )
            passage_id = cur.lastrowid
            passage_ids.append(passage_id)
            self._db.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (passage_id, body))
            for sentence in span.sentences:
                cur = self._db.execute(
                    "INSERT INTO sentences(passage_id, start, end) VALUES (?, ?, ?)",
                    (passage_id, sentence.start, sentence.end),
                )
                sentence_ids.append(cur.lastrowid)
        self.passage_vectors.add(passage_ids, passage_vectors)
        self.sentence_vectors.add(sentence_ids, sentence_vectors)

    # -- commit ----------------------------------------------------------------------

    def commit(self) -> dict:
        """Flush the new generation and make it live by replacing the manifest."""
        db = self._db
        db.commit()
        counts = {
            "documents": db.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
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
            "checksums": {key: _sha256(path) for key, path in self._new_files.items()},
            "committed_at": time.time(),
        }
        staging = self.folder / f"{MANIFEST}.{os.getpid()}.tmp"
        with open(staging, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.folder / MANIFEST)
        self._new_files = {}  # live now: an error from here on must not delete them
        _fsync_dir(self.folder)
        live = set(manifest["files"].values())
        for old in self._old_files:
            if old.name not in live:
                old.unlink(missing_ok=True)
        logger.info("committed generation %d of %s: %s", self.generation, self.folder, counts)
        return manifest
