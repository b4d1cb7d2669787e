"""Several vector indexes searched as one: the segments of an index, each written once.

A writer adds a new segment for what it adds and never rewrites an old one;
ids removed since a segment was written are *excluded* when it is searched
(FAISS's ``IDSelectorNot``), until a merge writes the survivors into a new
segment. Each segment holds a contiguous range of ids (ids only grow, and only
neighbouring segments are merged), so a filtered search asks each segment only
for its own ids. As in Lucene, the cost of a commit then follows what it
changed, not the size of the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import faiss
import numpy as np

from embeddings.vectors import VectorIndex, _top_k


@dataclass(frozen=True)
class Segment:
    vectors: VectorIndex
    low: int  # smallest id it may hold
    high: int  # largest id it may hold


class SegmentedVectors:
    """The ``Vectors`` of an index made of segments, less the excluded ids."""

    def __init__(self, dimension: int, segments: Sequence[Segment], excluded: Sequence[int] = ()) -> None:
        self.dimension = dimension
        self.segments = tuple(sorted(segments, key=lambda s: s.low))
        self._excluded = np.unique(np.asarray(excluded, dtype=np.int64))
        # One selector for the life of the snapshot: built once, read by any thread.
        self._selector = None
        if len(self._excluded):
            self._batch = faiss.IDSelectorBatch(self._excluded)
            self._selector = faiss.IDSelectorNot(self._batch)
        self._lows = np.asarray([s.low for s in self.segments], dtype=np.int64)
        # Every excluded id is stored in exactly one segment: the writer excludes only what a segment holds.
        self._size = sum(len(s.vectors) for s in self.segments) - len(self._excluded)

    def __len__(self) -> int:
        return self._size

    @property
    def excluded(self) -> np.ndarray:
        return self._excluded

    def search(
        self, query: np.ndarray, k: int, *, allowed: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the ``k`` nearest live vectors, best first (only ``allowed`` ids when given)."""
        if len(self.segments) == 1 and allowed is None:
            return self.segments[0].vectors.search(query, k, selector=self._selector)
        found_ids: list[np.ndarray] = []
        found_scores: list[np.ndarray] = []
        wanted = None
        if allowed is not None:
            wanted = np.asarray(allowed, dtype=np.int64)
            if len(self._excluded):
                wanted = wanted[~np.isin(wanted, self._excluded)]
        for segment in self.segments:
            if wanted is not None:
                mine = wanted[(wanted >= segment.low) & (wanted <= segment.high)]
                if not len(mine):
                    continue
                ids, scores = segment.vectors.search(query, k, allowed=mine)
            else:
                ids, scores = segment.vectors.search(query, k, selector=self._selector)
            found_ids.append(ids)
            found_scores.append(scores)
        if not found_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return _top_k(np.concatenate(found_ids), np.concatenate(found_scores), k)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids``, in that order."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dimension), dtype=np.float32)
        if not len(ids):
            return out
        where = np.searchsorted(self._lows, ids, side="right") - 1
        for number in np.unique(where):
            rows = np.flatnonzero(where == number)
            out[rows] = self.segments[number].vectors.vectors(ids[rows])
        return out
