"""What retrieval reads of an index: the one interface between the search and a storage back end.

``qa.search``, ``qa.cite``, ``qa.verify`` and the page view read an index only
through these methods, so a second back end (a served engine for an index
beyond one machine's disk) implements ``Reader`` and ``Vectors`` and nothing in
retrieval changes. ``qa.storage.Snapshot`` (one committed generation of an
index folder: SQLite catalog with FTS5, FAISS files) is the first.

Ids are the back end's own integers: a passage id names one passage of one
generation, a sentence id one sentence, a document id one document.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import numpy as np

from qa.records import Document, Passage
from qa.storage.manifest import ModelInfo


class Vectors(Protocol):
    """Unit vectors by id, searched by inner product (``embeddings.VectorIndex``)."""

    def __len__(self) -> int: ...

    def search(
        self, query: np.ndarray, k: int, *, allowed: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the ``k`` nearest, best first; only ``allowed`` ids when given."""
        ...

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids``, in that order."""
        ...


class Reader(Protocol):
    """One consistent state of an index, read-only and safe to share between threads."""

    model: ModelInfo
    passage_vectors: Vectors
    sentence_vectors: Vectors

    @property
    def generation(self) -> int: ...

    # documents
    def documents(self) -> list[Document]: ...

    def document_text(self, path: str) -> str | None: ...

    def source_of(self, path: str) -> tuple[str | None, str] | None:
        """``(file the document was read from, its SHA-256 then)``."""
        ...

    # passages and sentences
    def passages(self, ids: Iterable[int]) -> dict[int, Passage]: ...

    def passages_of(
        self, doc: str, paragraph: int | None = None, *, seq: int | None = None, page: int | None = None
    ) -> list[Passage]: ...

    def sentences(self, passage_ids: Iterable[int]) -> dict[int, list[tuple[int, int, int]]]:
        """``passage id -> [(sentence id, start, end), ...]`` in text order."""
        ...

    def passage_of_sentences(self, sentence_ids: Iterable[int]) -> dict[int, int]: ...

    def lead_passages(self, passage_ids: Iterable[int]) -> dict[int, int]:
        """``passage id -> the first passage of its document``."""
        ...

    def passage_tokens(self, passage_ids: Iterable[int]) -> dict[int, tuple[bytes, bytes]]:
        """``passage id -> (sentence numbers, packed token vectors)`` (``qa.late``)."""
        ...

    # search
    def ids_in(self, docs: Iterable[str]) -> tuple[list[int], list[int], list[int]]:
        """Document, passage and sentence ids of the documents at paths ``docs``."""
        ...

    def lexical(self, match: str, doc_ids: Sequence[int] | None = None) -> dict[int, float]:
        """``passage id -> bm25`` of every passage matching an FTS5-syntax OR of quoted terms."""
        ...
