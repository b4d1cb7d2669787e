"""Concurrent load on the chat page's ``/ask`` API, on localhost, with the real model.

    python bench/load.py [--calls 50] [--concurrency 50] [--limits 1,2,4] [--max-size N]

Indexes ``seeds/`` into a temporary folder (or uses ``--index DIR``), starts the
page on a free port of 127.0.0.1, fires a fixed number of ``/ask`` calls from
that many threads at once through Gradio's HTTP API (POST
``/gradio_api/call/ask``, then read the event stream), and prints one row per
queue setting: errors, p50/p95/max latency, wall time and throughput.

``--limits`` compares values of ``app.queue(default_concurrency_limit=...)``
(``default`` is the page's own: ``qa.ui.QUEUE_CONCURRENCY`` and ``QUEUE_SIZE``),
each on a fresh server over the same index.
Every answer is checked: it must be a JSON answer whose passages are exact
slices of the seed files; anything else counts as an error. Nothing leaves the
loopback interface, and the run ends after the last call.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SEEDS = ROOT / "seeds"
QUESTIONS = [
    "Who is the foreign minister of the exile government?",
    "Which court should look into Chinese officials?",
    "What does the Chinese name for the region mean?",
    "Who heads the East Turkistan government in exile?",
    "Which country's partnership with Beijing did the exiles condemn in April?",
    "How many Uyghur children have been taken away from their parents?",
    "What penalties do the exiles want other countries to impose?",
    "Since what year has Beijing used the fight against terror as a cover?",
]


@dataclass
class LoadResult:
    calls: int
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls
    errors: list[str] = field(default_factory=list)  # one line each
    wall: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask_http(client, base_url: str, question: str, k: int = 5, timeout: float = 120.0) -> dict:
    """One ``/ask`` call through Gradio's HTTP API; the answer's JSON object, or an exception."""
    response = client.post(f"{base_url}/gradio_api/call/ask", json={"data": [question, k]}, timeout=timeout)
    response.raise_for_status()
    event_id = response.json()["event_id"]
    event = None
    with client.stream("GET", f"{base_url}/gradio_api/call/ask/{event_id}", timeout=timeout) as stream:
        stream.raise_for_status()
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = line.split(":", 1)[1].strip()
                if event == "error":
                    raise RuntimeError(f"the server reported an error: {data[:200]}")
                payload = json.loads(data)
                if not (isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict)):
                    raise RuntimeError(f"unexpected payload {data[:200]}")
                return payload[0]
    raise RuntimeError(f"the event stream ended without a result (last event {event!r})")


def check_answer(answer: dict, question: str, texts: dict[str, str]) -> None:
    """Raise unless ``answer`` answers ``question`` with exact passages of ``texts`` (doc -> text)."""
    if answer.get("question") != question.strip():
        raise RuntimeError(f"answer to another question: {answer.get('question')!r}")
    results = answer.get("results")
    if not results:
        raise RuntimeError("no results")
    for r in results:
        text = texts.get(r["doc"])
        if text is None or text[r["start"] : r["end"]] != r["text"]:
            raise RuntimeError(f"result {r['rank']} is not an exact passage of {r['doc']}")


def run_load(
    base_url: str,
    *,
    calls: int = 50,
    concurrency: int = 50,
    texts: dict[str, str],
    questions: list[str] = QUESTIONS,
    k: int = 5,
    timeout: float = 120.0,
) -> LoadResult:
    """Fire ``calls`` /ask calls from ``concurrency`` threads at once, all released together."""
    import httpx

    result = LoadResult(calls, concurrency)
    start_gate = threading.Barrier(min(calls, concurrency))
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)

    with httpx.Client(limits=limits) as client:

        def one(i: int) -> None:
            question = questions[i % len(questions)]
            if i < concurrency:
                try:
                    start_gate.wait(timeout=timeout)
                except threading.BrokenBarrierError:
                    pass
            began = time.perf_counter()
            try:
                check_answer(ask_http(client, base_url, question, k, timeout), question, texts)
            except Exception as exc:  # every failure is counted and named, never raised
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                return
            elapsed = time.perf_counter() - began
            with lock:
                result.latencies.append(elapsed)

        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(calls)))
        result.wall = time.perf_counter() - began
    return result


def _page_queue() -> tuple[int, int]:
    from qa.ui import QUEUE_CONCURRENCY, QUEUE_SIZE

    return QUEUE_CONCURRENCY, QUEUE_SIZE


def seed_texts() -> dict[str, str]:
    return {f"seeds/{p.name}": p.read_bytes().decode("utf-8") for p in sorted(SEEDS.glob("*.txt"))}


def serve(qa, *, limit: int | None | str = "default", max_size: int | None = None):
    """Start the page over ``qa`` on a free loopback port; ``(app, base_url)``."""
    from qa.ui import build_app, launch

    app = build_app(qa)
    if limit != "default" or max_size is not None:
        kwargs = {"max_size": max_size}
        if limit != "default":
            kwargs["default_concurrency_limit"] = limit
        app.queue(**kwargs)
    port = free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return app, f"http://127.0.0.1:{port}"


def table(rows: list[dict]) -> None:
    header = ["queue limit", "max_size", "calls", "concurrency", "errors", "p50 ms", "p95 ms", "max ms", "wall s", "calls/s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--limits", default="default", help="comma-separated default_concurrency_limit values; 'none' = unlimited")
    parser.add_argument("--max-size", type=int, default=None, help="queue max_size (default: unlimited)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--index", type=Path, default=None, help="an index of seeds/ to use (built if missing)")
    args = parser.parse_args(argv)

    from embeddings import load_embedder
    from qa import QA

    started = time.perf_counter()
    embedder = load_embedder()
    with tempfile.TemporaryDirectory(prefix="qa-load-") as tmp:
        index = args.index or Path(tmp) / "index"
        qa = QA(index, embedder=embedder)
        qa.index([SEEDS])
        print(f"model and index ready in {time.perf_counter() - started:.1f} s ({index})", file=sys.stderr)
        texts = seed_texts()
        rows = []
        failures = []
        for raw in args.limits.split(","):
            raw = raw.strip()
            limit = "default" if raw == "default" else None if raw.lower() == "none" else int(raw)
            app, base = serve(qa, limit=limit, max_size=args.max_size)
            try:
                run_load(base, calls=2, concurrency=1, texts=texts)  # warm-up: first-call costs off the clock
                result = run_load(base, calls=args.calls, concurrency=args.concurrency, texts=texts, k=args.k)
            finally:
                app.close()
            failures.extend(result.errors)
            rows.append(
                {
                    "queue limit": f"page ({_page_queue()[0]})" if limit == "default" else ("none" if limit is None else limit),
                    "max_size": args.max_size if args.max_size is not None else (_page_queue()[1] if limit == "default" else "none"),
                    "calls": result.calls,
                    "concurrency": result.concurrency,
                    "errors": len(result.errors),
                    "p50 ms": f"{result.percentile(0.50) * 1000:.0f}",
                    "p95 ms": f"{result.percentile(0.95) * 1000:.0f}",
                    "max ms": f"{max(result.latencies, default=float('nan')) * 1000:.0f}",
                    "wall s": f"{result.wall:.2f}",
                    "calls/s": f"{len(result.latencies) / result.wall:.1f}" if result.wall else "-",
                }
            )
        table(rows)
        for line in sorted(set(failures)):
            print(f"error ({failures.count(line)}x): {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
