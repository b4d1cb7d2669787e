"""The one library API that the CLI, the chat page and scripts share."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from embeddings import encode_passages
from qa.cite import Shown, show
from qa.config import default_index_dir, default_model
from qa.ingest import IndexReport, index_paths
from qa.read import MAX_FILE_BYTES, PARSE_TIMEOUT
from qa.records import Answer, Document
from qa.followup import contextualize
from qa.late import question_tokens
from qa.search import QueryError, search, start_lexical
from qa.storage import (
    MANIFEST,
    IndexOutdated,
    ModelInfo,
    Snapshot,
    StoreError,
    Writer,
    check_model,
    read_manifest,
)

logger = logging.getLogger(__name__)

# Longer questions are cut here: the model reads 256 tokens at most anyway, and
# this bounds the lexical query's cost.
MAX_QUESTION_CHARS = 2000


class QA:
    """An index folder and the embedding model that goes with it.

    ``model`` is a sentence-transformers name or path; by default the index's own
    model (or all-MiniLM-L6-v2 for a new index). ``embedder`` replaces the model
    object itself (tests use a fake one). Safe to share between threads.
    """

    def __init__(self, index_dir: str | os.PathLike | None = None, *, model: str | None = None, embedder=None):
        self.index_dir = Path(index_dir) if index_dir else default_index_dir()
        self._model_name = model or default_model()
        self._embedder = embedder
        self._snapshot: Snapshot | None = None
        self._snapshot_stamp: tuple | None = None
        self._lock = threading.Lock()

    # -- model -------------------------------------------------------------------------

    def _wanted_model(self) -> str | None:
        if self._embedder is not None:
            return self._embedder.name
        if self._model_name:
            return self._model_name
        try:
            return read_manifest(self.index_dir)["model"]["name"]
        except Exception:
            return None

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from embeddings import load_embedder

                self._embedder = load_embedder(self._wanted_model())
            return self._embedder

    def _encode_questions(self, searched: Sequence[str], own: Sequence[str], tokens: bool):
        """Vectors of the texts searched and, with ``tokens``, the token vectors of the user's own words.

        A follow-up is compared token by token (``qa.late``) with the user's own
        words: the names added to its search text come from the previous answer
        and would pull it back there. Vectors and token vectors come from one
        forward pass where the model allows it; a model without token vectors gives None.
        """
        extra = [text for text, searched_text in zip(own, searched) if text != searched_text] if tokens else []
        vectors, _, token_vectors = encode_passages(self.embedder, [*searched, *extra], (), tokens=tokens)
        if token_vectors is None:
            return vectors[: len(searched)], [None] * len(searched)
        found = iter(token_vectors[len(searched) :])
        words = [
            question_tokens(token_vectors[i] if own[i] == searched[i] else next(found)) for i in range(len(searched))
        ]
        return vectors[: len(searched)], words

    def model_report(self) -> dict:
        """How this index's model runs here (``embeddings.describe``); loads the model,
        and on a CPU met for the first time measures which precision to use."""
        from embeddings import describe

        return {"index": str(self.index_dir), **describe(self.embedder)}

    def _model_info(self) -> ModelInfo:
        e = self.embedder
        return ModelInfo(e.name, e.dimension, e.max_tokens)

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The latest committed generation; reopened when a writer has committed since."""
        try:
            stat = (self.index_dir / MANIFEST).stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if self._snapshot is None or stamp != self._snapshot_stamp:
                fresh = Snapshot(self.index_dir)
                wanted = self._embedder.name if self._embedder is not None else self._model_name
                check_model(fresh.manifest, wanted, self.index_dir)
                self._snapshot, self._snapshot_stamp = fresh, stamp
            return self._snapshot

    def exists(self) -> bool:
        return (self.index_dir / MANIFEST).exists()

    def documents(self) -> list[Document]:
        return self.snapshot().documents()

    def show(self, citation: str, *, context: int = 1) -> Shown:
        return show(self.snapshot(), citation, context=context)

    def page_image(self, citation: str, *, scale: float = 2.0):
        """The cited PDF page rendered, the passage's region marked: ``(image, pixel rectangles)``."""
        from qa.pageview import original_page

        snapshot = self.snapshot()
        return original_page(snapshot, self.show(citation, context=0).cited, scale=scale)

    def verify(self, quote: str, citation: str, *, limit: int = 5):
        """Whether ``quote`` is at ``citation`` (a :class:`qa.verify.Verdict`), and where else it is.

        The model is loaded only when the quote occurs in no document, verbatim
        or normalised, and the closest passages are looked up.
        """
        from qa.verify import verify

        snapshot = self.snapshot()  # one generation throughout, so offsets agree

        def ask(question: str, k: int) -> Answer:
            return next(self._answer_batch(snapshot, [(None, question)], k, "hybrid"))

        return verify(snapshot, quote, citation, ask=ask, limit=limit)

    def ask(
        self,
        question: str,
        *,
        k: int = 5,
        id: str | None = None,
        retriever: str = "hybrid",
        docs: Sequence[str] | None = None,
        previous: Answer | None = None,
    ) -> Answer:
        """The ``k`` best passages for ``question``.

        ``docs`` (stored paths) restricts the search to those documents.
        ``previous``, the answer to the question asked just before, lets a
        follow-up like "What did he say?" find what "he" refers to.
        """
        text = _clean_question(question)
        searched = contextualize(text, previous)
        snapshot = self.snapshot()
        lexical = start_lexical(snapshot, searched, docs=docs)  # runs while the question is embedded
        (vector,), (words,) = self._encode_questions([searched], [text], retriever == "hybrid")
        answer = search(
            snapshot, vector, searched, k=k, retriever=retriever, docs=docs, question_tokens=words, lexical=lexical
        )
        return Answer(
            text, answer.answered, answer.confidence, answer.hits, id, searched if searched != text else None
        )

    def ask_many(
        self,
        questions: Iterable[tuple[str | None, str]],
        *,
        k: int = 5,
        retriever: str = "hybrid",
        docs: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> Iterator[Answer]:
        """Answer ``(id, question)`` pairs in order, embedding questions in batches."""
        snapshot = self.snapshot()
        batch: list[tuple[str | None, str]] = []
        for item in questions:
            batch.append(item)
            if len(batch) >= batch_size:
                yield from self._answer_batch(snapshot, batch, k, retriever, docs)
                batch = []
        if batch:
            yield from self._answer_batch(snapshot, batch, k, retriever, docs)

    def signals_many(self, questions: Sequence[str], *, retriever: str = "hybrid", batch_size: int = 64):
        """What the ranking knows of each question's candidates (``qa.search.Signals``), in order:
        for whoever measures other weights than the retriever's own (bench/tune.py)."""
        from qa.search import gather_signals

        snapshot = self.snapshot()
        for at in range(0, len(questions), batch_size):
            texts = [_clean_question(q) for q in questions[at : at + batch_size]]
            lexical = [start_lexical(snapshot, text) for text in texts]
            vectors, words = self._encode_questions(texts, texts, retriever == "hybrid")
            for text, vector, own, side in zip(texts, vectors, words, lexical):
                yield gather_signals(snapshot, vector, text, retriever=retriever, question_tokens=own, lexical=side)

    def _answer_batch(self, snapshot, batch, k, retriever, docs=None) -> Iterator[Answer]:
        texts = [_clean_question(q) for _, q in batch]
        # The batch's full-text searches run on worker threads while it is embedded and searched.
        lexical = [start_lexical(snapshot, text, docs=docs) for text in texts]
        vectors, words = self._encode_questions(texts, texts, retriever == "hybrid")
        for (qid, _), text, vector, own, side in zip(batch, texts, vectors, words, lexical):
            answer = search(
                snapshot, vector, text, k=k, retriever=retriever, docs=docs, question_tokens=own, lexical=side
            )
            yield Answer(answer.question, answer.answered, answer.confidence, answer.hits, qid)

    # -- writing -------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        progress: bool = False,
        prune: bool = True,
        max_bytes: int = MAX_FILE_BYTES,
        timeout: float = PARSE_TIMEOUT,
        ray: str | None = None,
        workers: int | None = None,
    ) -> IndexReport:
        """Add or update the files under ``paths``; one commit at the end.

        Files over ``max_bytes`` are skipped; a parser that takes longer than
        ``timeout`` seconds on one file is stopped and that file skipped. With
        ``ray`` (a cluster address, ``auto`` or ``local``) the files are read,
        split and embedded on that Ray cluster by ``workers`` actors (default
        one a node, or one a GPU) and committed here (``qa.distributed``).
        """
        info = self._lazy_model_info()
        if self.outdated():
            self.upgrade()
        with Writer(self.index_dir, info) as writer:
            if ray is not None:
                from qa.distributed import index_on_ray

                report = index_on_ray(
                    paths, writer, address=ray, workers=workers, progress=progress, prune=prune,
                    max_bytes=max_bytes, timeout=timeout,
                )
            else:
                report = index_paths(
                    paths, writer, lambda: self.embedder, progress=progress, prune=prune, max_bytes=max_bytes,
                    timeout=timeout,
                )
            # Touched files are committed too, so their new times spare the next run a re-read.
            changed = report.added or report.updated or report.removed or report.touched
            # A new, empty index is worth committing (qa list works) unless every path failed.
            if not changed and (self.exists() or report.skipped):
                writer.discard()  # nothing to commit: keep the current generation
        return report

    def outdated(self) -> bool:
        """Whether the index was written by an earlier version in a format ``upgrade`` can bring up to date."""
        try:
            read_manifest(self.index_dir)
        except IndexOutdated:
            return True
        except StoreError:
            return False
        return False

    def upgrade(self) -> IndexReport:
        """Rewrite an outdated index in the current format from what it stores (``qa.upgrade``)."""
        from qa.upgrade import upgrade

        report = upgrade(self.index_dir, self._lazy_model_info(), lambda: self.embedder)
        with self._lock:
            self._snapshot = None
        return report

    def remove(self, docs: Sequence[str]) -> list[str]:
        from qa.cite import resolve_document

        snapshot = self.snapshot()
        names = [resolve_document(snapshot, d) for d in docs]
        with Writer(self.index_dir, ModelInfo(**snapshot.manifest["model"])) as writer:
            for name in names:
                writer.remove_document(name)
        return names

    def compact(self) -> dict:
        """Merge the index's segments into one, dropping what removed documents left in them.

        Commits merge small segments as they go; this rewrites everything once
        (as long as a full index copy), for the fewest files and the least disk,
        also an index of one segment, whose vectors an earlier version may have
        written in float32 (this one writes float16).
        Returns ``{"segments": before, "after": 1, ...}``.
        """
        before = read_manifest(self.index_dir)
        with Writer(self.index_dir, self._lazy_model_info()) as writer:
            writer.compact()
        after = read_manifest(self.index_dir)
        return {"segments_before": len(before["segments"]), "segments_after": len(after["segments"]),
                "passages": after["counts"]["passages"], "generation": after["generation"]}

    def _lazy_model_info(self) -> ModelInfo:
        """The model facts a writer checks, without loading a model when the index knows them."""
        try:
            stored = read_manifest(self.index_dir)["model"]
        except Exception:
            return self._model_info()
        wanted = self._wanted_model()
        check_model({"model": stored}, wanted, self.index_dir)
        if self._embedder is None:
            return ModelInfo(**stored)
        return self._model_info()


def _clean_question(question: str) -> str:
    if not isinstance(question, str):
        raise QueryError("the question must be text")
    cleaned = "".join(ch if ch.isprintable() or ch in "\t\n" else " " for ch in question).strip()
    if not cleaned:
        raise QueryError("the question is empty")
    return cleaned[:MAX_QUESTION_CHARS]
