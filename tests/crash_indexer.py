"""A child process for the crash tests: index a folder with the fake embedder, and maybe die.

    python tests/crash_indexer.py INDEX FOLDER

It prints ``ready`` once everything is imported (the parent starts its clock
there), then indexes FOLDER into INDEX and prints ``done`` and the report as
JSON. The parent may SIGKILL it at any moment. Without touching ``qa/``, it can
also kill itself at a named step, by wrapping the functions the writer calls:

``CRASH_AT=STEP:N[:WHEN]``
    SIGKILL itself at the N-th call (1-based) of STEP. WHEN is ``before`` (the
    default: the call never happens), ``after`` (the call has returned), or
    ``torn`` (only for ``write_index`` and ``json_dump``: half of the file is
    written, as if the process died while writing).
``CRASH_COUNT=FILE``
    Write ``{"calls": {step: calls}, "first": {step: seconds}}`` of an uninterrupted
    run to FILE as JSON: how often each step ran, and when it first ran (seconds
    after ``ready``), so the parent can aim random kills at the commit.
``CRASH_HANG_PARSE=1``
    Rich-format parsers (PDF, DOCX, HTML, which run in a forked child) sleep for
    a minute instead of parsing; with ``CRASH_AT=parser_started:1:after`` the
    indexer dies while its parser child lives on. The child's pid is printed
    as ``parser PID`` first, so the parent can end it.

Steps are counted in the indexer process only, never in a forked parser child.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import sys
import time
from collections import Counter

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import faiss  # noqa: E402

import qa.ingest  # noqa: E402
import qa.read  # noqa: E402
import qa.storage.manifest  # noqa: E402
import qa.storage.snapshot  # noqa: E402
import qa.storage.writer  # noqa: E402
from embeddings import VectorIndex  # noqa: E402
from fakes import FakeEmbedder  # noqa: E402
from qa import QA  # noqa: E402

STEPS = (
    "extract",          # qa.ingest.extract_text: one file read and parsed
    "encode",           # the embedder's encode: one batch of passages
    "add_document",     # Writer.add_document
    "remove_document",  # Writer.remove_document
    "sqlite_backup",    # copying the live catalog into the new generation's
    "sqlite_commit",    # the new catalog's commit
    "sqlite_close",     # any catalog connection closed
    "fsync",            # os.fsync (catalog, vectors, staged manifest)
    "vector_save",      # VectorIndex.save (passages, then sentences)
    "write_index",      # faiss.write_index inside it
    "sha256",           # checksums (of the live files at open, of the new ones at commit)
    "json_dump",        # writing the staged manifest
    "os_replace",       # the manifest replaced: the commit point
    "fsync_dir",        # the folder flushed after the replace
    "unlink",           # Path.unlink: stray files, the old generation's files
    "parser_started",   # a forked parser child started
)

MAIN_PID = os.getpid()
REAL_WRITE_INDEX = faiss.write_index
calls: Counter = Counter()
first_call: dict[str, float] = {}
READY_AT = [0.0]
target: tuple[str, int, str] | None = None
if os.environ.get("CRASH_AT"):
    parts = os.environ["CRASH_AT"].split(":")
    target = (parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "before")
    assert target[0] in STEPS, f"unknown step {target[0]}"
    assert target[2] in ("before", "after", "torn"), f"unknown moment {target[2]}"


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(step: str, original, *, torn=None):
    """``original`` with a kill point before or after its N-th call (or a torn write)."""

    def wrapper(*args, **kwargs):
        if os.getpid() != MAIN_PID:  # a forked parser child: not the indexer
            return original(*args, **kwargs)
        calls[step] += 1
        first_call.setdefault(step, time.perf_counter() - READY_AT[0])
        hit = target is not None and target[0] == step and target[1] == calls[step]
        if hit and target[2] == "before":
            die()
        if hit and target[2] == "torn":
            assert torn is not None, f"{step} cannot be torn"
            torn(*args, **kwargs)
            die()
        result = original(*args, **kwargs)
        if hit and target[2] == "after":
            die()
        return result

    return wrapper


def torn_write_index(index, path):
    REAL_WRITE_INDEX(index, path)
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])


def torn_json_dump(obj, handle, **kwargs):
    text = json.dumps(obj, **kwargs)
    handle.write(text[: len(text) // 2])
    handle.flush()


class KillingConnection(sqlite3.Connection):
    def commit(self):
        return wrap("sqlite_commit", super().commit)()

    def close(self):
        return wrap("sqlite_close", super().close)()

    def backup(self, *args, **kwargs):
        return wrap("sqlite_backup", super().backup)(*args, **kwargs)


def install_hooks() -> None:
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        kwargs.setdefault("factory", KillingConnection)
        return real_connect(*args, **kwargs)

    sqlite3.connect = connect
    qa.ingest.extract_text = wrap("extract", qa.ingest.extract_text)
    FakeEmbedder.encode = wrap("encode", FakeEmbedder.encode)
    qa.storage.writer.Writer.add_document = wrap("add_document", qa.storage.writer.Writer.add_document)
    qa.storage.writer.Writer.remove_document = wrap("remove_document", qa.storage.writer.Writer.remove_document)
    os.fsync = wrap("fsync", os.fsync)
    VectorIndex.save = wrap("vector_save", VectorIndex.save)
    faiss.write_index = wrap("write_index", faiss.write_index, torn=torn_write_index)
    qa.storage.writer.sha256_file = wrap("sha256", qa.storage.writer.sha256_file)
    qa.storage.manifest.sha256_file = wrap("sha256", qa.storage.manifest.sha256_file)  # checked_sha256 hashes with it
    json.dump = wrap("json_dump", json.dump, torn=torn_json_dump)
    os.replace = wrap("os_replace", os.replace)
    qa.storage.writer.fsync_dir = wrap("fsync_dir", qa.storage.writer.fsync_dir)
    pathlib.Path.unlink = wrap("unlink", pathlib.Path.unlink)

    import multiprocessing.context

    real_start = multiprocessing.context.ForkProcess.start

    def start(self):
        real_start(self)
        print(f"parser {self.pid}", flush=True)

    multiprocessing.context.ForkProcess.start = wrap("parser_started", start)

    if os.environ.get("CRASH_HANG_PARSE"):

        def hang(path, fmt, data):
            time.sleep(60)
            raise RuntimeError("unreachable")

        qa.read._parse_rich = hang


def main(argv: list[str]) -> int:
    index, folder = argv
    install_hooks()
    READY_AT[0] = started = time.perf_counter()
    print("ready", flush=True)
    report = QA(index, embedder=FakeEmbedder()).index([folder], timeout=30)
    elapsed = time.perf_counter() - started
    if os.environ.get("CRASH_COUNT"):
        pathlib.Path(os.environ["CRASH_COUNT"]).write_text(json.dumps({"calls": dict(calls), "first": first_call}), encoding="utf-8")
    print("done", json.dumps({"seconds": elapsed, **report.to_json()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
