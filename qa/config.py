"""Where things live by default, and the environment variables that move them."""

from __future__ import annotations

import os
from pathlib import Path

ENV_INDEX = "QA_INDEX"
ENV_MODEL = "QA_MODEL"
ENV_RAY_ADDRESS = "QA_RAY_ADDRESS"  # qa index runs on this Ray cluster (qa.distributed)


def default_index_dir() -> Path:
    """``$QA_INDEX``, else ``$XDG_DATA_HOME/qa/index`` (``~/.local/share/qa/index``)."""
    if os.environ.get(ENV_INDEX):
        return Path(os.environ[ENV_INDEX]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "qa" / "index"


def default_model() -> str | None:
    """``$QA_MODEL`` if set; otherwise None, meaning the index's own model or the default."""
    return os.environ.get(ENV_MODEL) or None


SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"


ENV_TESSERACT = "QA_TESSERACT"


def tesseract_command() -> str:
    """``$QA_TESSERACT`` (a path or a command name), else ``tesseract`` from the PATH."""
    return os.environ.get(ENV_TESSERACT) or "tesseract"
