"""OCR with Tesseract: scanned PDFs and images are read, flagged, and their cited words marked.

The pages are drawn by Pillow (tests/scans.py), so where each word really is,
and what it really says, is known; Tesseract must read it back and the page
view must mark those words' boxes, no others.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fpdf import FPDF
from PIL import Image

from qa import QA
from qa.cli import cli
from qa.records import OcrWord, mean_confidence
from qa.pageview import pdf_layout, render_image, render_page
from qa.read import read_document
from indexfiles import as_one_catalog
from scans import FONT, SIZE, draw_page, save_pdf

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed (make test installs it)")

HARBOUR = [
    "Harbour works report for the town council of Kestrel Bay, spring session.",
    "The pumping station at Quay Street cost 4.1 million euros and was opened in March by the mayor, Ilse Marten. "
    "Its four pumps can move the water of the lower town into the sea within six hours of a storm surge.",
    "Dredging of the inner basin will begin in the autumn, once the permits from the water board arrive.",
]
ORCHARD = [
    "Minutes of the orchard cooperative of Velden, annual meeting.",
    "The cooperative sold eleven tonnes of cider apples to the Brenner cannery, at a price agreed in January.",
    "Members voted to plant two hundred pear trees on the north slope next spring.",
]
LIBRARY = [
    "The county library will close its reading room on Sundays from October.",
    "A mobile library van will visit the hill villages every second Tuesday, starting with Ostrava Green.",
]
LIGHTHOUSE = [
    "The old lighthouse on Gull Point was built in 1872 from granite quarried on the island.",
    "Its lamp was converted to electricity in 1951 and the last keeper, Tomas Reyes, left in 1989.",
]


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A folder of scans: an image-only PDF of two pages, a PNG, a JPEG, a TIFF of two pages; and a text file."""
    folder = tmp_path_factory.mktemp("scans") / "docs"
    folder.mkdir()
    pages = {name: draw_page(paragraphs) for name, paragraphs in
             (("harbour", HARBOUR), ("orchard", ORCHARD), ("library", LIBRARY), ("lighthouse", LIGHTHOUSE))}
    save_pdf(folder / "harbour-scan.pdf", [pages["harbour"][0], pages["orchard"][0]])
    pages["library"][0].save(folder / "library.png")
    pages["orchard"][0].convert("RGB").save(folder / "orchard.jpg", quality=90)
    pages["lighthouse"][0].save(folder / "archive.tiff", save_all=True, append_images=[pages["library"][0].copy()])
    (folder / "notes.txt").write_text("The ferry to Gull Point leaves at nine every morning.\n", encoding="utf-8")
    return folder, pages


def test_an_image_is_read_with_each_word_boxed_and_scored(scans):
    folder, pages = scans
    extracted = read_document(folder / "library.png")
    assert extracted.format == "image" and extracted.pages == (0,)
    paragraphs = extracted.text.split("\n\n")
    assert len(paragraphs) == len(LIBRARY)
    for read, drawn in zip(paragraphs, LIBRARY):
        assert _similar(read, drawn) > 0.97, (read, drawn)
    words = extracted.ocr_words
    assert len(words) == sum(len(p.split()) for p in LIBRARY)
    assert all(0 < w.confidence <= 100 and 0 <= w.x0 < w.x1 <= 1 and 0 <= w.y0 < w.y1 <= 1 for w in words)
    # each recognised word's range holds that word, and its box is where it was drawn
    _, drawn = pages["library"]
    width, height = Image.open(folder / "library.png").size
    for word, truth in zip(words, drawn):
        assert _similar(extracted.text[word.start : word.end], truth.word) > 0.7
        x0, y0, x1, y1 = truth.box
        assert abs(word.x0 * width - x0) < 6 and abs(word.x1 * width - x1) < 6
        assert abs(word.y0 * height - y0) < 12 and abs(word.y1 * height - y1) < 12


def test_a_photo_stored_sideways_is_read_upright_as_its_exif_says(scans, tmp_path):
    folder, pages = scans
    image = pages["library"][0].convert("RGB").transpose(Image.Transpose.ROTATE_90)  # stored turned left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to show it
    image.save(tmp_path / "photo.jpg", quality=90, exif=exif)
    extracted = read_document(tmp_path / "photo.jpg")
    assert _similar(extracted.text, "\n\n".join(LIBRARY)) > 0.97
    assert render_image(tmp_path / "photo.jpg", 1).size[1] > render_image(tmp_path / "photo.jpg", 1).size[0]


def test_a_multi_page_tiff_is_one_page_a_frame(scans):
    folder, _ = scans
    extracted = read_document(folder / "archive.tiff")
    first, second = extracted.text[: extracted.pages[1]], extracted.text[extracted.pages[1] :]
    assert _similar(first.strip(), "\n\n".join(LIGHTHOUSE)) > 0.97
    assert _similar(second.strip(), "\n\n".join(LIBRARY)) > 0.97
    assert {w.page for w in extracted.ocr_words} == {1, 2}
    assert all(extracted.page_at(w.start) == w.page for w in extracted.ocr_words)


def test_a_scanned_pdf_is_read_page_by_page(scans):
    folder, _ = scans
    extracted = read_document(folder / "harbour-scan.pdf")
    assert extracted.format == "pdf" and len(extracted.pages) == 2
    assert _similar(extracted.text[: extracted.pages[1]].strip(), "\n\n".join(HARBOUR)) > 0.97
    assert _similar(extracted.text[extracted.pages[1] :].strip(), "\n\n".join(ORCHARD)) > 0.97


def test_paragraphs_without_blank_lines_are_cut_at_indented_first_lines():
    from qa.ocr import read_page

    image, _ = draw_page(HARBOUR + ORCHARD, blank_line=False, indent=60)
    read = [text for text, _ in read_page(image, 1)]
    assert len(read) == len(HARBOUR + ORCHARD)
    assert all(_similar(a, b) > 0.97 for a, b in zip(read, HARBOUR + ORCHARD))


def test_a_word_broken_at_a_line_end_is_joined(tmp_path):
    from qa.ocr import read_page

    paragraphs = read_page(_one_paragraph_broken(), 1)
    assert len(paragraphs) == 1
    text, words = paragraphs[0]
    assert "embankment along" in text and "-" not in text
    broken = [w for w in words if text[w.start : w.end] in ("embank", "ment")]
    assert len(broken) == 2 and broken[0].line != broken[1].line  # each part keeps its own line's box


def _one_paragraph_broken() -> Image.Image:
    from PIL import ImageDraw, ImageFont

    image = Image.new("L", (1400, 400), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, 40)
    draw.text((100, 100), "The engineers reinforced the embank-", font=font, fill=0)
    draw.text((100, 158), "ment along the western quay of the town.", font=font, fill=0)
    return image


def test_mean_confidence_is_over_the_words_of_the_range():
    words = [OcrWord(1, 0, s, s + 4, c, 0, 0, 0.1, 0.1) for s, c in ((0, 90.0), (5, 70.0), (10, 50.0))]
    assert mean_confidence(words, 0, 9) == 0.8
    assert mean_confidence(words, 6, 11) == 0.6  # words cut by the range count
    assert mean_confidence(words, 15, 20) is None


@pytest.mark.model
def test_scans_are_indexed_asked_flagged_and_marked(scans, model, clean_env, tmp_path):
    folder, pages = scans
    index = tmp_path / "index"
    result = _run("index", folder, "--index", index)
    assert result.exit_code == 0, result.output
    assert "5 added" in result.stdout and "0 skipped" in result.stdout

    asked = _run("ask", "How much did the pumping station at Quay Street cost?", "--index", index, "--json", "-k", "3")
    assert asked.exit_code == 0, asked.output
    top = json.loads(asked.output)["results"][0]
    assert top["doc"] == "docs/harbour-scan.pdf" and top["page"] == 1
    assert top["ocr"] is True and 0.8 < top["ocr_confidence"] <= 1.0
    assert _similar(top["text"], HARBOUR[1]) > 0.97
    assert top["citation"] == "harbour-scan.pdf, p. 1, ¶2"

    # text read from a text file is not flagged
    ferry = json.loads(_run("ask", "When does the ferry to Gull Point leave?", "--index", index, "--json").output)
    notes = next(r for r in ferry["results"] if r["doc"] == "docs/notes.txt")
    assert notes["ocr"] is False and notes["ocr_confidence"] is None

    # the plain output says so too
    plain = _run("ask", "How much did the pumping station at Quay Street cost?", "--index", index, "-k", "1")
    assert "read by OCR (word confidence 0." in plain.output

    # the CSV of qa batch carries the flag and the confidence
    questions = tmp_path / "q.txt"
    questions.write_text("Who was the last keeper of the lighthouse?\n", encoding="utf-8")
    batch = _run("batch", questions, "--index", index, "--format", "csv", "-k", "1")
    row = next(csv.DictReader(io.StringIO(batch.output)))
    assert row["doc"] == "docs/archive.tiff" and row["page"] == "1"
    assert row["ocr"] == "True" and 0.8 < float(row["ocr_confidence"]) <= 1.0

    # qa show --json and the page image: the marked boxes are the cited words' boxes
    shown = json.loads(_run("show", top["citation"], "--index", index, "--json").output)
    assert shown["ocr"] is True and shown["ocr_confidence"] == top["ocr_confidence"]
    out = tmp_path / "page.png"
    assert _run("show", top["citation"], "--index", index, "--page-image", out).exit_code == 0
    image = Image.open(out).convert("RGB")
    same, rects = QA(index).page_image(top["citation"])
    assert list(image.getdata()) == list(same.getdata())
    _check_marks(image, render_page(folder / "harbour-scan.pdf", 1), rects, pages["harbour"][1], paragraph=1)


@pytest.mark.model
@pytest.mark.parametrize("name, question, paragraph, page, drawn", [
    ("library.png", "Which villages will the mobile library van visit?", 1, 1, "library"),
    ("orchard.jpg", "How many pear trees will the members plant?", 2, 1, "orchard"),
    ("archive.tiff", "When was the lighthouse lamp converted to electricity?", 1, 1, "lighthouse"),
    ("archive.tiff", "When will the county library close its reading room on Sundays?", 0, 2, "library"),
])
def test_the_page_view_marks_the_cited_words_on_an_image(scans, real_embedder, tmp_path, name, question, paragraph,
                                                         page, drawn):
    folder, pages = scans
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(folder / name, one / name)
    qa = QA(tmp_path / "index", embedder=real_embedder)
    qa.index([one])
    hit = qa.ask(question, k=1).hits[0]
    assert hit.passage.ocr and hit.passage.page == page
    truth = {"library": LIBRARY, "orchard": ORCHARD, "lighthouse": LIGHTHOUSE}[drawn][paragraph]
    assert _similar(hit.passage.text, truth) > 0.97
    image, rects = qa.page_image(hit.citation)
    plain = render_image(one / name, page)
    assert image.size == plain.size
    _check_marks(image, plain, rects, pages[drawn][1], paragraph=paragraph)


def _check_marks(image, plain, rects, drawn, *, paragraph: int, slack: float = 6) -> None:
    """Each word of the cited paragraph lies in a marked rectangle, no other word touches one, and
    the image differs from the plain page only inside the rectangles."""
    fx, fy = image.size[0] / SIZE[0], image.size[1] / SIZE[1]
    assert rects
    for word in drawn:
        x0, y0, x1, y1 = word.box[0] * fx, word.box[1] * fy, word.box[2] * fx, word.box[3] * fy
        if word.paragraph == paragraph:
            assert any(r[0] - slack <= x0 and r[1] - slack <= y0 and x1 <= r[2] + slack and y1 <= r[3] + slack
                       for r in rects), (word, rects)
        else:
            assert all(x1 < r[0] or r[2] < x0 or y1 < r[1] or r[3] < y0 for r in rects), (word, rects)
    width, height = image.size
    changed = [(x, y) for x in range(0, width, 3) for y in range(0, height, 3)
               if image.getpixel((x, y)) != plain.getpixel((x, y))]
    assert changed
    assert all(any(r[0] <= x <= r[2] and r[1] <= y <= r[3] for r in rects) for x, y in changed)


@pytest.mark.model
def test_without_tesseract_scans_are_skipped_with_how_to_install_it(scans, model, clean_env, tmp_path, monkeypatch):
    folder, _ = scans
    monkeypatch.setenv("QA_TESSERACT", str(tmp_path / "no" / "tesseract"))
    index = tmp_path / "index"
    result = _run("index", folder, "--index", index)
    assert result.exit_code == 3, result.output  # some skipped, the rest indexed
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 4
    for name in ("harbour-scan.pdf", "library.png", "orchard.jpg", "archive.tiff"):
        line = next(line for line in skipped if name in line)
        assert "apt-get install tesseract-ocr" in line and "not installed" in line
    assert "1 added" in result.stdout
    listed = _run("list", "--index", index).output
    assert "docs/notes.txt" in listed and "library.png" not in listed
    # once Tesseract is there, the same folder is read in full
    monkeypatch.delenv("QA_TESSERACT")
    again = _run("index", folder, "--index", index)
    assert again.exit_code == 0 and "4 added" in again.stdout


@pytest.mark.model
def test_a_pdf_of_text_and_scanned_pages_reads_both_and_marks_both(real_embedder, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "docs"
    folder.mkdir()
    scan = tmp_path / "scan.png"
    image, drawn = draw_page(LIGHTHOUSE)
    image.save(scan)
    pdf = FPDF(format="letter")
    pdf.add_font("dejavu", fname=FONT)
    pdf.set_font("dejavu", size=11)
    pdf.add_page()
    for paragraph in ORCHARD:
        pdf.multi_cell(0, 5, paragraph)
        pdf.ln(6)
    pdf.add_page()
    pdf.image(str(scan), x=0, y=0, w=pdf.w, h=pdf.h)
    pdf.add_page()
    pdf.multi_cell(0, 5, HARBOUR[1])
    pdf.output(str(folder / "mixed.pdf"))

    # without Tesseract the text pages are indexed and the scanned one is named as left out
    monkeypatch.setenv("QA_TESSERACT", str(tmp_path / "missing"))
    without = QA(tmp_path / "without", embedder=real_embedder)
    with caplog.at_level("WARNING", logger="qa.read"):
        assert without.index([folder]).added == ["docs/mixed.pdf"]
    assert "page(s) 2 have no text (scanned?) and were left out" in caplog.text
    assert "apt-get install tesseract-ocr" in caplog.text
    assert {p.page for p in without.snapshot().passages_of("docs/mixed.pdf")} == {1, 3}
    monkeypatch.delenv("QA_TESSERACT")

    qa = QA(tmp_path / "index", embedder=real_embedder)
    qa.index([folder])

    scanned = qa.ask("When was the lighthouse lamp converted to electricity?", k=1).hits[0]
    assert scanned.passage.page == 2 and scanned.passage.ocr
    assert _similar(scanned.passage.text, LIGHTHOUSE[1]) > 0.97
    typed = qa.ask("How much did the pumping station cost?", k=1).hits[0]
    assert typed.passage.page == 3 and not typed.passage.ocr and typed.to_json()["ocr"] is False
    assert typed.passage.text == HARBOUR[1]  # read from the text layer, exactly
    # the text page after the scanned one is still marked from pdfminer's boxes (its offsets count the OCR'd page)
    snapshot = qa.snapshot()
    stored, read = snapshot.document_text("docs/mixed.pdf"), snapshot.ocr_words("docs/mixed.pdf")
    assert {w.page for w in read} == {2}
    text, _ = pdf_layout(folder / "mixed.pdf", {2: stored[min(w.start for w in read) : max(w.end for w in read)]})
    assert text == stored
    image3, rects3 = qa.page_image(typed.citation)
    assert len(rects3) >= 2 and image3.size == render_page(folder / "mixed.pdf", 3).size
    image2, rects2 = qa.page_image(scanned.citation)
    _check_marks(image2, render_page(folder / "mixed.pdf", 2), rects2, drawn, paragraph=1)


@pytest.mark.model
def test_the_page_downloads_carry_the_ocr_flag(scans, real_embedder, tmp_path):
    from qa.export import with_links
    from qa.ui import conversation_files

    folder, _ = scans
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(folder / "library.png", one)
    qa = QA(tmp_path / "index", embedder=real_embedder)
    qa.index([one])
    answer = with_links({**qa.ask("Which villages will the mobile library van visit?", k=1).to_json(), "id": "1"})
    json_path, csv_path = conversation_files([answer], str(qa.index_dir))
    result = json.loads(Path(json_path).read_text(encoding="utf-8"))["answers"][0]["results"][0]
    assert result["ocr"] is True and 0.8 < result["ocr_confidence"] <= 1
    row = next(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert row["ocr"] == "True" and float(row["ocr_confidence"]) == result["ocr_confidence"]


@pytest.mark.model
def test_an_upgrade_keeps_the_words_ocr_read(scans, real_embedder, tmp_path):
    """Rewriting an index from its catalog (qa.upgrade) carries the OCR words over; OCR is not run again."""
    folder, _ = scans
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(folder / "archive.tiff", one)
    index = tmp_path / "index"
    qa = QA(index, embedder=real_embedder)
    qa.index([one])
    before_words = qa.snapshot().ocr_words("one/archive.tiff")
    before = [(p.start, p.end, p.ocr_confidence) for p in qa.snapshot().passages_of("one/archive.tiff")]
    # A format upgraded by embedding again (2), on a catalog that has the OCR words, as a
    # later format's will have: the rewrite must carry them over. (Formats 4 and 5 are
    # migrated without embedding: test_upgrade.py.)
    as_one_catalog(index, 2)
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    assert qa.outdated()
    (one / "archive.tiff").unlink()  # the upgrade reads the catalog, not the files
    qa.upgrade()
    snapshot = qa.snapshot()
    assert snapshot.generation > manifest["generation"]
    assert snapshot.ocr_words("one/archive.tiff") == before_words and len(before_words) > 20
    assert [(p.start, p.end, p.ocr_confidence) for p in snapshot.passages_of("one/archive.tiff")] == before
    assert all(c is not None for _, _, c in before)


def test_a_poster_sized_page_is_rendered_for_ocr_within_the_pixel_cap():
    import pypdfium2 as pdfium

    from qa.ocr import MAX_SIDE, PDF_DPI, pdf_page_image

    pdf = pdfium.PdfDocument.new()
    pdf.new_page(612, 792)  # US letter
    pdf.new_page(2384, 3370)  # A0
    try:
        letter, poster = pdf_page_image(pdf, 1), pdf_page_image(pdf, 2)
    finally:
        pdf.close()
    assert abs(letter.size[0] - 612 * PDF_DPI / 72) <= 1 and abs(letter.size[1] - 792 * PDF_DPI / 72) <= 1
    assert max(poster.size) <= MAX_SIDE and max(poster.size) > MAX_SIDE - 5
