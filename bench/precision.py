"""What differs between an index written and read in int8 and in fp32, on the shared SQuAD dev set.

    python bench/precision.py [--data ../shared/bench/squad-dev] [--every 2]

Both models of the same export embed every paragraph (blank-line blocks) and
every question: cosine between a text's int8 and fp32 vectors, and how often a
question's nearest paragraph is the same. Then the folder is indexed once with
each precision and every ``--every``-th question asked of each index with each
precision (hybrid retriever): recall@1 of the four pairings, and how often
their top passage is the one fp32 on an fp32 index gives. Run it again as
``ONEDNN_MAX_CPU_ISA=AVX2 python bench/precision.py`` for int8 without VNNI.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--every", type=int, default=2, help="ask every N-th question (1: all)")
    args = parser.parse_args()

    from embeddings import load_embedder
    from embeddings.runtime import RuntimeEmbedder
    from qa import QA
    from qa.evaluate import read_labeled, score_questions

    chosen = load_embedder()
    models = {p: RuntimeEmbedder(chosen.folder, name=chosen.name, precision=p) for p in ("int8", "fp32")}
    paragraphs = [b.strip() for f in sorted((args.data / "docs").iterdir()) for b in f.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    labeled = read_labeled(args.data / "questions.jsonl")
    questions = [q.question for q in labeled]
    vectors = {p: m.encode(paragraphs + questions) for p, m in models.items()}
    cosine = (vectors["int8"] * vectors["fp32"]).sum(axis=1)
    n = len(paragraphs)
    nearest = {p: (v[n:] @ v[:n].T).argmax(axis=1) for p, v in vectors.items()}
    result = {
        "isa_limit": {k: v for k, v in os.environ.items() if k.endswith("MAX_CPU_ISA")},
        "chosen": chosen.precision,
        "texts": len(cosine),
        "cosine_min": round(float(cosine.min()), 4),
        "cosine_p01": round(float(np.quantile(cosine, 0.01)), 4),
        "cosine_mean": round(float(cosine.mean()), 4),
        "nearest_paragraph_same": round(float((nearest["int8"] == nearest["fp32"]).mean()), 4),
    }

    work = Path(tempfile.mkdtemp(prefix="qa-precision-"))
    asked = labeled[:: args.every]
    tops, recall = {}, {}
    for writer in models:
        QA(work / writer, embedder=models[writer]).index([args.data / "docs"])
        for reader in models:
            outcomes = score_questions(QA(work / writer, embedder=models[reader]), asked, retriever="hybrid", k=10)
            recall[f"{writer}_index_{reader}_questions"] = round(sum(o.rank == 1 for o in outcomes) / len(outcomes), 4)
            tops[writer, reader] = [o.rank for o in outcomes]
    reference = tops["fp32", "fp32"]
    result["questions_asked"] = len(asked)
    result["recall@1"] = recall
    result["gold_rank_same_as_fp32_fp32"] = {
        f"{w}_index_{r}_questions": round(float(np.mean([a == b for a, b in zip(ranks, reference)])), 4)
        for (w, r), ranks in tops.items()
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
