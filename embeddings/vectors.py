"""A FAISS inner-product index keyed by caller-chosen integer ids, structured by size.

Vectors are unit length, so inner product is cosine similarity. Below ``FLAT_MAX``
vectors the index is exact (``IndexIDMap2(IndexScalarQuantizer)``, a flat scan); from
there on it is an inverted file (``IndexIVFScalarQuantizer``, inner product,
spherical k-means lists, a hashtable direct map so that any id can be
reconstructed or removed), which is approximate:
a query scans only the ``nprobe`` lists whose centroids are nearest to it. The
structure changes only in ``restructure()``, which ``save()`` calls first, so an
index keeps one structure while a writer adds and removes, and the file written
has the structure its size calls for:

- flat -> IVF when the index holds ``FLAT_MAX`` vectors or more;
- IVF -> IVF, retrained, when its size has changed about ``RETRAIN_FACTOR``-fold
  since training (lists go as sqrt(n), so their number has changed 2-fold);
- IVF -> flat when it shrinks below ``FLAT_MAX // 2`` (the gap stops an index near
  the threshold from flipping at every commit).

The numbers, measured on a 2-core Xeon with one thread, 384 dimensions (see
``bench/scale.py`` for the data and the tables; timings varied up to 2x with the
machine's other load):

- a flat query costs 0.12-0.2 ms per thousand vectors: 13-16 ms at 100k, 23-41
  ms at 200k, 178 ms at 1M. Flat, exact results stop at 200k, where a query
  still takes well under the 100 ms goal;
- ``nlist = sqrt(n)``: FAISS's rule of thumb is 4 sqrt(n), but k-means costs go as
  nlist squared and on two busy cores 4 sqrt(n) took two minutes for 200k vectors
  alone; with sqrt(n) turning 1M vectors into IVF takes a little over a minute
  (k-means on 64 sampled vectors a list, 10 iterations, then assigning every
  vector), and the longer lists cost little at query time;
- ``nprobe = max(64, nlist // 16)``: recall@10 against exact search on the
  clustered data of bench/scale.py (built to be no easier for IVF than real
  MiniLM vectors) was 0.957 at 200k (nlist 447) and 0.966 at 1M (nlist 1000), for
  a p50 query of 6-10 and 14-15 ms; nprobe 32 gave 0.932 and 0.952. On uniformly
  random vectors, which have no neighbourhoods, it is about the share scanned
  (0.21 at 1M): the bound for data without structure.

Either structure stores each vector in float16 (FAISS's scalar quantizer
``QT_fp16``: ``IndexIDMap2(IndexScalarQuantizer)`` flat, ``IndexIVFScalarQuantizer``
without residuals as an inverted file), half of float32's bytes; scores are
those of the float16 vectors, which ``vectors()`` returns. A query scans half
the memory: on SciFact's 56,813 sentence vectors one flat scan took 1.46 ms
instead of 3.73, and its top 100 were 99.99% those of float32 (bf16: 1.51 ms,
99.92%; 8 bits a dimension: 1.34 ms, 99.59%, and ranges to train). A float16
component is within 2^-11 of the float32 one (a cosine moves by about 1e-4).
Float32 files, written by earlier versions, load and search as they are; a
``save`` writes float16.

Filtered search (``allowed=``) on an IVF index stays exact for up to
``EXACT_ALLOWED_MAX`` distinct ids: those vectors are scored directly. A larger
allowed set probes more lists, in proportion to the share of vectors it excludes.

Read and written with FAISS's own format, never pickle. The k-means sample depends
only on the set of ids stored and the seed is fixed, so the same content gives the
same index.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np

log = logging.getLogger(__name__)


@contextmanager
def _one_thread():
    """Search one query on the calling thread alone (OpenMP's thread count is per thread).

    One query is too little work to share: a second OpenMP thread only waits for a
    core, and just after the model has run (its own threads still spinning) a
    SciFact question's two flat scans took 20 ms each with two threads against 2
    with one. Training and batch work keep every thread.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


FLAT_MAX = 200_000
"""Vectors at which a flat index becomes IVF (at the next ``save``/``restructure``)."""
LISTS_PER_SQRT = 1.0
"""An IVF index of n vectors has about LISTS_PER_SQRT * sqrt(n) lists."""
RETRAIN_FACTOR = 4
"""An IVF index is retrained when its size has changed this much since training."""
NPROBE_MIN = 64
NPROBE_DIVISOR = 16
TRAIN_POINTS_PER_LIST = 64
"""K-means is trained on at most this many sampled vectors per list."""
MIN_POINTS_PER_LIST = 39  # below this FAISS's k-means warns and its lists are poor
KMEANS_ITERATIONS = 10
SEED = 1234
EXACT_ALLOWED_MAX = 50_000
_CHUNK = 65_536


def ivf_lists(n: int) -> int:
    """Number of inverted lists for ``n`` vectors: about sqrt(n), each holding enough to train."""
    return max(1, min(int(round(LISTS_PER_SQRT * math.sqrt(n))), n // MIN_POINTS_PER_LIST))


def ivf_probes(nlist: int) -> int:
    """Lists scanned by a query on an index of ``nlist`` lists."""
    return min(nlist, max(NPROBE_MIN, nlist // NPROBE_DIVISOR))


class VectorIndex:
    def __init__(self, dimension: int, index: faiss.Index | None = None, *, flat_max: int = FLAT_MAX) -> None:
        self.dimension = dimension
        self.flat_max = flat_max
        self._set(index if index is not None else _new_flat(dimension))

    def _set(self, index: faiss.Index) -> None:
        if isinstance(index, (faiss.IndexIVFFlat, faiss.IndexIVFScalarQuantizer)):
            if isinstance(index, faiss.IndexIVFScalarQuantizer) and (index.by_residual or not _is_fp16(index.sq)):
                raise ValueError("unsupported inverted file: only float16 codes without residuals are read")
            if index.direct_map.type != faiss.DirectMap.Hashtable:
                index.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.nprobe = ivf_probes(index.nlist)
        elif isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            if not isinstance(inner, faiss.IndexFlatIP) and not (
                isinstance(inner, faiss.IndexScalarQuantizer) and _is_fp16(inner.sq)
            ):
                raise ValueError(f"unsupported FAISS index type {type(inner).__name__} in an id map")
        else:
            raise ValueError(f"unsupported FAISS index type {type(index).__name__}")
        self._index = index

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"ivf"`` (approximate)."""
        return "ivf" if isinstance(self._index, faiss.IndexIVF) else "flat"

    @property
    def stored(self) -> str:
        """How a vector is stored: ``"float16"``, or ``"float32"`` in a file of an earlier version."""
        inner = self._index if self.kind == "ivf" else faiss.downcast_index(self._index.index)
        return "float32" if isinstance(inner, (faiss.IndexFlat, faiss.IndexIVFFlat)) else "float16"

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
        ids = np.asarray(ids, dtype=np.int64)
        if self.kind == "ivf":  # the hashtable direct map removes only through an array selector
            ids = np.unique(ids)
            return int(self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))))
        return int(self._index.remove_ids(ids))

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed: Sequence[int] | None = None,
        selector: faiss.IDSelector | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of the ``k`` nearest vectors, best first, for one query vector.

        With ``allowed``, only those ids are considered; with ``selector`` (not with
        ``allowed``), only the ids it selects (``embeddings.segments`` excludes removed ones).
        """
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with _one_thread():
            return self._search(query, k, allowed, selector)

    def _search(
        self, query: np.ndarray, k: int, allowed: Sequence[int] | None, selector: faiss.IDSelector | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "ivf":
            return self._search_ivf(query, k, allowed, selector)
        params = sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif selector is not None:
            sel = selector
        if sel is not None:
            params = faiss.SearchParameters(sel=sel)
        scores, ids = self._index.search(query, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def _search_ivf(
        self, query: np.ndarray, k: int, allowed: Sequence[int] | None, selector: faiss.IDSelector | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        index = self._index
        nprobe = index.nprobe
        sel = selector
        if allowed is not None:
            wanted = np.unique(np.asarray(allowed, dtype=np.int64))
            if len(wanted) <= EXACT_ALLOWED_MAX:
                try:
                    vectors = index.reconstruct_batch(wanted)
                except RuntimeError:  # an allowed id is not stored: scan every list instead
                    nprobe = index.nlist
                else:
                    return _top_k(wanted, vectors @ query[0], k)
            else:  # the probed lists hold fewer allowed ids: probe more, in proportion
                nprobe = min(index.nlist, math.ceil(nprobe * len(self) / len(wanted)))
            sel = faiss.IDSelectorBatch(wanted)
        while True:
            # Per-call parameters, not index.nprobe, so that concurrent readers never race.
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if sel is not None:
                params.sel = sel  # ``sel`` stays referenced here for the whole search
            scores, ids = index.search(query, k, params=params)
            keep = ids[0] >= 0
            if keep.sum() >= k or nprobe >= index.nlist:
                return ids[0][keep], scores[0][keep]
            nprobe = min(index.nlist, nprobe * 4)  # the probed lists held fewer than k

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors for ``ids``, in that order."""
        if not len(ids):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    # -- structure -------------------------------------------------------------------

    def restructure(self) -> bool:
        """Change to the structure the current size calls for; True if it changed."""
        n = len(self)
        if self.kind == "flat":
            target = "flat" if n < self.flat_max else "ivf"
            if target == "flat" and self.stored == "float16":
                return False
        elif n < self.flat_max // 2:
            target = "flat"
        else:
            trained, wanted = self._index.nlist, ivf_lists(n)
            # Lists go as sqrt(n): a 4x change in n is a 2x change in lists.
            ratio = math.sqrt(RETRAIN_FACTOR)
            if wanted <= trained * ratio and wanted * ratio >= trained and self.stored == "float16":
                return False
            target = "ivf"
        old = self.describe()
        new = self._build_ivf(n) if target == "ivf" else _new_flat(self.dimension)
        for ids, vectors in self._contents():
            new.add_with_ids(vectors, ids)
        self._set(new)
        log.info("vector index of %d vectors: %s -> %s", n, old, self.describe())
        return True

    def describe(self) -> str:
        """The structure in words, e.g. ``flat float16`` or ``ivf nlist=4000 nprobe=125 float16``."""
        if self.kind == "flat":
            return f"flat {self.stored}"
        return f"ivf nlist={self._index.nlist} nprobe={self._index.nprobe} {self.stored}"

    def _build_ivf(self, n: int) -> faiss.IndexIVFScalarQuantizer:
        nlist = ivf_lists(n)
        ids = np.sort(self._ids())
        rng = np.random.default_rng(SEED)
        sample_size = min(n, TRAIN_POINTS_PER_LIST * nlist)
        sample = np.sort(rng.choice(n, size=sample_size, replace=False)) if sample_size < n else np.arange(n)
        training = self.vectors(ids[sample])
        quantizer = faiss.IndexFlatIP(self.dimension)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dimension, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
        )
        index.cp.seed = SEED
        index.cp.niter = KMEANS_ITERATIONS
        index.cp.spherical = True  # centroids on the unit sphere, like the vectors
        index.cp.min_points_per_centroid = 1
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        index.train(training)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index owns and frees it
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return index

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``(ids, vectors)`` stored, a chunk at a time (a merge of segments reads them so)."""
        return self._contents()

    def _ids(self) -> np.ndarray:
        if self.kind == "flat":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
        return np.concatenate([ids for ids, _ in self._contents(vectors=False)] or [np.zeros(0, np.int64)])

    def _contents(self, *, vectors: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Every (ids, vectors) stored, in chunks, without copying the whole index at once."""
        index = self._index
        if self.kind == "flat":
            all_ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
            flat = index.index
            for start in range(0, len(all_ids), _CHUNK):
                stop = min(start + _CHUNK, len(all_ids))
                yield all_ids[start:stop], flat.reconstruct_n(start, stop - start) if vectors else None
            return
        invlists = index.invlists
        stored = np.float16 if self.stored == "float16" else np.float32
        batch_ids: list[np.ndarray] = []
        batch_vectors: list[np.ndarray] = []
        held = 0
        for list_no in range(index.nlist):
            size = invlists.list_size(list_no)
            if not size:
                continue
            ids_ptr = invlists.get_ids(list_no)
            batch_ids.append(faiss.rev_swig_ptr(ids_ptr, size).copy())
            invlists.release_ids(list_no, ids_ptr)
            if vectors:
                codes_ptr = invlists.get_codes(list_no)
                codes = faiss.rev_swig_ptr(codes_ptr, size * invlists.code_size).copy()
                invlists.release_codes(list_no, codes_ptr)
                batch_vectors.append(codes.view(stored).reshape(size, self.dimension).astype(np.float32))
            held += size
            if held >= _CHUNK:
                yield np.concatenate(batch_ids), np.concatenate(batch_vectors) if vectors else None
                batch_ids, batch_vectors, held = [], [], 0
        if held:
            yield np.concatenate(batch_ids), np.concatenate(batch_vectors) if vectors else None

    # -- files -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, restructure: bool = True) -> None:
        """Write to ``path`` and flush it to disk; the caller decides when it becomes live.

        First changes structure if the size calls for it (see ``restructure``).
        """
        if restructure:
            self.restructure()
        faiss.write_index(self._index, str(path))
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike, dimension: int, *, flat_max: int = FLAT_MAX) -> "VectorIndex":
        index = faiss.read_index(str(Path(path)))
        if index.d != dimension:
            raise ValueError(f"{path}: vectors have dimension {index.d}, expected {dimension}")
        return cls(dimension, index, flat_max=flat_max)


def _new_flat(dimension: int) -> faiss.Index:
    inner = faiss.IndexScalarQuantizer(dimension, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexIDMap2(inner)
    index.own_fields = True
    inner.this.disown()  # the id map owns and frees it
    return index


def _is_fp16(quantizer: faiss.ScalarQuantizer) -> bool:
    return quantizer.qtype == faiss.ScalarQuantizer.QT_fp16


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best, best first; equal scores in id order."""
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order].astype(np.float32, copy=False)
