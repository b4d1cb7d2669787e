"""What the overlap of long-paragraph windows costs, and whether windows without it keep the quality.

    python bench/windows.py [--data ../shared/bench/squad-dev] [--no-quality]
    python bench/windows.py --sets scifact,nfcorpus


A paragraph longer than the model's window (254 tokens) is cut into windows
that end at sentence boundaries (``qa.split.split_windows``); consecutive
windows repeat up to a quarter of a window (63 tokens), starting at a sentence
start where one lies that close. The variant measured here, ``adjacent``, cuts
at the same sentence boundaries but repeats nothing: the next window starts
with the token after the previous one ends, so every character between the
first token and the last is still in a window (only the whitespace between two
windows is in neither) and nothing is truncated.

For each variant: passages, tokens the model reads (each passage's tokens plus
[CLS] and [SEP]), then, unless ``--no-quality``, the squad-dev folder indexed
with it (in its own process, one after the other) and recall@1 of the hybrid
retriever on the odd- and even-numbered questions. Prints a table, then one
JSON line.

With ``--sets``, each variant indexes those sets of ``bench/quality.py`` afresh
(its own folders, one process a variant) and scores them as that script does
(the default retriever, all questions): the test on material whose long
paragraphs are abstracts, not Wikipedia paragraphs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left, bisect_right
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa import split as split_module  # noqa: E402
from qa.records import Span  # noqa: E402

VARIANTS = ("overlapping", "adjacent")


def adjacent_windows(text, span, token_offsets, *, max_tokens, overlap, sentences=()):
    """``split_windows`` with the same sentence-boundary cuts and no repeated tokens."""
    offsets = token_offsets(text[span.start : span.end])
    count = len(offsets)
    if count <= max_tokens:
        return [span]
    token_starts = [start for start, _ in offsets]
    boundaries = sorted({bisect_left(token_starts, s.start - span.start) for s in sentences} - {0, count})
    windows, first = [], 0
    while first < count:
        last = min(first + max_tokens, count)
        if last < count:
            cut = bisect_right(boundaries, last) - 1
            if cut >= 0 and boundaries[cut] > first + max_tokens // 2:
                last = boundaries[cut]
        start = span.start if first == 0 else span.start + offsets[first][0]
        end = span.end if last == count else span.start + offsets[last - 1][1]
        windows.append(Span(start, end))
        first = last
    return windows


def use(variant: str) -> None:
    if variant == "adjacent":
        split_module.split_windows = adjacent_windows


def count(data: Path, variant: str) -> dict:
    """Passages and model tokens of every document under ``data/docs`` split the ``variant`` way."""
    from embeddings import load_embedder

    use(variant)
    embedder = load_embedder()
    passages = windowed = tokens = paragraphs = 0
    for path in sorted((data / "docs").iterdir()):
        text = path.read_text(encoding="utf-8")
        spans = list(split_module.split_passages(text, embedder.token_offsets, max_tokens=embedder.max_tokens))
        passages += len(spans)
        paragraphs += len({s.paragraph for s in spans})
        windowed += len({s.paragraph for s in spans if s.windows > 1})
        tokens += sum(len(embedder.token_offsets(text[s.start : s.end])) + 2 for s in spans)
    return {"variant": variant, "paragraphs": paragraphs, "long_paragraphs": windowed, "passages": passages, "tokens": tokens}


def quality(data: Path, variant: str, index: Path) -> dict:
    """Index ``data/docs`` split the ``variant`` way; recall@1 on the odd and even questions."""
    from qa import QA
    from qa.evaluate import evaluate, read_labeled

    use(variant)
    qa = QA(index)
    _ = qa.embedder
    started = time.perf_counter()
    report = qa.index([data / "docs"])
    seconds = time.perf_counter() - started
    questions = read_labeled(data / "questions.jsonl")
    odd = evaluate(qa, questions[0::2], retriever="hybrid", k=10)  # 1st, 3rd, ... (odd-numbered)
    even = evaluate(qa, questions[1::2], retriever="hybrid", k=10)
    return {
        "index_s": round(seconds, 2),
        "passages_embedded": report.passages_embedded,
        "precision": getattr(qa.embedder, "precision", "?"),
        "recall@1_odd": odd["recall@1"],
        "recall@1_even": even["recall@1"],
        "recall@1": round((odd["counts"]["hit@1"] + even["counts"]["hit@1"]) / len(questions), 4),
    }


def sets_quality(names: str, variant: str, work: Path) -> dict:
    """``bench/quality.py`` on the sets ``names``, indexed into ``work`` split the ``variant`` way."""
    import io
    from contextlib import redirect_stdout

    from bench import quality as quality_bench

    use(variant)
    sys.argv = ["quality.py", "--work", str(work), "--sets", names, "--retrievers", "hybrid"]
    out = io.StringIO()
    with redirect_stdout(out):
        quality_bench.main()
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    rows = {}
    for name in names.split(","):
        figure = quality_bench.SETS[name][2]
        scored = result["sets"][name]["hybrid"]
        rows[name] = {
            "index_s": result["indexes"][name]["seconds"],
            "passages_embedded": result["indexes"][name]["passages_embedded"],
            figure: scored["all"][figure],
            f"{figure}_odd": scored["odd"][figure],
            f"{figure}_even": scored["even"][figure],
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--no-quality", action="store_true", help="only count passages and tokens")
    parser.add_argument("--sets", help="comma-separated sets of bench/quality.py to index and score instead")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("count", "quality", "sets"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "count":
        print(json.dumps(count(args.data, args.variant)))
        return
    if args.phase == "quality":
        print(json.dumps(quality(args.data, args.variant, args.index)))
        return
    if args.phase == "sets":
        print(json.dumps(sets_quality(args.sets, args.variant, args.work)))
        return

    def child(*extra: str) -> dict:
        command = [sys.executable, __file__, "--data", str(args.data), *extra]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    work = Path(tempfile.mkdtemp(prefix="qa-windows-"))
    if args.sets:
        from bench.quality import SETS

        table_rows = []
        for variant in VARIANTS:
            scored = child("--phase", "sets", "--sets", args.sets, "--variant", variant, "--work", str(work / variant))
            for name, row in scored.items():
                docs = SETS[name][0]
                counted = child("--phase", "count", "--variant", variant, "--data", str(docs.parent))
                table_rows.append({"variant": variant, "set": name, "tokens": counted["tokens"],
                                   "passages": counted["passages"], **row})
        keys = list(dict.fromkeys(k for row in table_rows for k in row if k not in ("variant", "set")))
        print("| variant | set | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for row in table_rows:
            print(f"| {row['variant']} | {row['set']} | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")
        print(json.dumps({"windows": table_rows}))
        return
    rows = []
    for variant in VARIANTS:
        row = child("--phase", "count", "--variant", variant)
        if not args.no_quality:
            row.update(child("--phase", "quality", "--variant", variant, "--index", str(work / variant)))
        rows.append(row)
    header = [key for key in rows[0] if key != "variant"]
    print("| variant | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    for row in rows:
        print(f"| {row['variant']} | " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    base, other = rows
    print(f"\noverlap costs {base['tokens'] - other['tokens']:,} of {base['tokens']:,} tokens "
          f"({100 * (base['tokens'] - other['tokens']) / base['tokens']:.1f}%), "
          f"{base['passages'] - other['passages']} passages")
    print(json.dumps({"windows": rows}))


if __name__ == "__main__":
    main()
