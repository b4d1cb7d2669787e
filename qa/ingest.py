"""Indexing: read files, split them into passages, embed, and store one commit.

Only new or changed files (by content hash) are embedded; the model is not even
loaded when nothing changed. A file that cannot be read is skipped and named,
and everything else is still indexed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from embeddings import encode_passages
from qa.late import passage_tokens
from qa.read import (
    MAX_FILE_BYTES,
    PARSE_TIMEOUT,
    ExtractedText,
    ReadError,
    extract_text,
    format_of,
    iter_files,
    read_bytes,
)
from qa.records import PassageSpan, Span
from qa.split import split_passages
from qa.storage import PathState, StoredPassage, Writer

logger = logging.getLogger(__name__)

# Embed several documents' texts in one call: many small files would otherwise
# each pay for a short, badly filled batch.
EMBED_GROUP = 512
NO_PASSAGES = "no text to index (headings only)"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)  # same content, new modification time
    passages_embedded: int = 0
    sentences_embedded: int = 0

    def to_json(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "passages_embedded": self.passages_embedded,
            "sentences_embedded": self.sentences_embedded,
        }


@dataclass
class Pending:
    """A document read and split, waiting for its passages to be embedded and stored."""

    path: str
    source: str
    sha256: str
    size: int
    mtime_ns: int
    extracted: ExtractedText
    passages: list[StoredPassage]


def locate(extracted: ExtractedText, spans: Iterable[PassageSpan]) -> list[StoredPassage]:
    """Add page, paragraph-on-the-page and section to each passage span.

    For paged formats a reader counts paragraphs on the page in front of them,
    so that is the number a citation gives (``report.pdf, p. 3, ¶2``).
    """
    located = []
    page_first: dict[int, int] = {}
    for span in spans:
        page = extracted.page_at(span.start)
        if page is None:
            number = span.paragraph
        else:
            first = page_first.setdefault(page, span.paragraph)
            number = span.paragraph - first + 1
        located.append(StoredPassage(span, number, page, extracted.section_at(span.start)))
    return located


def index_paths(
    paths: Sequence[str | os.PathLike],
    writer: Writer,
    get_embedder: Callable[[], object],
    *,
    progress: bool = False,
    prune: bool = True,
    max_bytes: int = MAX_FILE_BYTES,
    timeout: float = PARSE_TIMEOUT,
) -> IndexReport:
    """Bring the index in ``writer`` up to date with the files under ``paths``.

    A file whose size and modification time match the index is not read; one
    whose content hash matches is not parsed; content already stored under
    another path is not embedded again. ``get_embedder`` is called only if
    something needs embedding. With ``prune``, documents that came from a folder
    in ``paths`` and are gone from it are removed.
    """
    report = IndexReport()
    stored = writer.path_states()
    seen: set[str] = set()
    pending: list[Pending] = []
    embedder = None

    files = list(_existing_files(paths, report))
    bar = _progress_bar(len(files), progress)
    embedding = Pipeline(writer, report, bar)
    try:
        for file, name in files:
            seen.add(name)
            previous = stored.get(name)
            try:
                looked = look(file, name, previous, writer, report, max_bytes=max_bytes)
                if looked is None:
                    bar.update(1)
                    continue
                stat, data, sha = looked
                source = str(Path(file).resolve())
                if writer.has_content(sha) or embedding.holds(sha) or any(p.sha256 == sha for p in pending):
                    # The content's first copy is stored before a second path names it.
                    embedding.submit(pending, embedder)
                    embedding.finish()
                    pending = []
                    writer.add_alias(name, sha256=sha, source=source, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
                    (report.updated if previous else report.added).append(name)
                    bar.update(1)
                    continue
                extracted = extract_text(file, data, timeout=timeout)
            except (ReadError, OSError) as exc:
                unreadable(file, name, previous, exc, writer, report)
                bar.update(1)
                continue
            if embedder is None:
                embedder = get_embedder()
            passages = split_document(extracted, embedder)
            if not passages:
                report.skipped.append(Skipped(str(file), NO_PASSAGES))
                bar.update(1)
                continue
            (report.updated if previous else report.added).append(name)
            pending.append(Pending(name, source, sha, stat.st_size, stat.st_mtime_ns, extracted, passages))
            if sum(len(p.passages) for p in pending) >= EMBED_GROUP:
                embedding.submit(pending, embedder)
                pending = []
        embedding.submit(pending, embedder)
        embedding.finish()
    finally:
        embedding.close()
        bar.close()

    if prune:
        for name in _vanished(paths, stored, seen):
            writer.remove_document(name)
            report.removed.append(name)
    return report


class Pipeline:
    """Embeds one group of documents on a worker thread while the caller reads and splits the next.

    The model's forward passes run in OpenVINO's (or PyTorch's) own threads and
    leave the GIL, so reading and splitting the next files (pysbd's sentence
    splitting is most of it, all Python) fill the cores the model leaves idle
    between its batches, where before the two took turns. Storing stays on the
    caller's thread, in file order, so the writer sees what it saw before:
    a group is stored before the next is submitted, and ``finish`` waits for it.
    """

    def __init__(self, writer: Writer, report: IndexReport, bar) -> None:
        self.writer, self.report, self.bar = writer, report, bar
        self._threads: ThreadPoolExecutor | None = None
        self._running: tuple[list[Pending], Future] | None = None

    def holds(self, sha256: str) -> bool:
        """Whether a document of this content is being embedded (not yet stored)."""
        return self._running is not None and any(p.sha256 == sha256 for p in self._running[0])

    def submit(self, pending: list[Pending], embedder) -> None:
        """Store the group embedded so far, then start embedding ``pending`` (if any)."""
        self.finish()
        if not pending:
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-embed")
        self._running = (pending, self._threads.submit(embed, pending, embedder))

    def finish(self) -> None:
        """Wait for the group being embedded and store it; its error, if any, is raised here."""
        if self._running is None:
            return
        pending, future = self._running
        self._running = None
        store_counted(pending, future.result(), self.writer, self.report)
        self.bar.update(len(pending))

    def close(self) -> None:
        """Let a group still embedding (after an error) end, storing nothing."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)


def look(file, name: str, previous: PathState | None, writer: Writer, report: IndexReport, *, max_bytes: int):
    """``(stat, bytes, sha256)`` of a file that may have changed; None for one that has not.

    A file whose size and modification time match the index is not read; one
    whose content hash matches is recorded as unchanged with its new times.
    Raises ReadError or OSError for a file that cannot be read.
    """
    stat = os.stat(file)
    if previous and (previous.size, previous.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        report.unchanged.append(name)
        return None
    format_of(file)
    data = read_bytes(file, max_bytes=max_bytes)
    sha = hashlib.sha256(data).hexdigest()
    if previous and previous.sha256 == sha:
        writer.touch_path(name, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        report.unchanged.append(name)
        report.touched.append(name)
        return None
    return stat, data, sha


def unreadable(file, name: str, previous: PathState | None, exc: Exception, writer: Writer, report: IndexReport) -> None:
    """Skip a file that cannot be read, and drop its earlier version, whose citations could no longer be checked."""
    reason = str(exc) if isinstance(exc, ReadError) else (exc.strerror or str(exc))
    if previous:
        writer.remove_document(name)
        report.removed.append(name)
        reason += " (its earlier version was removed from the index)"
    report.skipped.append(Skipped(str(file), reason))


def split_document(extracted: ExtractedText, embedder) -> list[StoredPassage]:
    """The passages of a document, located (page, paragraph on the page, section); empty for headings only."""
    spans = split_passages(
        extracted.text,
        embedder.token_offsets,
        max_tokens=embedder.max_tokens,
        headings=[Span(h.start, h.end) for h in extracted.headings],
    )
    return locate(extracted, spans)


def _existing_files(paths, report: IndexReport):
    for given in paths:
        if not Path(given).exists():
            report.skipped.append(Skipped(str(given), "no such file or folder"))
            continue
        yield from iter_files([given])


def _vanished(paths, stored: dict[str, PathState], seen: set[str]) -> list[str]:
    """Stored documents whose source lay under a folder being indexed and is gone."""
    folders = [Path(p).resolve() for p in paths if Path(p).is_dir()]
    gone = []
    for name, state in stored.items():
        if name in seen or not state.source:
            continue
        src = Path(state.source)
        if any(src.is_relative_to(folder) for folder in folders) and not src.exists():
            gone.append(name)
    return sorted(gone)


# A first paragraph of one sentence on one line, at most this long, reads as the document's title (or lead).
TITLE_CHARS = 300


def _context(doc: Pending, stored: StoredPassage) -> str | None:
    """Words embedded before a passage's own: its heading, else the document's title.

    The heading is context the passage's own words may lack ("Install" above
    "Run make run"). A document without headings (plain text) whose first
    paragraph is one short line, a title or a news lead, gives that line to its
    other paragraphs: an abstract's windows then carry the topic its title names.
    A first paragraph of several sentences is a paragraph like the others.
    """
    if stored.section:
        return stored.section
    first = doc.passages[0] if doc.passages else None
    if first is None or stored.span.paragraph == first.span.paragraph or first.span.windows > 1:
        return None
    if len(first.span.sentences) > 1:
        return None
    title = doc.extracted.text[first.span.start : first.span.end]
    return title if len(title) <= TITLE_CHARS and "\n" not in title.strip() else None


@dataclass(frozen=True)
class Vectors:
    """What the model gives a group of documents: a row a passage, a row a sentence (in order), and
    for each passage its kept tokens' sentence numbers and vectors (None from a model without them)."""

    passages: np.ndarray
    sentences: np.ndarray
    tokens: list[tuple[np.ndarray, np.ndarray]] | None = None


def embed(pending: Sequence[Pending], embedder) -> Vectors:
    """Embed the documents' passages, sentences and tokens in one call.

    Only this step (with reading and splitting) needs the model: a run on a
    cluster (``qa.distributed``) does it on the workers and ``store`` on the driver.
    """
    passage_texts: list[str] = []
    # (passage number, start, end) of each sentence within its passage's embedded text
    sentence_spans: list[tuple[int, int, int]] = []
    for doc in pending:
        for stored in doc.passages:
            span = stored.span
            body = doc.extracted.text[span.start : span.end]
            context = _context(doc, stored)
            prefix = f"{context}\n" if context else ""
            shift = len(prefix) - span.start
            for sentence in span.sentences:
                sentence_spans.append((len(passage_texts), sentence.start + shift, sentence.end + shift))
            passage_texts.append(prefix + body)
    passage_vectors, sentence_vectors, token_vectors = encode_passages(
        embedder, passage_texts, sentence_spans, tokens=True
    )
    stored_tokens = None
    if token_vectors is not None:
        by_passage: list[list[tuple[int, int]]] = [[] for _ in passage_texts]
        for number, start, end in sentence_spans:
            by_passage[number].append((start, end))
        stored_tokens = [passage_tokens(t, s) for t, s in zip(token_vectors, by_passage)]
    return Vectors(passage_vectors, sentence_vectors, stored_tokens)


def store(pending: Sequence[Pending], vectors: Vectors, writer: Writer) -> None:
    """Add the embedded documents to ``writer``, each with its slice of ``vectors``."""
    p_at = s_at = 0
    for doc in pending:
        n_passages = len(doc.passages)
        n_sentences = sum(len(stored.span.sentences) for stored in doc.passages)
        writer.add_document(
            path=doc.path,
            source=doc.source,
            sha256=doc.sha256,
            format=doc.extracted.format,
            encoding=doc.extracted.encoding,
            text=doc.extracted.text,
            passages=doc.passages,
            size=doc.size,
            mtime_ns=doc.mtime_ns,
            passage_vectors=vectors.passages[p_at : p_at + n_passages],
            sentence_vectors=vectors.sentences[s_at : s_at + n_sentences],
            token_vectors=vectors.tokens[p_at : p_at + n_passages] if vectors.tokens is not None else None,
            ocr_words=doc.extracted.ocr_words,
        )
        p_at += n_passages
        s_at += n_sentences


def store_counted(pending: Sequence[Pending], vectors: Vectors, writer: Writer, report: IndexReport) -> None:
    """``store``, and count what was embedded in ``report``."""
    store(pending, vectors, writer)
    report.passages_embedded += len(vectors.passages)
    report.sentences_embedded += len(vectors.sentences)


def embed_and_store(pending: list[Pending], writer: Writer, embedder, report: IndexReport) -> None:
    """Embed the documents' passages (and sentences and tokens) in one call and add them to ``writer``."""
    store_counted(pending, embed(pending, embedder), writer, report)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="indexing", dynamic_ncols=True)
