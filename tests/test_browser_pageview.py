"""The original page beside the text view, in a real headless Chromium, for a PDF result.

Set QA_SCREENSHOTS=docs to refresh the README's picture (docs/page-view.png).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fpdf import FPDF

from qa import QA
from qa.ui import build_app, launch
from test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT, _free_port, ask, screenshots  # noqa: F401

SEED = Path(__file__).resolve().parent.parent / "seeds" / "001_a6e42268cab0470d.txt"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make test installs it)"),
]


@pytest.fixture(scope="module")
def pdf_page_url(real_embedder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pdfdocs") / "docs"
    folder.mkdir()
    paragraphs = [p for p in SEED.read_text(encoding="utf-8").split("\n\n") if p.strip()][:6]
    for name, extra in (("seed-article.pdf", []), ("changed.pdf", ["A copy kept for review."])):
        pdf = FPDF()
        pdf.add_font("dejavu", fname=FONT)
        pdf.set_font("dejavu", size=11)
        pdf.add_page()
        for paragraph in paragraphs + extra:
            pdf.multi_cell(0, 5, " ".join(paragraph.split()))
            pdf.ln(6)
        pdf.output(str(folder / name))
    index = folder.parent / "index"
    qa = QA(index, embedder=real_embedder)
    qa.index([folder])
    with open(folder / "changed.pdf", "ab") as handle:
        handle.write(b"\n% edited after indexing\n")
    app = build_app(qa)
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def pdf_page(pdf_page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(pdf_page_url, wait_until="domcontentloaded")
        page.locator("#question textarea").wait_for(timeout=WAIT)
        yield page
        browser.close()


def _open_first(page, question: str, doc: str):
    turn = ask(page, question)
    card = turn.locator(".qa-card").filter(has_text=doc).first
    card.locator("a.qa-open").click()
    page.locator("#source mark#qa-cited").wait_for(timeout=WAIT)


def test_pdf_result_shows_the_original_page_marked_under_the_text(pdf_page, screenshots):
    _open_first(pdf_page, "What did Mamtimin Ala say about diplomacy and capitulation?", "seed-article.pdf")
    image = pdf_page.locator("#source img#qa-page-image")
    image.wait_for(timeout=WAIT)
    pdf_page.wait_for_function("() => document.getElementById('qa-page-image').naturalWidth > 500", timeout=WAIT)
    assert "seed-article.pdf" in pdf_page.locator("#source .qa-source-head").inner_text()
    # the marked colour is in the image the page shows
    marked = pdf_page.evaluate(
        """() => { const img = document.getElementById('qa-page-image'); const c = document.createElement('canvas');
                   c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
                   g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 0; i < d.length; i += 4) { if (d[i] > 200 && d[i+1] > 60 && d[i+1] < 130 && d[i+2] < 40) n++; }
                   return n; }"""
    )
    assert marked > 100  # the mark's outline pixels
    pdf_page.locator("#source img#qa-page-image").scroll_into_view_if_needed()
    pdf_page.screenshot(path=str(screenshots / "page-view.png"), full_page=True)


def test_changed_pdf_says_so_instead_of_marking(pdf_page):
    _open_first(pdf_page, "What did Mamtimin Ala say about diplomacy and capitulation?", "changed.pdf")
    note = pdf_page.locator("#source #qa-page-note")
    note.wait_for(timeout=WAIT)
    assert "has changed since it was indexed" in note.inner_text()
    assert pdf_page.locator("#source img#qa-page-image").count() == 0
