"""The quality gate for a tantivy lexical side: every benchmark set scored with FTS5 and with tantivy, one run.

    python bench/lexical_quality.py [--sets squad,scifact,nfcorpus,seeds] [--variants ...] [--limit N]

``bench/lexical.py`` measures speed at 15k to 1M passages; this measures what
a switch would change in the answers. For every set of ``bench/quality.py``,
its index (``~/.cache/qa/bench/<set>``, as quality.py leaves it; never written
here) is copied to a scratch folder, a :class:`qa.storage.fulltext.FullText`
is built in memory from the copy's passages, and the default retriever
(``hybrid``) is scored exactly as quality.py scores it (its sets, questions,
``k``, outside questions; ``qa.evaluate``), once per variant, with the
snapshot's ``lexical`` swapped for the variant's:

- ``fts5``: the index as it is, the baseline;
- ``tantivy``: every match, as ``Snapshot.lexical`` returns them;
- ``tantivy-top100``: the 100 best only (``qa.search.CANDIDATES``, the pool the
  lexical side contributes), which is what lets tantivy prune; a dense candidate
  outside them then gets a lexical score of 0 instead of its bm25;
- ``tantivy-top1000``: the 1,000 best, fewer dense candidates left at 0.

The best N and then the bm25 of the dense candidates outside them
(``FullText.scores``) gives the search exactly what every match gives it (it
reads the bm25 of its candidates only), so the ``tantivy`` row is also that
pair's quality; it would need ``qa.search`` to ask for the second call.

Only the lexical side changes; the questions' vectors are computed once per set
and reused. The sets' passages have no section headings, so the section weight
plays no part here. Prints one markdown table (squad R@1, scifact and nfcorpus
nDCG@10, seeds R@1 and R@5; per set, how many questions a variant answers
better and worse than FTS5 (by the set's figure: the first passage right, or
the question's nDCG@10), abstention on questions from outside each index,
and the lexical call's own p50 / p95 milliseconds on SciFact over its own and
the outside questions, one thread, in this run), then one JSON line with every
figure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import SETS, outside_questions  # noqa: E402

from qa import QA  # noqa: E402
from qa.evaluate import read_labeled, score_questions, summarize  # noqa: E402
from qa.search import CANDIDATES  # noqa: E402
from qa.storage.fulltext import FullText, catalog_passages  # noqa: E402
from qa.storage.manifest import MANIFEST  # noqa: E402

VARIANTS = {
    "fts5": None,
    "tantivy": {"limit": None},
    f"tantivy-top{CANDIDATES}": {"limit": CANDIDATES},
    f"tantivy-top{10 * CANDIDATES}": {"limit": 10 * CANDIDATES},
}
_QUOTED = re.compile(r'"([^"]*)"')
RETRIEVER = "hybrid"
BASELINE = "fts5"


def copy_index(source: Path, scratch: Path) -> Path:
    """The committed files of ``source`` copied into ``scratch``: the benchmark's own index stays untouched."""
    manifest = json.loads((source / MANIFEST).read_text())
    target = scratch / source.name
    target.mkdir()
    for name in manifest["files"].values():
        shutil.copyfile(source / name, target / name)
    shutil.copyfile(source / MANIFEST, target / MANIFEST)
    return target


def memoize_questions(qa: QA) -> None:
    """The same questions are asked once per variant; their vectors do not depend on it."""
    encode, seen = qa._encode_questions, {}

    def cached(searched, own, tokens):
        key = (tuple(searched), tuple(own), tokens)
        if key not in seen:
            seen[key] = encode(searched, own, tokens)
        return seen[key]

    qa._encode_questions = cached


class Swapped:
    """The snapshot's ``lexical`` replaced by a variant's, timing each call."""

    def __init__(self, snapshot, fulltext: FullText) -> None:
        self.snapshot, self.fulltext = snapshot, fulltext
        self.fts5 = snapshot.lexical
        self.times: list[float] = []

    def use(self, variant: str) -> None:
        options = VARIANTS[variant]
        self.times = []

        def lexical(match, doc_ids=None):
            started = time.perf_counter()
            if options is None:
                out = self.fts5(match, doc_ids)
            else:
                out = self.fulltext.lexical(_QUOTED.findall(match), doc_ids, limit=options["limit"])
            self.times.append(time.perf_counter() - started)
            return out

        self.snapshot.lexical = lexical

    def milliseconds(self) -> tuple[float, float] | None:
        if not self.times:
            return None
        times = sorted(self.times)
        return 1000 * statistics.median(times), 1000 * times[int(0.95 * (len(times) - 1))]


def score_set(name: str, source: Path, scratch: Path, variants: list[str], limit: int, outside: bool) -> dict:
    docs, questions_file, metric, k = SETS[name]
    folder = copy_index(source, scratch)
    qa = QA(folder)
    snapshot = qa.snapshot()
    started = time.perf_counter()
    fulltext = FullText(threads=1)
    passages = fulltext.add(catalog_passages(snapshot))
    fulltext.commit()
    built = time.perf_counter() - started
    memoize_questions(qa)
    swapped = Swapped(snapshot, fulltext)
    questions = read_labeled(questions_file)[: limit or None]
    others = outside_questions(name, limit) if outside else []
    out = {"passages": passages, "tantivy_build_s": round(built, 1), "metric": metric, "variants": {}}
    per_question: dict[str, list[float]] = {}  # the set's figure for each of its questions
    for variant in variants:
        swapped.use(variant)
        assert qa.snapshot() is snapshot, "the index changed under the benchmark"
        outcomes = score_questions(qa, questions, retriever=RETRIEVER, k=k)
        own = summarize(outcomes, retriever=RETRIEVER, k=k)
        timing = swapped.milliseconds()
        figures = {metric: own[metric], "recall@5": own["recall@5"],
                   "answered_when_top1_right": own["answered_when_top1_right"],
                   "lexical_ms_p50_p95": [round(t, 2) for t in timing] if timing else None}
        values = [o.documents[metric] if o.documents is not None else float(o.rank == 1) for o in outcomes]
        per_question.setdefault(variant, values)
        if BASELINE in per_question and variant != BASELINE:
            pairs = list(zip(values, per_question[BASELINE]))
            figures["better_worse"] = [sum(v > b for v, b in pairs), sum(v < b for v, b in pairs)]
        if others:
            asked = score_questions(qa, [q for q, _ in others], retriever=RETRIEVER, k=10)
            figures["abstained_outside"] = summarize(asked, retriever=RETRIEVER, k=10)["abstained_outside"]
        out["variants"][variant] = figures
        print(f"{name} {variant}: {metric} {own[metric]}", file=sys.stderr, flush=True)
    snapshot.close()
    return out


def table(results: dict, variants: list[str]) -> None:
    columns = [("squad", "recall@1", "squad R@1"), ("scifact", "ndcg@10", "scifact nDCG@10"),
               ("nfcorpus", "ndcg@10", "nfcorpus nDCG@10"), ("seeds", "recall@1", "seeds R@1"),
               ("seeds", "recall@5", "seeds R@5")]
    columns = [c for c in columns if c[0] in results]
    outside = all("abstained_outside" in v for r in results.values() for v in r["variants"].values())
    header = ["lexical side", *(c[2] for c in columns),
              *(["abstained outside (" + ", ".join(results) + ")"] if outside else []),
              "questions better / worse than FTS5", "answered when right", "lexical call p50 / p95 ms (scifact)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for variant in variants:
        row = [variant]
        row += [str(results[s]["variants"][variant][m]) for s, m, _ in columns]
        if outside:
            row.append(" / ".join(str(results[s]["variants"][variant]["abstained_outside"]) for s in results))
        row.append(", ".join(
            "{} / {}".format(*results[s]["variants"][variant]["better_worse"])
            for s in results if "better_worse" in results[s]["variants"][variant]))
        row.append(" / ".join(str(results[s]["variants"][variant]["answered_when_top1_right"]) for s in results))
        timing = results.get("scifact", {}).get("variants", {}).get(variant, {}).get("lexical_ms_p50_p95")
        row.append(" / ".join(f"{t:.1f}" for t in timing) if timing else "")
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indexes", type=Path, default=Path.home() / ".cache" / "qa" / "bench",
                        help="where bench/quality.py left its indexes (read, never written)")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions of each set")
    parser.add_argument("--no-outside", action="store_true", help="skip the abstention questions")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    names = [s for s in args.sets.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    for name in names:
        if name not in SETS:
            parser.error(f"unknown set {name!r}; choose from {', '.join(SETS)}")
        if not (args.indexes / name / MANIFEST).exists():
            parser.error(f"no index at {args.indexes / name}; run bench/quality.py --sets {name} first")
    scratch = Path(tempfile.mkdtemp(dir=args.work, prefix="lexical-quality-"))
    try:
        results = {name: score_set(name, args.indexes / name, scratch, variants, args.limit, not args.no_outside)
                   for name in names}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{RETRIEVER}, " + ", ".join(f"{n} {r['passages']:,} passages" for n, r in results.items())
          + (f"; first {args.limit} questions of each set" if args.limit else "") + "\n")
    table(results, variants)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
