"""The original page beside the text view, in a real headless Chromium, for a PDF result and
for a scanned page read by OCR (flagged on its card).

Set QA_SCREENSHOTS=docs to refresh the README's pictures (docs/page-view.png, docs/ocr.png).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fpdf import FPDF

from qa import QA
from qa.ui import build_app, launch
from scans import draw_page
from test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT, _free_port, ask, screenshots  # noqa: F401

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED = SEEDS / "001_a6e42268cab0470d.txt"
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
    # a scan of the other seed article's opening, read by OCR
    pakistan = (SEEDS / "000_1e317d521278b0dc.txt").read_text(encoding="utf-8").split("\n\n")
    draw_page([" ".join(p.split()) for p in pakistan[1:5]], font_px=30)[0].save(folder / "pakistan-scan.png")
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


MARKED_PIXELS = """() => { const img = document.getElementById('qa-page-image'); const c = document.createElement('canvas');
                   c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
                   g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 0; i < d.length; i += 4) { if (d[i] > 200 && d[i+1] > 60 && d[i+1] < 130 && d[i+2] < 40) n++; }
                   return n; }"""


def _beside(page) -> bool:
    """Whether the page image stands to the right of the text view, level with it (else under it)."""
    text = page.locator("#source .qa-source").bounding_box()
    image = page.locator("#source img#qa-page-image").bounding_box()
    if image["x"] >= text["x"] + text["width"] - 1 and image["y"] < text["y"] + text["height"]:
        return True
    assert image["y"] >= text["y"] + text["height"] - 1, (text, image)  # stacked: the image under the text
    return False


def test_pdf_result_shows_the_original_page_marked_beside_the_text(pdf_page, screenshots):
    _open_first(pdf_page, "What did Mamtimin Ala say about diplomacy and capitulation?", "seed-article.pdf")
    image = pdf_page.locator("#source img#qa-page-image")
    image.wait_for(timeout=WAIT)
    pdf_page.wait_for_function("() => document.getElementById('qa-page-image').naturalWidth > 500", timeout=WAIT)
    assert "seed-article.pdf" in pdf_page.locator("#source .qa-source-head").inner_text()
    assert _beside(pdf_page)
    # the marked colour is in the image the page shows
    marked = pdf_page.evaluate(MARKED_PIXELS)
    assert marked > 100  # the mark's outline pixels
    pdf_page.locator("#source").scroll_into_view_if_needed()
    pdf_page.screenshot(path=str(screenshots / "page-view.png"), full_page=True)
    # clicked, the page takes the panel's width, to be read; clicked again, it goes back beside the text
    panel = pdf_page.locator("#source").bounding_box()
    image.click()
    pdf_page.wait_for_function(
        "() => document.getElementById('qa-page-image').getBoundingClientRect().width"
        f" > 0.8 * {panel['width']}", timeout=WAIT)
    image.click()
    pdf_page.wait_for_function("() => !document.querySelector('.qa-page-view.qa-zoomed')", timeout=WAIT)
    assert _beside(pdf_page)
    # on a narrow screen the page image goes under the text
    pdf_page.set_viewport_size({"width": 420, "height": 1000})
    pdf_page.wait_for_function(
        "() => { const t = document.querySelector('#source .qa-source').getBoundingClientRect();"
        " return document.getElementById('qa-page-image').getBoundingClientRect().top >= t.bottom - 1; }",
        timeout=WAIT,
    )
    assert not _beside(pdf_page)


def test_a_scanned_result_is_flagged_ocr_and_its_page_marked(pdf_page, screenshots):
    turn = ask(pdf_page, "Who is the ETGE Minister for Foreign Affairs and Security?")
    card = turn.locator(".qa-card").filter(has_text="pakistan-scan.png").first
    badge = card.locator(".qa-ocr")
    assert badge.inner_text().startswith("OCR 0.")
    assert "Read by OCR" in badge.get_attribute("title") and "mean confidence of its words" in badge.get_attribute("title")
    assert "Salih Hudayar" in card.locator(".qa-text").inner_text()
    # a passage read from text has no such flag
    typed = turn.locator(".qa-card").filter(has_text="seed-article.pdf")
    assert typed.count() == 0 or typed.first.locator(".qa-ocr").count() == 0
    card.locator("a.qa-open").click()
    pdf_page.locator("#source mark#qa-cited").wait_for(timeout=WAIT)
    pdf_page.locator("#source img#qa-page-image").wait_for(timeout=WAIT)
    pdf_page.wait_for_function("() => document.getElementById('qa-page-image').naturalWidth > 500", timeout=WAIT)
    assert "pakistan-scan.png" in pdf_page.locator("#source .qa-source-head").inner_text()
    assert _beside(pdf_page)
    assert pdf_page.evaluate(MARKED_PIXELS) > 100
    pdf_page.screenshot(path=str(screenshots / "ocr.png"), full_page=True)


def test_changed_pdf_says_so_instead_of_marking(pdf_page):
    _open_first(pdf_page, "What did Mamtimin Ala say about diplomacy and capitulation?", "changed.pdf")
    note = pdf_page.locator("#source #qa-page-note")
    note.wait_for(timeout=WAIT)
    assert "has changed since it was indexed" in note.inner_text()
    assert pdf_page.locator("#source img#qa-page-image").count() == 0
