"""The chat page: ``python app.py``.

Serves the index in ``$QA_INDEX`` (default ``~/.local/share/qa/index``). When that
index does not exist yet, the seed articles in ``seeds/`` are indexed first (and
``qa/seed_questions.txt`` becomes the page's example questions); an
index built by an earlier version is brought up to date from its stored texts.
The port follows ``GRADIO_SERVER_PORT`` (default 7860). ``QA_AUTH_FILE`` puts
the page behind a login (a ``qa passwd`` file); ``QA_READ_ONLY=1`` turns
uploads off (and indexes nothing at start: the index must exist).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import shutil
import sys

from qa import QA
from qa.auth import ENV_AUTH_FILE, ENV_READ_ONLY, AuthError, Logins, read_users
from qa.examples import EXAMPLES_FILE, SEED_EXAMPLES
from qa.ui import build_app, launch

SEEDS = Path(__file__).resolve().parent / "seeds"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logins = None
    read_only = os.environ.get(ENV_READ_ONLY, "").lower() in ("1", "true", "yes", "on")
    if os.environ.get(ENV_AUTH_FILE):
        try:
            logins = Logins(read_users(os.environ[ENV_AUTH_FILE]))
        except AuthError as exc:  # never serve the page open because its logins are broken
            sys.exit(f"Error: {exc}")
    qa = QA()
    if read_only:
        try:
            qa.snapshot()
        except Exception as exc:
            sys.exit(f"Error: {str(exc).splitlines()[0]} (a read-only page does not create or upgrade an index)")
    elif not qa.exists():
        logging.info("no index at %s yet: indexing %s", qa.index_dir, SEEDS)
        report = qa.index([SEEDS], progress=True)
        for skipped in report.skipped:
            logging.warning("%s", skipped)
        if qa.exists():  # the page offers questions about the seeds
            shutil.copyfile(SEED_EXAMPLES, qa.index_dir / EXAMPLES_FILE)
    elif qa.outdated():
        logging.info("the index at %s was built by an earlier version: bringing it up to date", qa.index_dir)
        qa.upgrade()
    server_name = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    launch(build_app(qa, read_only=read_only), logins=logins, read_only=read_only, server_name=server_name)


if __name__ == "__main__":
    main()
