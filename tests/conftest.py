"""Shared fixtures. The fake-embedder ones are fast and need no model."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import FakeEmbedder

CORPUS = {
    "alpha.txt": (
        "The Kestrel Bay tidal barrier was finished in 1987. It protects the harbour town from storm surges.\n"
        "\n"
        "Engineers tested the gates every spring. The largest gate weighs nine hundred tonnes.\n"
    ),
    "beta.md": (
        "# Orchard notes\n"
        "\n"
        "Apple trees need pruning in late winter. Pears are pruned in summer.\n"
        "\n"
        "Cherries ripen in June and are picked by hand.\n"
    ),
    "sub/gamma.txt": (
        "A long paragraph follows, longer than the fake model's window, so that it is cut into windows: "
        + " ".join(f"word{i}" for i in range(80))
        + ". The lighthouse keeper counted ships at dawn."
        + "\n\nShort closing paragraph about violins and cellos.\n"
    ),
}


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_qa(tmp_path, monkeypatch, fake_embedder):
    """A QA on an empty index folder ``tmp_path/index`` that embeds with the fake model."""
    from qa import QA

    monkeypatch.delenv("QA_MODEL", raising=False)
    monkeypatch.delenv("QA_INDEX", raising=False)
    return QA(tmp_path / "index", embedder=fake_embedder)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder ``tmp_path/docs`` of small .txt and .md files (see ``CORPUS``)."""
    root = tmp_path / "docs"
    for name, text in CORPUS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# real-model fixtures
# The real offline model (all-MiniLM-L6-v2) is loaded once per session (~5 s) and
# the seed articles are indexed with it once; tests that write must copy the index.

ARTICLES_DIR = Path(__file__).resolve().parent / "articles"


@pytest.fixture(scope="session")
def real_embedder():
    from embeddings import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def article_index(tmp_path_factory, real_embedder) -> Path:
    """An index of ``tests/articles/`` (the two invented test articles) built with the real model; treat it as read-only."""
    from qa import QA

    folder = tmp_path_factory.mktemp("article-index") / "index"
    report = QA(folder, embedder=real_embedder).index([ARTICLES_DIR])
    assert len(report.added) == 2 and not report.skipped, report
    return folder


SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, real_embedder) -> Path:
    """An index of the real seed articles in ``seeds/``, with the page's example questions; read-only."""
    import shutil

    from qa import QA
    from qa.examples import EXAMPLES_FILE, SEED_EXAMPLES

    folder = tmp_path_factory.mktemp("seed-index") / "index"
    report = QA(folder, embedder=real_embedder).index([SEEDS_DIR])
    assert len(report.added) == 2 and not report.skipped, report
    shutil.copyfile(SEED_EXAMPLES, folder / EXAMPLES_FILE)
    return folder


# slow tests
# Tests marked ``slow`` (many crash trials, hundreds of fuzzed files) run only
# with ``pytest --runslow`` or ``QA_SLOW=1 pytest``; the default run skips them.

import os  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def run_slow(config) -> bool:
    return bool(config.getoption("--runslow")) or os.environ.get("QA_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or QA_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# shared helpers for CLI and page tests


@pytest.fixture
def model(monkeypatch, real_embedder):
    """Commands that load the default model get the session's real one, already loaded."""
    import embeddings

    original = embeddings.load_embedder
    monkeypatch.setattr(
        embeddings, "load_embedder", lambda name=None: real_embedder if name in (None, real_embedder.name) else original(name)
    )
    monkeypatch.delenv("QA_MODEL", raising=False)
    monkeypatch.delenv("QA_INDEX", raising=False)
    return real_embedder


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No developer settings leak in, and the default index never is the user's own."""
    monkeypatch.delenv("QA_MODEL", raising=False)
    monkeypatch.delenv("QA_INDEX", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def page_handler(app, name: str):
    """The Python function behind one of the page's events."""
    fns = [block_fn.fn for block_fn in app.fns.values() if block_fn.name == name]
    assert fns, f"no {name} handler in the app"
    return fns[0]
