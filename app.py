"""The chat page: ``python app.py``.

Serves the index in ``$QA_INDEX`` (default ``~/.local/share/qa/index``). When that
index does not exist yet, the seed articles in ``seeds/`` are indexed first (and
``qa/seed_questions.txt`` becomes the page's example questions); an
index built by an earlier version is brought up to date from its stored texts.
The port follows ``GRADIO_SERVER_PORT`` (default 7860).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import shutil

from qa import QA
from qa.examples import EXAMPLES_FILE, SEED_EXAMPLES
from qa.ui import build_app, launch

SEEDS = Path(__file__).resolve().parent / "seeds"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    qa = QA()
    if not qa.exists():
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
    launch(build_app(qa), server_name=server_name)


if __name__ == "__main__":
    main()
