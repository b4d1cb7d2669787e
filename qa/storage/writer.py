"""Writing an index folder: the next generation built beside the live one, committed by replacing the manifest.

Each commit is a generation: the writer copies the small live catalog
(``live-N.sqlite``: the paths, and the documents removed since their segment
was written) and writes one new segment (``seg-K.sqlite``, ``seg-K-passages.faiss``,
``seg-K-sentences.faiss``) of what it added (``qa.storage.segments``); the
segments already committed are read where they lie and never written again.
It flushes everything, then replaces ``manifest.json`` (which names the live
catalog and the segments, with their checksums) in one ``os.replace``. A crash
at any instant leaves the previous manifest, and so the previous generation,
whole and readable.
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
    check_file,
    fsync_dir,
    read_manifest,
    sha256_file,
)
from qa.storage.merge import MIGRATIONS, fsync_file, merge, migrate
from qa.storage.segments import COUNTED, LIVE_SCHEMA, attach, choose_merge, connect, create_segment, id_ranges, segment_files

logger = logging.getLogger(__name__)

LOCK = ".lock"

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
        self._merged_away: list[Path] = []
        self._compact = False

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
        migrating = None  # the format of an outdated one-catalog index being migrated (``migrate``)
        try:
            manifest = read_manifest(self.folder)
        except IndexMissing:
            manifest = None
        except IndexOutdated:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
            if not (self.fresh or (self.migrate and manifest.get("format") in MIGRATIONS)):
                raise
            if not self.fresh:
                migrating = manifest["format"]
        self._remove_stray_files(manifest)
        self.generation = (manifest["generation"] if manifest else 0) + 1
        if manifest:
            check_model(manifest, self.model, self.folder)
            self._old_files = [self.folder / name for name in live_file_names(manifest)]
        live = self.folder / f"live-{self.generation}.sqlite"
        self._new_files = {"live": live}
        if migrating is not None:
            migrated = migrate(self.folder, manifest, live)
            self._new_files.update(migrated.files)
            self._segments, self._next_ids = migrated.segments, migrated.next_ids
            self._next_segment, self._counts = migrated.next_segment, migrated.counts
        elif manifest and not self.fresh:
            # Only the live catalog is copied; the segments are read where they lie. Every file
            # is checked first (a file is hashed once per process): building on a damaged
            # segment would hide the damage until a reader met it.
            old_live = self.folder / manifest["files"]["live"]
            check_file(old_live, manifest["checksums"]["live"])
            source = connect(old_live, read_only=True)
            target = sqlite3.connect(live)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            self._segments = [dict(segment) for segment in manifest["segments"]]
            for segment in self._segments:
                for key, name in segment["files"].items():
                    check_file(self.folder / name, segment["checksums"][key])
            self._next_ids = dict(manifest["next_ids"])
            self._next_segment = manifest["next_segment"]
            self._counts = {k: manifest["counts"][k] for k in ("passages", "sentences")}
        else:  # a new index, or a fresh start (``fresh``)
            db = sqlite3.connect(live)
            db.executescript(LIVE_SCHEMA)
            db.close()
            self._segments = []
            self._next_ids = {table: 1 for table in COUNTED}
            self._next_segment = 1
            self._counts = {"passages": 0, "sentences": 0}
        number = self._next_segment
        names = segment_files(number)
        self._new_files.update({key: self.folder / name for key, name in names.items()})
        create_segment(self._new_files["catalog"], self._next_ids)
        self._db = connect(live, read_only=False)
        self._schemas = attach(self._db, self.folder, [s["files"]["catalog"] for s in self._segments],
                               writable=names["catalog"])
        dim = self.model.dimension
        self.passage_vectors = VectorIndex(dim)  # the new segment's
        self.sentence_vectors = VectorIndex(dim)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("BEGIN")

    def _remove_stray_files(self, manifest: dict | None) -> None:
        """Delete files left by a writer that crashed before its commit."""
        live = set(live_file_names(manifest)) if manifest else set()
        for path in self.folder.iterdir():
            if path.name in live or path.name in (MANIFEST, LOCK):
                continue
            if path.name.startswith(("live-", "seg-", "catalog-", "passages-", "sentences-", MANIFEST + ".")):
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
            Path(f"{path}-journal").unlink(missing_ok=True)
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
        return self._live_doc(sha256) is not None

    def _live_doc(self, sha256: str) -> int | None:
        row = self._db.execute(
            "SELECT id FROM documents WHERE sha256 = ? AND id NOT IN (SELECT doc_id FROM main.removed)", (sha256,)
        ).fetchone()
        return row[0] if row else None

    # -- changes -------------------------------------------------------------------

    def touch_path(self, path: str, *, size: int, mtime_ns: int) -> None:
        """Record a new stat for an unchanged file, so the next check need not read it."""
        self._db.execute("UPDATE main.paths SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def remove_document(self, path: str) -> int:
        """Forget ``path``; its content goes too unless another path shares it.

        Content stored by this writer is deleted; content in a committed segment
        is marked removed (its segment is never rewritten; a merge drops it).
        Returns the number of passages removed from the index.
        """
        row = self._db.execute("SELECT doc_id FROM main.paths WHERE path = ?", (path,)).fetchone()
        if row is None:
            return 0
        doc_id = row[0]
        self._db.execute("DELETE FROM main.paths WHERE path = ?", (path,))
        if self._db.execute("SELECT 1 FROM main.paths WHERE doc_id = ?", (doc_id,)).fetchone():
            return 0
        if doc_id < self._next_ids["documents"]:  # in a committed segment
            passages = self._db.execute("SELECT COUNT(*) FROM passages WHERE doc_id = ?", (doc_id,)).fetchone()[0]
            sentences = self._db.execute(
                "SELECT COUNT(*) FROM sentences s JOIN passages p ON p.id = s.passage_id WHERE p.doc_id = ?", (doc_id,)
            ).fetchone()[0]
            self._db.execute("INSERT INTO main.removed(doc_id) VALUES (?)", (doc_id,))
            self._counts["passages"] -= passages
            self._counts["sentences"] -= sentences
            return passages
        passages = self._db.execute("SELECT id, section, text FROM new.passages WHERE doc_id = ?", (doc_id,)).fetchall()
        sentence_ids = [
            r[0]
            for r in self._db.execute(
                "SELECT s.id FROM new.sentences s JOIN new.passages p ON p.id = s.passage_id WHERE p.doc_id = ?",
                (doc_id,),
            )
        ]
        self._db.executemany(
            "INSERT INTO new.passages_fts(passages_fts, rowid, section, text) VALUES('delete', ?, ?, ?)", passages
        )
        of_doc = "(SELECT id FROM new.passages WHERE doc_id = ?)"
        self._db.execute(f"DELETE FROM new.sentences WHERE passage_id IN {of_doc}", (doc_id,))
        self._db.execute(f"DELETE FROM new.passage_tokens WHERE passage_id IN {of_doc}", (doc_id,))
        self._db.execute("DELETE FROM new.passages WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM new.ocr_words WHERE doc_id = ?", (doc_id,))
        self._db.execute("DELETE FROM new.documents WHERE id = ?", (doc_id,))
        self.passage_vectors.remove([p[0] for p in passages])
        self.sentence_vectors.remove(sentence_ids)
        return len(passages)

    def _put_path(self, path: str, doc_id: int, source: str | None, size: int | None, mtime_ns: int | None) -> None:
        self.remove_document(path)
        self._db.execute(
            "INSERT INTO main.paths(path, doc_id, source, size, mtime_ns, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (path, doc_id, source, size, mtime_ns, time.time()),
        )

    def add_alias(self, path: str, *, sha256: str, source: str | None, size: int | None, mtime_ns: int | None) -> None:
        """Store ``path`` as one more name of content already in the index (no embedding)."""
        doc_id = self._live_doc(sha256)
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
            "INSERT INTO new.documents(sha256, format, encoding, text) VALUES (?, ?, ?, ?)",
            (sha256, format, encoding, text),
        )
        doc_id = cur.lastrowid
        self._put_path(path, doc_id, source, size, mtime_ns)
        self._db.executemany(
            "INSERT INTO new.ocr_words(doc_id, page, line, start, end, confidence, x0, y0, x1, y1) "
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
                "INSERT INTO new.passages(doc_id, seq, paragraph, window, windows, start, end, page, section, text, "
                "ocr_confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, span.paragraph, stored.paragraph, span.window, span.windows, span.start, span.end,
                 stored.page, stored.section, body, ocr),
            )
            passage_id = cur.lastrowid
            passage_ids.append(passage_id)
            self._db.execute(
                "INSERT INTO new.passages_fts(rowid, section, text) VALUES (?, ?, ?)", (passage_id, stored.section, body)
            )
            for sentence in span.sentences:
                cur = self._db.execute(
                    "INSERT INTO new.sentences(passage_id, start, end) VALUES (?, ?, ?)",
                    (passage_id, sentence.start, sentence.end),
                )
                sentence_ids.append(cur.lastrowid)
            if passage_tokens is not None:
                numbers, vectors = passage_tokens
                self._db.execute(
                    "INSERT INTO new.passage_tokens(passage_id, sentences, vectors) VALUES (?, ?, ?)",
                    (passage_id, np.asarray(numbers, dtype=np.uint16).tobytes(), pack_tokens(vectors)),
                )
        self.passage_vectors.add(passage_ids, passage_vectors)
        self.sentence_vectors.add(sentence_ids, sentence_vectors)

    # -- commit ----------------------------------------------------------------------

    def commit(self) -> dict:
        """Flush the new segment and live catalog and make them live by replacing the manifest.

        A commit writes what changed: the live catalog (paths and removals, copied
        whole, small) and a segment of the documents it added; the committed
        segments are not touched unless more than ``MAX_SEGMENTS`` would remain,
        and then the smallest run of neighbours is merged into one.
        """
        db = self._db
        db.commit()
        stored = {t: db.execute(f"SELECT COUNT(*) FROM new.{t}").fetchone()[0] for t in ("passages", "sentences")}
        if stored["passages"] != len(self.passage_vectors) or stored["sentences"] != len(self.sentence_vectors):
            raise StoreError("internal error: vector and catalog counts differ; nothing was committed")
        counts = {
            "documents": db.execute("SELECT COUNT(*) FROM main.paths").fetchone()[0],
            "passages": self._counts["passages"] + stored["passages"],
            "sentences": self._counts["sentences"] + stored["sentences"],
        }
        segments, schemas = [], []
        for segment, schema in zip(self._segments, self._schemas[1:]):  # committed ones, in order
            if self._all_removed(db, schema):  # nothing left to read: dropped, with its removals
                db.execute(f"DELETE FROM main.removed WHERE doc_id IN (SELECT id FROM {schema}.documents)")
                self._merged_away += [self.folder / name for name in segment["files"].values()]
                continue
            segments.append(segment)
            schemas.append(schema)
        db.commit()
        has_new = db.execute("SELECT 1 FROM new.documents LIMIT 1").fetchone() is not None
        next_ids = dict(self._next_ids)
        next_segment = self._next_segment + 1  # the new segment's number is spent, kept or not
        if has_new:
            ranges = id_ranges(db, "new")
            next_ids = {t: max(next_ids[t], ranges[t][1] + 1) for t in COUNTED}
            segments.append({"number": self._next_segment, "files": segment_files(self._next_segment),
                             "ids": ranges, "counts": stored})
            schemas.append("new")
            self.passage_vectors.save(self._new_files["passages"])
            self.sentence_vectors.save(self._new_files["sentences"])
            fresh = {"passages": self.passage_vectors, "sentences": self.sentence_vectors}
        else:
            fresh = {}
        if self._compact and segments:  # even one segment: written again in this version's layout
            run = (0, len(segments))
        else:
            run = choose_merge([s["counts"]["passages"] for s in segments])
        if run is not None:
            merged, written, away = merge(db, self.folder, segments[run[0] : run[1]], schemas[run[0] : run[1]],
                                          next_segment, fresh, self.model.dimension)
            self._new_files.update({f"merged-{key}": path for key, path in written.items()})
            self._merged_away += away
            if any("checksums" not in segment for segment in segments[run[0] : run[1]]):
                # this commit's own segment, merged at once: not kept
                self._merged_away += [self._new_files[key] for key in ("catalog", "passages", "sentences")]
            segments[run[0] : run[1]] = [merged]
            next_segment += 1
        db.commit()
        db.close()
        self._db = None
        for key in ("live", "catalog"):
            fsync_file(self._new_files[key])
        if not has_new:  # nothing added: no new segment
            for key in ("catalog", "passages", "sentences"):
                self._new_files.pop(key).unlink(missing_ok=True)
        for segment in segments:
            if "checksums" not in segment:  # written by this commit
                segment["checksums"] = {
                    key: sha256_file(self.folder / name) for key, name in segment["files"].items()
                }
        manifest = {
            "format": FORMAT_VERSION,
            "generation": self.generation,
            "model": {"name": self.model.name, "dimension": self.model.dimension, "max_tokens": self.model.max_tokens},
            "settings": self.settings,
            "counts": counts,
            "files": {"live": self._new_files["live"].name},
            "checksums": {"live": sha256_file(self._new_files["live"])},
            "segments": segments,
            "next_ids": next_ids,
            "next_segment": next_segment,
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
        live = set(live_file_names(manifest))
        for old in self._old_files + self._merged_away:
            if old.name not in live:
                old.unlink(missing_ok=True)
        logger.info("committed generation %d of %s: %s in %d segments", self.generation, self.folder, counts,
                    len(segments))
        return manifest

    def compact(self) -> None:
        """Have the commit write every segment again as one, leaving out removed documents (``qa compact``).

        Also with one segment: its vectors are then written as this version stores them
        (float16; an index of an earlier version keeps float32 until it is merged)."""
        self._compact = True

    @staticmethod
    def _all_removed(db: sqlite3.Connection, schema: str) -> bool:
        """Whether every document of a committed segment has been removed."""
        left = db.execute(
            f"SELECT 1 FROM {schema}.documents WHERE id NOT IN (SELECT doc_id FROM main.removed) LIMIT 1"
        ).fetchone()
        return left is None


def live_file_names(manifest: dict) -> list[str]:
    """Every file a committed generation consists of (either format: one catalog, or segments)."""
    if "segments" not in manifest:
        return list(manifest.get("files", {}).values())
    names = list(manifest["files"].values())
    for segment in manifest["segments"]:
        names += segment["files"].values()
    return names
