"""A child process for the driver crash test: index a folder on a Ray cluster, and die mid-job.

    CRASH_AT_STORE=N python tests/crash_ray_indexer.py INDEX FOLDER ADDRESS

SIGKILLs itself at the N-th document the driver stores (before it is stored):
results are arriving from the workers and earlier ones are in the writer,
nothing is committed. Prints ``stored K`` after each document it stored.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import qa.distributed  # noqa: E402
from qa import QA  # noqa: E402

calls = [0]
real_store = qa.distributed.store


def store(pending, vectors, writer):
    calls[0] += 1
    if calls[0] == int(os.environ["CRASH_AT_STORE"]):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_store(pending, vectors, writer)
    print(f"stored {calls[0]}", flush=True)


def main(index: str, folder: str, address: str) -> int:
    qa.distributed.store = store
    QA(index).index([folder], ray=address)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
