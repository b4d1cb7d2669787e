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
import re
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

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
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
    text TEXT NOT NULL
);
CREATE INDEX passages_doc ON passages(doc_id, seq, window);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    passage_id INTEGER NOT NULL REFERENCES passages(id),
    start INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE INDEX sentences_passage ON sentences(passage_id);
CREATE VIRTUAL TABLE passages_fts USING fts5(
    section, text, content='passages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
"""


# A heading's words count, but less than the passage's own: a section title is
# shared by every passage under it, so it says less about which one answers.
_BM25 = "bm25(passages_fts, 0.5, 1.0)"


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
        raise IndexCorrupt(f"{path} is unreadable ({exc}); {REBUILD}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexCorrupt(
            f"{folder} holds index format {found!r}, this version reads {FORMAT_VERSION}; {REBUILD}"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorrupt(f"{path} is damaged ({problem}); {REBUILD}")
    return manifest


REBUILD = "rebuild it with: qa index PATH --index NEW_FOLDER"


def _generation(folder: Path) -> int | None:
    try:
        return read_manifest(folder)["generation"]
    except StoreError:
        return None
_FILE_NAME = {
    "catalog": re.compile(r"catalog-\d+\.sqlite"),
    "passages": re.compile(r"passages-\d+\.faiss"),
    "sentences": re.compile(r"sentences-\d+\.faiss"),
}


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's shape, or None. Names must be plain files of this folder."""
    model, files, checksums, counts = (manifest.get(k) for k in ("model", "files", "checksums", "counts"))
    if not isinstance(manifest.get("generation"), int):
        return "no generation"
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return "no model name"
    if not all(isinstance(model.get(k), int) for k in ("dimension", "max_tokens")):
        return "no model dimension"
    if not isinstance(files, dict) or not isinstance(checksums, dict) or not isinstance(counts, dict):
        return "no file list"
    for key, pattern in _FILE_NAME.items():
        if not isinstance(files.get(key), str) or not pattern.fullmatch(files[key]):
            return f"bad {key} file name"
        if not isinstance(checksums.get(key), str):
            return f"no {key} checksum"
    if not all(isinstance(counts.get(k), int) for k in ("documents", "passages", "sentences")):
        return "no counts"
    return None


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
        # A writer may commit (and delete the files just read about) while this
        # opens; then the manifest has changed and the newer generation is opened.
        for attempt in range(5):
            manifest = read_manifest(self.folder)
            try:
                self._open(manifest, verify)
                return
            except (IndexCorrupt, OSError, sqlite3.Error):
                if attempt < 4 and _generation(self.folder) != manifest["generation"]:
                    continue
                raise

    def _open(self, manifest: dict, verify: bool) -> None:
        self.manifest = manifest
        files = self.manifest["files"]
        paths = {key: self.folder / files[key] for key in _FILE_NAME}
        for key, path in paths.items():
            if not path.exists():
                raise IndexCorrupt(f"index file {path} is missing; {REBUILD}")
            if verify and _sha256(path) != self.manifest["checksums"][key]:
                raise IndexCorrupt(f"index file {path} fails its checksum; {REBUILD}")
        info = self.manifest["model"]
        self.model = ModelInfo(info["name"], info["dimension"], info["max_tokens"])
        self._db = sqlite3.connect(f"file:{paths['catalog']}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self.passage_vectors = VectorIndex.load(paths["passages"], self.model.dimension)
            self.sentence_vectors = VectorIndex.load(paths["sentences"], self.model.dimension)
            counts = self.manifest["counts"]
            if len(self.passage_vectors) != counts["passages"] or len(self.sentence_vectors) != counts["sentences"]:
                raise IndexCorrupt(f"index {self.folder}: vector counts do not match the catalog; {REBUILD}")
        except (RuntimeError, ValueError) as exc:
            self._db.close()
            raise IndexCorrupt(f"cannot read vectors in {self.folder} ({str(exc).splitlines()[0]}); {REBUILD}") from exc
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
        """Every stored path; paths with the same content name each other in ``same_as``."""
        rows = self._query(
            "SELECT pa.path, d.id, d.sha256, d.format, "
            "(SELECT COUNT(*) FROM passages p WHERE p.doc_id = d.id) "
            "FROM paths pa JOIN documents d ON d.id = pa.doc_id ORDER BY pa.path"
        )
        by_doc: dict[int, list[str]] = {}
        for path, doc_id, *_ in rows:
            by_doc.setdefault(doc_id, []).append(path)
        return [
            Document(
                id=doc_id, path=path, sha256=sha, passages=count, format=fmt,
                same_as=tuple(p for p in by_doc[doc_id] if p != path),
            )
            for path, doc_id, sha, fmt, count in rows
        ]

    def _doc_id(self, path: str) -> int | None:
        rows = self._query("SELECT doc_id FROM paths WHERE path = ?", (path,))
        return rows[0][0] if rows else None

    def document_text(self, path: str) -> str | None:
        rows = self._query(
            "SELECT d.text FROM documents d JOIN paths pa ON pa.doc_id = d.id WHERE pa.path = ?", (path,)
        )
        return rows[0][0] if rows else None

    # -- passages ----------------------------------------------------------------

    # A document stored under several paths is named by the first; ``also`` lists the rest.
    _PASSAGE_SQL = (
        "SELECT p.id, (SELECT group_concat(path, char(31)) FROM "
        "(SELECT path FROM paths WHERE doc_id = p.doc_id ORDER BY path)), "
        "p.seq, p.paragraph, p.window, p.windows, p.start, p.end, p.text, p.page, p.section "
        "FROM passages p "
    )

    @staticmethod
    def _passage(row: tuple, doc: str | None = None) -> Passage:
        pid, paths, seq, paragraph, window, windows, start, end, text, page, section = row
        names = (paths or "").split("\x1f")
        if doc is not None and doc in names:
            names.remove(doc)
            names.insert(0, doc)
        return Passage(
            id=pid, doc=names[0], paragraph=paragraph, window=window, windows=windows, start=start, end=end,
            text=text, page=page, section=section, seq=seq, also=tuple(names[1:]),
        )

    def _query_in(self, sql: str, ids: Iterable[int]) -> Iterator[tuple]:
        """Rows of ``sql`` whose ``{ids}`` placeholder is filled in chunks (SQLite caps parameters)."""
        ids = [int(i) for i in ids]
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            yield from self._query(sql.format(ids=",".join("?" * len(part))), part)

    def passages(self, ids: Iterable[int]) -> dict[int, Passage]:
        rows = self._query_in(self._PASSAGE_SQL + "WHERE p.id IN ({ids})", ids)
        return {row[0]: self._passage(row) for row in rows}

    def passages_of(
        self, doc: str, paragraph: int | None = None, *, seq: int | None = None, page: int | None = None
    ) -> list[Passage]:
        """Passages of the document at path ``doc`` in text order, optionally narrowed."""
        doc_id = self._doc_id(doc)
        if doc_id is None:
            return []
        sql = self._PASSAGE_SQL + "WHERE p.doc_id = ?"
        params: list = [doc_id]
        for column, value in (("seq", seq), ("paragraph", paragraph), ("page", page)):
            if value is not None:
                sql += f" AND p.{column} = ?"
                params.append(value)
        rows = self._query(sql + " ORDER BY p.seq, p.window", params)
        return [self._passage(row, doc) for row in rows]

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

    def ids_in(self, docs: Iterable[str]) -> tuple[list[int], list[int], list[int]]:
        """Document, passage and sentence ids of the documents at paths ``docs``."""
        doc_ids = sorted({row[0] for row in self._query_in_text("SELECT doc_id FROM paths WHERE path IN ({ids})", docs)})
        passage_ids = [r[0] for r in self._query_in("SELECT id FROM passages WHERE doc_id IN ({ids})", doc_ids)]
        sentence_ids = [
            r[0]
            for r in self._query_in(
                "SELECT s.id FROM sentences s JOIN passages p ON p.id = s.passage_id WHERE p.doc_id IN ({ids})", doc_ids
            )
        ]
        return doc_ids, passage_ids, sentence_ids

    def _query_in_text(self, sql: str, values: Iterable[str]) -> Iterator[tuple]:
        values = list(values)
        for chunk in range(0, len(values), 500):
            part = values[chunk : chunk + 500]
            yield from self._query(sql.format(ids=",".join("?" * len(part))), part)

    def lexical(
        self, match: str, limit: int, only: Sequence[int] | None = None, doc_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """``(passage id, bm25)`` for an FTS5 MATCH expression; larger is better.

        ``only`` restricts to those passage ids, ``doc_ids`` to those documents.
        """
        sql = f"SELECT rowid, -{_BM25} FROM passages_fts WHERE passages_fts MATCH ?"
        params: list = [match]
        if doc_ids is not None:
            sql += f" AND rowid IN (SELECT id FROM passages WHERE doc_id IN ({','.join('?' * len(doc_ids))}))"
            params.extend(int(i) for i in doc_ids)
        if only is not None:
            if not only:
                return []
            sql += f" AND rowid IN ({','.join('?' * len(only))})"
            params.extend(int(i) for i in only)
        sql += f" ORDER BY {_BM25} LIMIT ?"
        params.append(limit)
        return [(int(r[0]), float(r[1])) for r in self._query(sql, params)]


def open_snapshot(folder: str | os.PathLike, *, verify: bool = True) -> Snapshot:
    return Snapshot(folder, verify=verify)


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

    def __init__(self, folder: str | os.PathLike, model: ModelInfo, *, settings: dict | None = None) -> None:
        self.folder = Path(folder)
        self.model = model
        self.settings = settings or {}
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
        self._db.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
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
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """Store a document (replacing what ``path`` held) with its vectors.

        ``sentence_vectors`` has one row per sentence of every passage, in order.
        """
        self.remove_document(path)
        cur = self._db.execute(
            "INSERT INTO documents(sha256, format, encoding, text) VALUES (?, ?, ?, ?)",
            (sha256, format, encoding, text),
        )
        doc_id = cur.lastrowid
        self._put_path(path, doc_id, source, size, mtime_ns)
        passage_ids: list[int] = []
        sentence_ids: list[int] = []
        for stored in passages:
            span = stored.span
            body = text[span.start : span.end]
            cur = self._db.execute(
                "INSERT INTO passages(doc_id, seq, paragraph, window, windows, start, end, page, section, text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, span.paragraph, stored.paragraph, span.window, span.windows, span.start, span.end,
                 stored.page, stored.section, body),
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
