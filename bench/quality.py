"""Retrieval quality on every labeled set, every retriever, in one run; and whether "answered" holds.

    python bench/quality.py [--work DIR] [--sets squad,scifact,nfcorpus,seeds] [--limit N]

The sets (``../shared/bench``, see its README, and this project's own):

- ``squad``: SQuAD 2.0 dev, 16 Wikipedia articles, 2,910 questions that copy the
  paragraph's words; recall@1 of the gold paragraph.
- ``scifact`` and ``nfcorpus``: BEIR, scientific claims and plain-language
  health questions over abstracts; nDCG@10 at document level (``qa.evaluate``).
- ``seeds``: the two seed articles of ``seeds/`` and the questions of
  ``tests/seed_questions/`` written the way a reader asks (paraphrased, with
  their gold paragraph); recall@1 and recall@5.

Each set is indexed into ``--work``/<set> (default ``~/.cache/qa/bench``); an
index that exists is reused, and only files that changed are embedded again,
so a change to the search alone costs only the questions (indexing SciFact
takes minutes). ``--fresh`` rebuilds them.

The questions of every set are split by position into an odd half, on which
weights and thresholds are chosen, and an even half, which only checks them;
the tables give both halves and the whole.

Abstention: each index is also asked questions from outside it, the seeds'
near-topic questions that they cannot answer (for the seeds) and a sample of
every other set's questions; ``abstained outside`` is the share of those that
get ``answered == false``, ``answered when right`` the share answered of the
set's own questions whose first result is right. The default is measured
twice: with its confidence, and with the previous model
(``PREVIOUS_CONFIDENCE``), the baseline of the same run.

Prints markdown tables and then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import QA  # noqa: E402
from qa import confidence as confidence_module  # noqa: E402
from qa.evaluate import read_labeled, score_questions, summarize  # noqa: E402
from qa.search import RETRIEVERS  # noqa: E402

SHARED = ROOT.parent / "shared" / "bench"
SEED_QUESTIONS = ROOT / "tests" / "seed_questions"

# name: (folder indexed, labeled questions, the figure the table shows, k)
SETS = {
    "squad": (SHARED / "squad-dev" / "docs", SHARED / "squad-dev" / "questions.jsonl", "recall@1", 10),
    "scifact": (SHARED / "scifact" / "docs", SHARED / "scifact" / "questions.jsonl", "ndcg@10", 100),
    "nfcorpus": (SHARED / "nfcorpus" / "docs", SHARED / "nfcorpus" / "questions.jsonl", "ndcg@10", 100),
    "seeds": (ROOT / "seeds", SEED_QUESTIONS / "paraphrased.jsonl", "recall@1", 10),
}
NEAR_TOPIC = SEED_QUESTIONS / "unanswerable.jsonl"
# Questions of each other set asked against an index, every n-th of them, up to this many.
OUTSIDE_SAMPLE = 150
HALVES = ("odd", "even", "all")
# Abstention is measured for these (the default, and the fused ranking it adds to).
ABSTENTION_RETRIEVERS = ("hybrid", "fused")
# The baseline of the default's confidence, measured in the same run: the model before the
# candidates' medians joined it (the first three of ``qa.confidence.FEATURES``), and its threshold.
PREVIOUS_CONFIDENCE = ((-7.506, 4.02, 3.071, 7.52, 0.0, 0.0, 0.0, 0.0), 0.15)
PREVIOUS = "hybrid, previous confidence"


@contextmanager
def confidence_model(coefficients: tuple[float, ...], answer_threshold: float):
    """Score with another confidence model (``qa.confidence``'s coefficients and threshold) inside."""
    saved = confidence_module.COEFFICIENTS, confidence_module.ANSWER_CONFIDENCE
    confidence_module.COEFFICIENTS, confidence_module.ANSWER_CONFIDENCE = coefficients, answer_threshold
    try:
        yield
    finally:
        confidence_module.COEFFICIENTS, confidence_module.ANSWER_CONFIDENCE = saved


def table(rows: list[dict], header: list[str]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join("" if row.get(h) is None else str(row[h]) for h in header) + " |")


def half(items: list, which: str) -> list:
    """The odd-numbered (1st, 3rd, ...) or even-numbered items, or all."""
    return items if which == "all" else items[0::2] if which == "odd" else items[1::2]


def sample(items: list, n: int) -> list:
    step = max(1, len(items) // n)
    return items[::step][:n]


def open_index(work: Path, name: str, docs: Path) -> tuple[QA, dict]:
    qa = QA(work / name)
    started = time.perf_counter()
    report = qa.index([docs])
    info = {
        "passages_embedded": report.passages_embedded,
        "unchanged": len(report.unchanged),
        "documents": len(qa.documents()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return qa, info


def outside_questions(name: str, limit: int) -> list:
    """Questions from outside ``name``'s index, marked unanswerable, with where they come from."""
    out = []
    if name == "seeds":
        out += [(q, "near-topic") for q in read_labeled(NEAR_TOPIC)]
    for other, (_, questions, _, _) in SETS.items():
        if other == name:
            continue
        picked = sample(read_labeled(questions), min(limit or OUTSIDE_SAMPLE, OUTSIDE_SAMPLE))
        out += [(replace(q, id=f"{other}:{q.id}", doc=None, paragraph=None, page=None, text=None, qrels=(),
                         answers=(), answerable=False), other) for q in picked]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qa" / "bench")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated, of " + ", ".join(SETS))
    parser.add_argument("--retrievers", default=",".join(RETRIEVERS))
    parser.add_argument("--limit", type=int, default=0, help="ask only the first N questions of each set")
    parser.add_argument("--fresh", action="store_true", help="rebuild the indexes")
    args = parser.parse_args()
    names = [s for s in args.sets.split(",") if s]
    retrievers = [r for r in args.retrievers.split(",") if r]
    if args.fresh:
        import shutil

        for name in names:
            shutil.rmtree(args.work / name, ignore_errors=True)

    figures: dict = {"indexes": {}, "sets": {}, "abstention": {}, "reliability": {}}
    # (confidence, first passage right) of every question asked of the default, own and outside
    judged: dict[str, list[tuple[float, bool]]] = {}
    rows = {h: {r: {"retriever": r} for r in retrievers} for h in HALVES}
    calibration = []
    for name in names:
        docs, questions_file, metric, k = SETS[name]
        qa, info = open_index(args.work, name, docs)
        figures["indexes"][name] = info
        print(f"{name}: {info['documents']} documents, {info['passages_embedded']} passages embedded "
              f"({info['unchanged']} files unchanged) in {info['seconds']} s", file=sys.stderr)
        questions = read_labeled(questions_file)
        if args.limit:
            questions = questions[: args.limit]
        for retriever in retrievers:
            started = time.perf_counter()
            outcomes = score_questions(qa, questions, retriever=retriever, k=k)
            seconds = time.perf_counter() - started
            if retriever == "hybrid":
                judged.setdefault(name, []).extend((o.confidence, o.rank == 1) for o in outcomes)
            for h in HALVES:
                s = summarize(half(outcomes, h), retriever=retriever, k=k, seconds=seconds if h == "all" else None)
                figures["sets"].setdefault(name, {}).setdefault(retriever, {})[h] = s
                rows[h][retriever][name] = s[metric]
                if name == "seeds":
                    rows[h][retriever]["seeds R@5"] = s["recall@5"]
            print(f"{name} {retriever}: {s[metric]} {metric} ({seconds:.0f} s)", file=sys.stderr)
        outside = outside_questions(name, args.limit)
        measured = [r for r in retrievers if r in ABSTENTION_RETRIEVERS]
        for retriever in measured + ([PREVIOUS] if "hybrid" in measured else []):
            model = confidence_model(*PREVIOUS_CONFIDENCE) if retriever == PREVIOUS else nullcontext()
            asked = "hybrid" if retriever == PREVIOUS else retriever
            with model:
                if retriever == PREVIOUS:  # the own questions again, judged by the previous model
                    mine = score_questions(qa, questions, retriever=asked, k=k)
                    figures["sets"][name][retriever] = {h: summarize(half(mine, h), retriever=asked, k=k) for h in HALVES}
                outcomes = score_questions(qa, [q for q, _ in outside], retriever=asked, k=10)
            own = figures["sets"][name][retriever]["all"]
            if retriever == "hybrid":
                judged.setdefault(name, []).extend((o.confidence, False) for o in outcomes)
            by_source: dict[str, list] = {}
            for (_, source), o in zip(outside, outcomes):
                by_source.setdefault(source, []).append(not o.answered)
            shares = {s: round(sum(v) / len(v), 4) for s, v in by_source.items()}
            halves = {h: summarize(half(outcomes, h), retriever=asked, k=10)["abstained_outside"] for h in HALVES}
            figures["abstention"].setdefault(name, {})[retriever] = {"by_source": shares, **halves}
            calibration.append({
                "index": name, "retriever": retriever,
                "answered when right (odd / even)": " / ".join(
                    str(figures["sets"][name][retriever][h]["answered_when_top1_right"]) for h in ("odd", "even")),
                "abstained outside (odd / even)": f"{halves['odd']} / {halves['even']}",
                "outside, by source": ", ".join(f"{s} {v}" for s, v in shares.items()),
                "answered, own questions": own["answered"],
            })

    columns = [n for n in names] + (["seeds R@5"] if "seeds" in names else [])
    for h in HALVES:
        for row in rows[h].values():
            main_figures = [row[n] for n in names if row.get(n) is not None]
            row["mean"] = round(sum(main_figures) / len(main_figures), 4) if main_figures else None
        label = {"odd": "odd-numbered questions (tuning half)", "even": "even-numbered questions (check half)",
                 "all": "all questions"}[h]
        print(f"\n{label}: " + ", ".join(f"{n} {SETS[n][2]}" for n in names) + "; mean of those")
        table(list(rows[h].values()), ["retriever", *columns, "mean"])
    print("\nanswered: of each set's own questions whose first result is right, the share answered; "
          "of questions from outside the index, the share not answered")
    table(calibration, ["index", "retriever", "answered when right (odd / even)", "abstained outside (odd / even)",
                        "outside, by source", "answered, own questions"])
    print("\nreliability of the default's confidence: questions (each set's own and those from outside "
          "its index) by the first passage's confidence, and the share whose first passage was right")
    bins = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)]
    rows_r = []
    for lo, hi in bins:
        row = {"confidence": f"{lo:.1f}-{min(hi, 1.0):.1f}"}
        for name, pairs in judged.items():
            inside = [right for c, right in pairs if lo <= c < hi]
            row[name] = f"{sum(inside) / len(inside):.2f} of {len(inside)}" if inside else ""
        rows_r.append(row)
    figures["reliability"] = rows_r
    table(rows_r, ["confidence", *judged])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
