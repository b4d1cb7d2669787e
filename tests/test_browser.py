"""The chat page in a real headless Chromium (Debian's /usr/bin/chromium via Playwright)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from qa import QA
from qa.ui import build_app, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Set QA_SCREENSHOTS=docs to refresh the README's pictures; by default they go to a temporary folder.
SCREENSHOTS = os.environ.get("QA_SCREENSHOTS")

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(seed_index, real_embedder):
    app = build_app(QA(seed_index, embedder=real_embedder))
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _ask(page, question: str):
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()


def test_question_shows_cited_passage_with_highlight(browser, page_url, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(page_url, wait_until="domcontentloaded")
    _ask(page, "What did Kostal say about President Aldan?")
    first = page.locator("#conversation .qa-card").first
    first.wait_for(timeout=60_000)
    assert "001_morvan_exile_government.txt ¶5" in first.locator(".qa-cite").inner_text()
    marked = first.locator("mark").inner_text()
    assert "Aldan" in marked
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "chat.png"), full_page=True)
    assert (folder / "chat.png").stat().st_size > 10_000
    page.close()


def test_page_loads_no_external_resources(browser, page_url):
    """The page must work offline: every request it makes stays on the local server."""
    page = browser.new_page()
    outside: list[str] = []
    local = page_url.rstrip("/")

    def record(request):
        if not request.url.startswith((local, "data:", "blob:")):
            outside.append(request.url)

    page.on("request", record)
    page.goto(page_url, wait_until="domcontentloaded")
    page.locator("#question textarea").wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    page.close()
    assert outside == []
