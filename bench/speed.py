"""Speed and scale, beside the textbook pipeline, in one run.

    python bench/speed.py [--data ../shared/bench/squad-dev] [--first N] [--sizes 100000,1000000] [--no-torch]

Every measurement runs in its own child process, so each one's peak memory
(``ru_maxrss``) and start-up cost are its own:

- ``textbook``: the pipeline of every tutorial. Split the files on blank lines,
  ``SentenceTransformer.encode`` with its defaults, ``faiss.IndexFlatIP``; then
  single questions (encode + search).
- ``ours``: ``QA.index`` of the same folder with the default back end (passages
  and, pooled from the same forward pass, every sentence), then ``qa ask``-style
  single questions (``QA.ask``, hybrid; and ``fused``, the same without the
  token-by-token signals) and ``qa batch`` throughput
  (``QA.ask_many``), recall@1 on the labeled questions, and the index's size
  on disk.
- ``ours`` runs in the precision measured for this CPU (``embeddings.precision``);
  then the same with the other precision forced (``QA_PRECISION``): what the
  choice bought, and the reference for int8's recall@1.
- ``roof`` (``bench/roof.py``): this CPU's measured rate for matrix products
  of the model's shape, in fp32 and int8, as tokens/s; each pipeline's tokens
  embedded per second (the model's own seconds: tokenizing, forward passes,
  pooling) is printed as a share of its precision's roof. Run as
  ``ONEDNN_MAX_CPU_ISA=AVX2 python bench/speed.py`` to see a CPU without VNNI.
- ``ours-torch`` (skip with ``--no-torch``): the same with ``QA_BACKEND=torch``,
  PyTorch fp32, each sentence encoded on its own: the pipeline before the
  OpenVINO runtime.
- ``cold``: wall time of the ``qa ask`` command, process start to answer, on
  the index built by ``ours`` (median of 3), and whether it imported torch.
- synthetic vector indexes (``bench/scale.py``): build time, memory, latency
  and recall@10 against exact search at each of ``--sizes``.

Prints markdown tables and then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERY_SAMPLE = 300  # single questions timed per pipeline (after 10 to warm up)


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1)}


def _questions(data: Path) -> list[dict]:
    with open(data / "questions.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _sample(questions: list[dict]) -> list[str]:
    step = max(1, len(questions) // QUERY_SAMPLE)
    return [q["question"] for q in questions[::step]][:QUERY_SAMPLE]


def _time_single(ask, questions: list[dict]) -> list[float]:
    """Seconds of ``ask`` for each sampled question, after 10 to warm up."""
    timings = []
    for i, question in enumerate(_sample(questions)[: QUERY_SAMPLE + 10]):
        started = time.perf_counter()
        ask(question)
        if i >= 10:
            timings.append(time.perf_counter() - started)
    return timings


# -- phases, each in a child process ------------------------------------------------------


def phase_textbook(data: Path, _index: Path) -> dict:
    import faiss
    from sentence_transformers import SentenceTransformer

    from embeddings import resolve_model

    started = time.perf_counter()
    model = SentenceTransformer(resolve_model(None), device="cpu", local_files_only=True)
    load = time.perf_counter() - started
    started = time.perf_counter()
    paragraphs = []
    for path in sorted((data / "docs").iterdir()):
        paragraphs += [block.strip() for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    embed_started = time.perf_counter()
    vectors = model.encode(paragraphs)
    embed_s = time.perf_counter() - embed_started
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    seconds = time.perf_counter() - started
    # What the model read: each paragraph's tokens with [CLS] and [SEP], cut at its window as encode cuts them.
    tokens = sum(len(ids) for ids in model.tokenizer(paragraphs, truncation=True, max_length=model.max_seq_length)["input_ids"])
    timings = _time_single(lambda question: index.search(model.encode([question]), 5), _questions(data))
    return {
        "model_load_s": round(load, 2),
        "index_s": round(seconds, 2),
        "passages": len(paragraphs),
        "passages_per_s": round(len(paragraphs) / seconds, 1),
        "sentences": 0,
        "precision": "fp32",
        "tokens": tokens,
        "embed_s": round(embed_s, 2),
        "tokens_per_s": round(tokens / embed_s),
        **_roof("fp32"),
        **_percentiles(timings),
        "peak_mb": _peak_mb(),
    }


def phase_ours(data: Path, index: Path) -> dict:
    from qa import QA
    from qa.evaluate import evaluate, read_labeled

    qa = QA(index)
    started = time.perf_counter()
    embedder = qa.embedder
    load = time.perf_counter() - started
    spent = _time_model(embedder)
    started = time.perf_counter()
    report = qa.index([data / "docs"])
    seconds = time.perf_counter() - started
    model = {"tokens": embedder.tokens_embedded, "embed_s": round(spent[0], 2),
             "tokens_per_s": round(embedder.tokens_embedded / spent[0]),
             "padding": round(embedder.positions_embedded / embedder.tokens_embedded - 1, 3),
             **_roof(embedder.precision)} if spent else {}
    questions = _questions(data)
    timings = _time_single(lambda question: qa.ask(question, k=5), questions)
    fused = _time_single(lambda question: qa.ask(question, k=5, retriever="fused"), questions)
    started = time.perf_counter()
    answered = sum(1 for _ in qa.ask_many(((None, q["question"]) for q in questions), k=5))
    batch = time.perf_counter() - started
    quality = evaluate(qa, read_labeled(data / "questions.jsonl"), retriever="hybrid", k=10)
    return {
        "backend": getattr(embedder, "backend", "?"),
        "precision": getattr(embedder, "precision", "?"),
        "model_load_s": round(load, 2),
        "index_s": round(seconds, 2),
        "passages": report.passages_embedded,
        "passages_per_s": round(report.passages_embedded / seconds, 1),
        "sentences": report.sentences_embedded,
        **model,
        **_percentiles(timings),
        "fused_p50_ms": _percentiles(fused)["p50_ms"],
        "batch_questions_per_s": round(answered / batch, 1),
        "recall@1": quality["recall@1"],
        "recall@5": quality["recall@5"],
        "peak_mb": _peak_mb(),
        "index_bytes": sum(f.stat().st_size for f in index.iterdir() if f.is_file()),
    }


def _time_model(embedder) -> list[float] | None:
    """Wrap the runtime's ``encode_passages`` to add up its seconds (tokenizing, the
    forward passes, pooling); None for a back end that counts no tokens."""
    own = getattr(embedder, "encode_passages", None)
    if own is None or not hasattr(embedder, "tokens_embedded"):
        return None
    spent = [0.0]

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return own(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    embedder.encode_passages = timed
    return spent


def _roof(precision: str) -> dict:
    """This CPU's matrix-product roof in ``precision`` (``bench/roof.py``), measured right
    after the phase's indexing: the machine is shared, and its speed moves by half
    from one minute to the next, so each pipeline is set against its own minute."""
    sys.path.insert(0, str(ROOT / "bench"))
    from roof import roof

    measured = roof(seconds=1.0, precisions=(precision,))
    return {"roof_tokens_per_s": measured.get(f"{precision}_roof_tokens_per_s"), "roof_gflops": measured.get(f"{precision}_gflops")}


PHASES = {"textbook": phase_textbook, "ours": phase_ours}


def run_phase(name: str, data: Path, index: Path, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--data", str(data), "--index", str(index)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_start(index: Path, question: str, runs: int = 3) -> dict:
    """Wall time of the ``qa ask`` command, and whether that process imported torch."""
    qa_command = Path(sys.executable).with_name("qa")
    probe = (
        "import runpy, sys, atexit\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['qa', 'ask', {question!r}, '--index', {str(index)!r}]\n"
        f"runpy.run_path({str(qa_command)!r}, run_name='__main__')\n"
    )
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([str(qa_command), "ask", question, "--index", str(index)], capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"qa ask failed: {done.stderr.strip()}")
    probed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return {"qa_ask_s": round(statistics.median(walls), 2), "torch_imported": "torch imported: True" in probed.stderr}


def _cell(key: str, value) -> str:
    if key.endswith("_bytes") and isinstance(value, (int, float)):
        return f"{value / 2**20:,.0f} MB"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def table(rows: list[dict], header: list[str]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(_cell(h, row.get(h, "")) for h in header) + " |")


def first_documents(data: Path, count: int, folder: Path) -> Path:
    """A data folder of the first ``count`` documents of ``data`` (linked) and the questions
    all of whose labeled documents are among them (``doc``, or every document of ``qrels``)."""
    (folder / "docs").mkdir(parents=True)
    chosen = sorted((data / "docs").iterdir())[:count]
    for path in chosen:
        (folder / "docs" / path.name).symlink_to(path.resolve())
    names = {path.name for path in chosen}
    kept = [q for q in _questions(data) if set(q.get("qrels") or [q.get("doc")]) <= names]
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in kept), encoding="utf-8")
    print(f"{data}: the first {len(chosen)} documents and the {len(kept)} questions they answer")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--sizes", default="100000,1000000", help="synthetic index sizes, comma-separated ('' for none)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch back end row")
    parser.add_argument("--first", type=int, default=0,
                        help="only the first N documents of --data (by name), with the questions they answer")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.data, args.index)))
        return

    work = Path(tempfile.mkdtemp(prefix="qa-speed-"))
    if args.first:
        args.data = first_documents(args.data, args.first, work / "data")
    limit = {k: v for k, v in os.environ.items() if k.endswith("MAX_CPU_ISA")}
    print(f"ISA limit: {limit or 'none'}\n")
    rows = [{"pipeline": "textbook (blank-line split, ST encode, IndexFlatIP)", **run_phase("textbook", args.data, work / "x")}]
    ours = run_phase("ours", args.data, work / "ours")
    rows.append({"pipeline": f"ours, the default (auto: {ours['backend']} {ours['precision']})", **ours})
    # The precision the measurement did not choose, forced: what the choice bought.
    other = "fp32" if ours["precision"] == "int8" else "int8"
    forced = run_phase("ours", args.data, work / other, env={"QA_PRECISION": other})
    rows.append({"pipeline": f"ours, QA_PRECISION={other}", **forced})
    if not args.no_torch:
        torch_row = run_phase("ours", args.data, work / "torch", env={"QA_BACKEND": "torch"})
        rows.append({"pipeline": "ours on PyTorch fp32 (sentences encoded alone)", **torch_row})
    textbook = rows[0]["index_s"]
    for row in rows:
        row["speed_vs_textbook"] = f"{textbook / row['index_s']:.2f}x"
        if row.get("roof_tokens_per_s") and row.get("tokens_per_s"):
            row["of_roof"] = f"{100 * row['tokens_per_s'] / row['roof_tokens_per_s']:.0f}%"
    print("roof: matrix products of the model's shape (bench/roof.py) in the row's precision, as tokens/s of the "
          "model's 21.2 MFLOP a token, measured right after the row's indexing\n")
    table(rows, ["pipeline", "index_s", "passages", "sentences", "passages_per_s", "speed_vs_textbook",
                 "tokens", "embed_s", "tokens_per_s", "roof_tokens_per_s", "of_roof", "padding",
                 "p50_ms", "p95_ms", "fused_p50_ms", "batch_questions_per_s", "recall@1", "peak_mb", "index_bytes"])
    int8_row, fp32_row = (ours, forced) if ours["precision"] == "int8" else (forced, ours)
    drift = 100 * (int8_row["recall@1"] - fp32_row["recall@1"])
    print(f"\nrecall@1 of int8 minus fp32, same pipeline: {drift:+.2f} points")

    cold = cold_start(work / "ours", _questions(args.data)[0]["question"])
    print(f"\nqa ask cold start: {cold['qa_ask_s']} s (torch imported: {cold['torch_imported']})")

    synthetic = []
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes:
        sys.path.insert(0, str(ROOT / "bench"))
        from scale import synthetic_table

        synthetic = synthetic_table(sizes=tuple(sizes))
        print()
        table(synthetic, list(synthetic[0]))
    print(json.dumps({"isa_limit": limit, "pipelines": rows, "recall@1_int8_minus_fp32": round(drift, 2),
                      "cold_start": cold, "synthetic": synthetic}))


if __name__ == "__main__":
    main()
