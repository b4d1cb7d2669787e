"""A FAISS inner-product index keyed by caller-chosen integer ids.

Vectors are unit length, so inner product is cosine similarity. The index is exact
(flat); it is read and written with FAISS's own format, never pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np


class VectorIndex:
    def __init__(self, dimension: int, index: faiss.Index | None = None) -> None:
        self.dimension = dimension
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"expected vectors of dimension {self.dimension}, got shape {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError("one id is needed for each vector")
        if len(ids):
            self._index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Sequence[int]) -> int:
        if not len(ids):
            return 0
        return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(
        self, query: np.ndarray, k: int, *, allowed: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the ``k`` nearest vectors, best first, for one query vector.

        With ``allowed``, only those ids are considered.
        """
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        scores, ids = self._index.search(query, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors for ``ids``, in that order."""
        if not len(ids):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``path`` and flush it to disk; the caller decides when it becomes live."""
        faiss.write_index(self._index, str(path))
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike, dimension: int) -> "VectorIndex":
        index = faiss.read_index(str(Path(path)))
        if index.d != dimension:
            raise ValueError(f"{path}: vectors have dimension {index.d}, expected {dimension}")
        return cls(dimension, index)
