"""The vector index at scale: synthetic 100k and 1M indexes, latency, recall, memory, build time.

    python bench/scale.py [--sizes 100000,1000000] [--queries 200] [--data clustered,uniform]

Builds ``embeddings.VectorIndex`` over synthetic 384-dimensional unit vectors (the
default model's dimension), saves it (``save`` is where the index picks its
structure: exact flat below ``embeddings.vectors.FLAT_MAX``, IVF above) and prints a
markdown table, one row per data set and size: the structure chosen, build time
(adding the vectors, then ``save`` including any k-means training), memory (bytes
of the saved index file, and growth of the process's resident memory while
building), single-query latency p50/p95 of ``VectorIndex.search(query, k=10)`` one
query at a time, and recall@10 and @100 against exact inner-product search
(``faiss.knn``, the same computation as ``IndexFlatIP``) over the same vectors.
``qa.search`` asks the index for 100 candidates, hence recall@100 too.

The data. Real sentence embeddings are not spread evenly over the sphere: their
variance falls off along a few directions, they cluster by topic, they share a
common mean direction, and a question lies near its answer. ``clustered`` (the
headline) imitates that, with figures measured on the default model's
(all-MiniLM-L6-v2) vectors of the 3,619 sentences of the shared SQuAD articles:
``CENTRES`` cluster centres with log-normal weights, each vector its centre plus
its own Gaussian part (``CENTRE_SHARE`` of the variance is the centre's), both
with the spectrum of those vectors (variance of the i-th principal direction ~
i^-0.87), plus their mean (norm 0.23); queries are stored vectors plus noise of
the same spectrum (cosine about 0.8 to their source). It is meant to be no easier
for an IVF index than real text: at the size of those SQuAD sentences, with
sqrt(n) lists, probing 8 of 60 lists found 0.85 of the exact top ten on this data
against 0.95 for the real vectors searched with the real questions.

``uniform`` is uniformly random unit vectors, the worst case for any approximate
index: in 384 dimensions every vector is nearly orthogonal to every other, there
are no neighbourhoods for lists to capture, and recall is about the share of the
vectors scanned. It is reported to show that bound, not because documents look
like that. Queries there are fresh random vectors.

The filtered columns search with ``allowed=`` a random ``FILTER_IDS`` of the ids
(a filter to some documents), against exact search over those ids.

Data is generated in float32 chunks from a fixed seed. A 1M run needs about 5 GB of
memory (the vectors, the index, and the IVF built beside the flat during
``save``) and a few minutes on two cores. ``synthetic_table`` is the function to
call from other benchmarks. Times depend on the machine and on what else runs;
set ``OMP_NUM_THREADS`` to compare like with like.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embeddings import VectorIndex  # noqa: E402

DIM = 384
CENTRES = 2000
CENTRE_SHARE = 0.6  # of each vector's variance that is its cluster's
SPECTRUM = 0.87  # measured on MiniLM sentence vectors (see the module docstring)
MEAN_NORM = 0.23  # ditto: the norm of their mean
QUERY_NOISE = 0.8
CHUNK = 100_000
FILTER_IDS = 10_000


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Clustered:
    """Clusters with a power-law spectrum, like sentence embeddings (see the module docstring)."""

    def __init__(self, seed: int, dim: int = DIM, centres: int = CENTRES) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        # Variance along the i-th axis ~ i^-SPECTRUM, total 1. No random rotation is needed:
        # inner products and k-means do not change under one.
        sigma = np.arange(1, dim + 1, dtype=np.float64) ** (-SPECTRUM / 2)
        self.sigma = (sigma / np.sqrt((sigma**2).sum())).astype(np.float32)
        self.mean = MEAN_NORM * _unit(rng.standard_normal((1, dim), dtype=np.float32))
        self.centres = self.draw(rng, centres) * np.float32(np.sqrt(CENTRE_SHARE))
        weights = rng.lognormal(0.0, 1.0, size=centres)
        self.weights = weights / weights.sum()

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.dim), dtype=np.float32) * self.sigma

    def vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        label = rng.choice(len(self.centres), size=n, p=self.weights)
        own = self.draw(rng, n) * np.float32(np.sqrt(1 - CENTRE_SHARE))
        return _unit(self.mean + self.centres[label] + own)

    def queries(self, rng: np.random.Generator, near: np.ndarray) -> np.ndarray:
        return _unit(near + QUERY_NOISE * self.draw(rng, len(near)))


def make_data(kind: str, n: int, queries: int, seed: int = 0, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stored unit vectors and ``queries`` query vectors, float32."""
    rng = np.random.default_rng([seed, n])
    data = np.empty((n, dim), dtype=np.float32)
    if kind == "clustered":
        mixture = Clustered(seed, dim)
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            data[start:stop] = mixture.vectors(rng, stop - start)
        q = mixture.queries(rng, data[rng.choice(n, size=queries, replace=False)])
    elif kind == "uniform":
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            data[start:stop] = _unit(rng.standard_normal((stop - start, dim), dtype=np.float32))
        q = _unit(rng.standard_normal((queries, dim), dtype=np.float32))
    else:
        raise ValueError(f"unknown data {kind!r}")
    return data, q


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def recall(got: list[np.ndarray], want: np.ndarray) -> float:
    k = want.shape[1]
    return float(np.mean([len(set(g[:k].tolist()) & set(w.tolist())) / k for g, w in zip(got, want)]))


def measure(data: np.ndarray, queries: np.ndarray, *, flat_max: int | None = None) -> dict:
    """Build a ``VectorIndex`` of ``data`` (ids = row numbers), save it, time queries against exact."""
    n = len(data)
    ids = np.arange(n, dtype=np.int64)
    rss0 = _rss()
    start = time.perf_counter()
    index = VectorIndex(data.shape[1]) if flat_max is None else VectorIndex(data.shape[1], flat_max=flat_max)
    for at in range(0, n, CHUNK):
        index.add(ids[at : at + CHUNK], data[at : at + CHUNK])
    add_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.faiss"
        start = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - start
        file_bytes = path.stat().st_size
    rss_growth = _rss() - rss0

    _, exact = faiss.knn(queries, data, 100, metric=faiss.METRIC_INNER_PRODUCT)
    got10, got100, times = [], [], []
    for query in queries:
        start = time.perf_counter()
        found, _ = index.search(query, 10)
        times.append(time.perf_counter() - start)
        got10.append(found)
    for query in queries:
        got100.append(index.search(query, 100)[0])
    times_ms = np.array(times) * 1e3

    # A filter to some documents: ``allowed`` ids, exact on either structure.
    rng = np.random.default_rng(n)
    rows = np.sort(rng.choice(n, size=min(n, FILTER_IDS), replace=False))
    allowed = ids[rows].tolist()
    filtered_times, filtered_got = [], []
    for query in queries:
        start = time.perf_counter()
        found, _ = index.search(query, 10, allowed=allowed)
        filtered_times.append(time.perf_counter() - start)
        filtered_got.append(found)
    filtered_exact = rows[np.argsort(-(queries @ data[rows].T), axis=1)[:, :10]]
    return {
        "n": n,
        "structure": index.describe(),
        "add_s": add_s,
        "save_s": save_s,
        "file_bytes": file_bytes,
        "rss_growth_bytes": rss_growth,
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "recall@10": recall(got10, exact[:, :10]),
        "recall@100": recall(got100, exact),
        "filtered_p50_ms": float(np.percentile(filtered_times, 50) * 1e3),
        "filtered_recall@10": recall(filtered_got, filtered_exact),
    }


def synthetic_table(
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    queries: int = 200,
    seed: int = 0,
    data: tuple[str, ...] = ("clustered", "uniform"),
    flat_max: int | None = None,
) -> list[dict]:
    """One row per data kind and size (see the module docstring)."""
    rows = []
    for kind in data:
        for n in sizes:
            vectors, q = make_data(kind, n, queries, seed)
            row = measure(vectors, q, flat_max=flat_max)
            del vectors
            rows.append({"data": kind, **row})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| data | vectors | structure | add s | save s | file MB | RSS growth MB | p50 ms | p95 ms "
        "| recall@10 | recall@100 | filtered p50 ms | filtered recall@10 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['structure']} | {r['add_s']:.1f} | {r['save_s']:.1f} "
            f"| {r['file_bytes'] / 1e6:.0f} | {r['rss_growth_bytes'] / 1e6:.0f} | {r['p50_ms']:.2f} "
            f"| {r['p95_ms']:.2f} | {r['recall@10']:.3f} | {r['recall@100']:.3f} "
            f"| {r['filtered_p50_ms']:.2f} | {r['filtered_recall@10']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated index sizes")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="clustered,uniform", help="clustered, uniform or both")
    parser.add_argument("--flat-max", type=int, default=None, help="override the flat/IVF threshold")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    data = tuple(d.strip() for d in args.data.split(","))
    print(f"threads: {faiss.omp_get_max_threads()}, dimension {DIM}", flush=True)
    print(markdown(synthetic_table(sizes, args.queries, args.seed, data, args.flat_max)))


if __name__ == "__main__":
    main()
