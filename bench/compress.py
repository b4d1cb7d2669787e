"""What compressing the stored vectors would cost in quality, on every set, before the format changes.

    python bench/compress.py [--work DIR] [--sets squad,scifact,nfcorpus,seeds] [--codecs "PQ32 IVF1024,PQ32"] [--limit N]

The index keeps, beyond the text, a float32 vector a passage and a sentence
(1,536 bytes each with the default model) and every content token's int8
vector with its scale (390 bytes, ``embeddings.tokens``): on SciFact 46 KB a
passage, 38 KB of it tokens. The scale issue asks for 6 KB. This measures, on
the indexes bench/quality.py built (``--work``, the same default), the
default retriever's figures when what the search reads is compressed as it
would be stored:

- ``tokens SPEC``: the token vectors through a FAISS codec named by its
  ``index_factory`` spec, trained on up to 100,000 of that index's own tokens:
  ``PQm`` a product quantizer of ``m`` sub-vectors of 8 bits (``m`` bytes a
  token), ``IVFn,PQm`` the residual from the nearest of ``n`` k-means centroids
  in ``m`` bytes plus 2 for the centroid (the residual codes of ColBERTv2 and
  PLAID); MaxSim with the decoded vectors is exactly what scoring the codes by
  table look-up gives;
- ``vectors SQ8``: the passage and sentence vectors in 8 bits a dimension
  (``faiss.IndexScalarQuantizer``, 384 bytes), both for the nearest-neighbour
  search and for the cosines of the candidates.

Each variant is the same code path with the stored bytes swapped in memory;
the index on disk is not touched. Prints one table: per variant, bytes a
passage of each set (text and its full-text index aside) and each set's figure, with the uncompressed
baseline of the same run first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qa.late as late  # noqa: E402
from bench.quality import SETS, table  # noqa: E402
from embeddings.tokens import unpack  # noqa: E402
from qa import QA  # noqa: E402
from qa.evaluate import read_labeled, score_questions, summarize  # noqa: E402
from qa.storage import Snapshot  # noqa: E402

TRAIN_TOKENS = 100_000


def stored_tokens(snapshot: Snapshot) -> tuple[list[int], list[np.ndarray]]:
    """Every passage's token vectors as float32, decoded from the index."""
    dimension = snapshot.model.dimension
    ids, vectors = [], []
    for pid, blob in snapshot._query("SELECT passage_id, vectors FROM passage_tokens ORDER BY passage_id"):
        rows, scales, _ = unpack([blob], dimension)
        ids.append(pid)
        vectors.append(rows.astype(np.float32) * scales[:, None])
    return ids, vectors


class CompressedTokens:
    """The snapshot's token vectors passed through a FAISS codec (``index_factory`` spec), decoded when scored."""

    def __init__(self, snapshot: Snapshot, spec: str) -> None:
        ids, vectors = stored_tokens(snapshot)
        every = np.ascontiguousarray(np.concatenate(vectors))
        rng = np.random.default_rng(0)
        sample = every[rng.choice(len(every), min(TRAIN_TOKENS, len(every)), replace=False)]
        codec = faiss.index_factory(every.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        codec.train(np.ascontiguousarray(sample))
        self.bytes_per_token = codec.sa_code_size()
        decoded = codec.sa_decode(codec.sa_encode(every))
        bounds = np.cumsum([0] + [len(v) for v in vectors])
        self.rows = {pid: decoded[bounds[i] : bounds[i + 1]] for i, pid in enumerate(ids)}

    def unpack(self, blobs, dimension):
        """``embeddings.tokens.unpack`` for the stand-ins ``passage_tokens`` returns: decoded rows, scale 1."""
        rows = [self.rows[pid] for pid in blobs]
        counts = np.array([len(r) for r in rows], dtype=np.int64)
        stacked = np.concatenate(rows) if rows else np.zeros((0, dimension), dtype=np.float32)
        return stacked, np.ones(len(stacked), dtype=np.float32), counts

    def install(self, snapshot: Snapshot) -> None:
        own = snapshot.passage_tokens

        def passage_tokens(passage_ids):
            return {pid: (sentences, pid) for pid, (sentences, _) in own(passage_ids).items()}

        snapshot.passage_tokens = passage_tokens
        late.unpack = self.unpack


class SQ8Vectors:
    """A ``VectorIndex`` stand-in whose vectors are stored in 8 bits a dimension."""

    def __init__(self, index) -> None:
        ids = faiss.vector_to_array(index._index.id_map)
        vectors = np.vstack([index.vectors(ids[i : i + 10_000]) for i in range(0, len(ids), 10_000)])
        quantizer = faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        quantizer.train(vectors)
        self.index = faiss.IndexIDMap2(quantizer)
        self.index.add_with_ids(vectors, ids)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query, k, *, allowed=None):
        scores, ids = self.index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k)
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def vectors(self, ids):
        return self.index.reconstruct_batch(np.asarray(list(ids), dtype=np.int64))


def score(qa: QA, name: str, limit: int) -> dict:
    _, questions_file, metric, k = SETS[name]
    questions = read_labeled(questions_file)[: limit or None]
    s = summarize(score_questions(qa, questions, retriever="hybrid", k=k), retriever="hybrid", k=k)
    return {name: s[metric], **({"seeds R@5": s["recall@5"]} if name == "seeds" else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qa" / "bench")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--codecs", default="PQ32 PQ64 IVF1024,PQ32 SQ4",
                        help="FAISS index_factory specs for the tokens, separated by spaces or semicolons")
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions of each set")
    args = parser.parse_args()
    names = [s for s in args.sets.split(",") if s]
    variants = [("int8 tokens, float32 vectors (today)", None, False)]
    codecs = [c for c in args.codecs.replace(";", " ").split() if c]
    variants += [(f"tokens {c}", c, False) for c in codecs] + [(f"tokens {codecs[-1]}, vectors SQ8", codecs[-1], True)]
    rows = {label: {"variant": label} for label, _, _ in variants}
    original_unpack = late.unpack
    for name in names:
        for label, m, sq8 in variants:
            qa = QA(args.work / name)  # a fresh snapshot: nothing swapped in
            snapshot = qa.snapshot()
            tokens = snapshot._query("SELECT COUNT(*), SUM(LENGTH(vectors)) FROM passage_tokens")[0]
            passages, sentences = len(snapshot.passage_vectors), len(snapshot.sentence_vectors)
            late.unpack = original_unpack
            per_token = 4 + snapshot.model.dimension
            if m is not None:
                codec = CompressedTokens(snapshot, m)
                codec.install(snapshot)
                per_token = codec.bytes_per_token
            per_vector = 4 * snapshot.model.dimension
            if sq8:
                snapshot.passage_vectors = SQ8Vectors(snapshot.passage_vectors)
                snapshot.sentence_vectors = SQ8Vectors(snapshot.sentence_vectors)
                per_vector = snapshot.model.dimension
            token_count = tokens[1] / (4 + snapshot.model.dimension) if tokens[1] else 0
            # 2 bytes a token for its sentence number, as stored today
            size = (token_count * (per_token + 2) + (passages + sentences) * per_vector) / max(1, passages)
            rows[label].update(score(qa, name, args.limit))
            rows[label][f"{name} KB/passage"] = round(size / 1000, 1)
            print(f"{name} {label}: {rows[label]}", file=sys.stderr, flush=True)
    late.unpack = original_unpack
    columns = [c for n in names for c in (n, *(["seeds R@5"] if n == "seeds" else []))]
    table(list(rows.values()), ["variant", *columns, *[f"{n} KB/passage" for n in names]])


if __name__ == "__main__":
    main()
