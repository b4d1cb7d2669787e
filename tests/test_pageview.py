"""The original view: the marked region of a cited passage covers exactly its characters.

The check is independent of pdfminer: every marked rectangle is mapped back to
page space by PDFium (FPDF_DeviceToPage) and PDFium's own text layer says which
characters lie inside it; together they must be the cited characters, no more.
"""

import ctypes

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from fpdf import FPDF

from qa.pageview import mark, pdf_layout, regions, render_page
from qa.read import read_document

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORDS = ("amber basalt cobalt delta ember fjord granite harbor indigo juniper kelp lagoon marble nectar "
         "obsidian pewter quartz russet saffron tundra umber violet walnut xenon yarrow zephyr").split()


def _paragraph(seed: int, n: int = 28) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n)) + "."


def _pdf(path, *, pages=1, columns=1, rotate=None, cropbox=None):
    pdf = FPDF()
    pdf.add_font("dejavu", fname=FONT)
    pdf.set_font("dejavu", size=11)
    seed = 0
    for _ in range(pages):
        pdf.add_page()
        width = (pdf.epw - 10) / columns
        for column in range(columns):
            pdf.set_xy(pdf.l_margin + column * (width + 10), 20)
            for _ in range(3):
                pdf.set_x(pdf.l_margin + column * (width + 10))
                pdf.multi_cell(width, 5, _paragraph(seed))
                pdf.ln(8)
                seed += 1
    pdf.output(str(path))
    if rotate or cropbox:
        doc = pdfium.PdfDocument(str(path))
        for page in doc:
            if rotate:
                page.set_rotation(rotate)
            if cropbox:
                page.set_cropbox(*cropbox)
        doc.save(str(path) + ".tmp")
        doc.close()
        (path.parent / (path.name + ".tmp")).replace(path)
    return path


def _text_in(path, page_number, image, rect) -> str:
    """PDFium's characters inside a pixel rectangle of the rendered page."""
    doc = pdfium.PdfDocument(str(path))
    try:
        page = doc[page_number - 1]
        width, height = image.size
        points = []
        for dx, dy in ((rect[0], rect[1]), (rect[2], rect[3])):
            x, y = ctypes.c_double(), ctypes.c_double()
            pdfium_c.FPDF_DeviceToPage(page.raw, 0, 0, width, height, 0, dx, dy, ctypes.byref(x), ctypes.byref(y))
            points.append((x.value, y.value))
        (ax, ay), (bx, by) = points
        textpage = page.get_textpage()
        return textpage.get_text_bounded(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))
    finally:
        doc.close()


def _squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(
    "options",
    [{}, {"columns": 2}, {"rotate": 90}, {"rotate": 270, "cropbox": (20, 30, 560, 800)}, {"pages": 3}],
    ids=["one-column", "two-columns", "rotated", "rotated-cropped", "several-pages"],
)
def test_marked_region_covers_exactly_the_cited_characters(tmp_path, options):
    path = _pdf(tmp_path / "doc.pdf", **options)
    text, words = pdf_layout(path)
    extracted = read_document(path)
    assert text == extracted.text  # the boxes are tied to the offsets citations use
    paragraphs = text.split("\n\n")
    assert len(paragraphs) >= 3 * options.get("columns", 1) * options.get("pages", 1)
    # a paragraph of the second column, or of the last page
    cited = paragraphs[-2]
    start = text.index(cited)
    end = start + len(cited)
    page = extracted.page_at(start)
    assert page == options.get("pages", 1)
    boxes = regions(words, page, start, end)
    assert len(boxes) >= 3  # one per line
    plain = render_page(path, page)
    image, rects = mark(plain, boxes)
    inside = "".join(_text_in(path, page, image, rect) for rect in rects)
    assert _squash(inside) == _squash(cited).replace("-", "") or _squash(inside) == _squash(cited)
    # the pixels: changed inside each rectangle, untouched well outside all of them
    for x0, y0, x1, y1 in rects:
        cx, cy = (x0 + x1) // 2, y0 + 1
        assert image.getpixel((cx, cy)) != plain.getpixel((cx, cy))
    width, height = image.size
    changed = [
        (x, y) for x in range(0, width, 7) for y in range(0, height, 7)
        if image.getpixel((x, y)) != plain.getpixel((x, y))
    ]
    assert changed
    assert all(any(r[0] <= x <= r[2] and r[1] <= y <= r[3] for r in rects) for x, y in changed)


def test_neighbouring_paragraphs_do_not_share_marked_pixels(tmp_path):
    path = _pdf(tmp_path / "doc.pdf", columns=2)
    text, words = pdf_layout(path)
    plain = render_page(path, 1)
    marked = []
    for paragraph in text.split("\n\n")[:4]:
        start = text.index(paragraph)
        marked.append(mark(plain, regions(words, 1, start, start + len(paragraph)))[1])
    for i, rects in enumerate(marked):
        for other in marked[i + 1 :]:
            for a in rects:
                for b in other:
                    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


@pytest.mark.model
def test_qa_show_page_image_marks_the_answer_and_refuses_a_changed_file(model, clean_env, tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from qa.cli import cli

    folder = tmp_path / "docs"
    folder.mkdir()
    path = _pdf(folder / "report.pdf", pages=2, columns=2)
    index = tmp_path / "index"
    run = lambda *args: CliRunner().invoke(cli, [str(a) for a in args])  # noqa: E731
    assert run("index", folder, "--index", index).exit_code == 0
    text, _ = pdf_layout(path)
    target = text.split("\n\n")[-1]
    asked = run("ask", " ".join(target.split()[:12]), "--index", index, "--json")
    assert asked.exit_code == 0, asked.output
    hit = json.loads(asked.output.splitlines()[0])["results"][0]
    assert hit["text"] == target and hit["page"] == 2
    out = tmp_path / "page.png"
    shown = run("show", hit["citation"], "--index", index, "--page-image", out)
    assert shown.exit_code == 0, shown.output
    image = Image.open(out).convert("RGB")
    plain = render_page(path, 2)
    assert image.size == plain.size
    width, height = image.size
    changed = [(x, y) for x in range(0, width, 3) for y in range(0, height, 3)
               if image.getpixel((x, y)) != plain.getpixel((x, y))]
    box = (min(x for x, _ in changed), min(y for _, y in changed), max(x for x, _ in changed), max(y for _, y in changed))
    assert _squash(_text_in(path, 2, image, box)) == _squash(target)

    path.write_bytes(path.read_bytes() + b"\n% edited\n")
    refused = run("show", hit["citation"], "--index", index, "--page-image", tmp_path / "again.png")
    assert refused.exit_code == 1 and "has changed since it was indexed" in refused.output
    assert not (tmp_path / "again.png").exists()
    path.unlink()
    gone = run("show", hit["citation"], "--index", index, "--page-image", tmp_path / "again.png")
    assert gone.exit_code == 1 and "is gone" in gone.output
