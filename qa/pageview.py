"""The original view of a PDF or image passage: the page rendered, the cited characters' region marked.

pdfminer.six, which reads the text (``qa.formats``), already knows every
character's box; ``pdf_layout`` keeps them as word boxes tied to offsets of the
same extracted text (the blocks are cleaned and joined exactly as
``qa.read`` does), so a citation's ``[start, end)`` selects its words.
Boxes are kept as fractions of the displayed page (cropbox, after /Rotate,
y down), so one mark fits a rendering at any scale. pypdfium2 renders the
page (it applies /Rotate and the cropbox the same way a viewer does) and
Pillow draws the mark, one rectangle per line.

Words read by OCR (a scanned PDF page, an image: ``qa.ocr``) have their
boxes kept in the index, in the same fractions; the page is rendered the way
it was read and the stored boxes are marked on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qa.formats import pdf_text_boxes

MARK_FILL = (255, 200, 0, 110)
MARK_LINE = (220, 110, 0, 255)


@dataclass(frozen=True)
class Word:
    """A run of non-space characters on one line: its range in the extracted text, its box."""

    page: int  # 1-based
    line: int  # numbered over the document, so boxes merge per line
    start: int
    end: int
    x0: float  # fractions of the displayed page, y down
    y0: float
    x1: float
    y1: float


def _display_matrix(mediabox, rotate: int) -> tuple:
    """pdfminer's own page matrix (pdfinterp.process_page): user space to the rotated page, origin at 0."""
    x0, y0, x1, y1 = mediabox
    rotate = rotate % 360
    if rotate == 90:
        return (0, -1, 1, 0, -y0, x1)
    if rotate == 180:
        return (-1, 0, 0, -1, x1, y1)
    if rotate == 270:
        return (0, 1, -1, 0, y1, -x0)
    return (1, 0, 0, 1, -x0, -y0)


def _apply(m: tuple, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = m
    return a * x + c * y + e, b * x + d * y + f


def _chars(box) -> list[tuple[str, tuple | None, int]]:
    """(character, box, line number within the text box) in reading order."""
    from pdfminer.layout import LTChar, LTTextLine

    out = []
    lines = [line for line in box if isinstance(line, LTTextLine)]
    for number, line in enumerate(lines):
        for item in line:
            bbox = item.bbox if isinstance(item, LTChar) else None
            out.extend((ch, bbox, number) for ch in item.get_text())
    return out


def _words(text: str, chars: list) -> list[tuple[int, int, int, tuple]]:
    """Align the cleaned block text to pdfminer's characters: (start, end, line, box) per word.

    Cleaning only drops whitespace and the hyphens of words broken across
    lines, so the non-space characters appear in order in both."""
    words: list[list] = []
    j = 0
    previous = None  # (end offset, line) of the last aligned character
    for i, ch in enumerate(text):
        if ch.isspace():
            previous = None
            continue
        while j < len(chars) and (chars[j][0] != ch or chars[j][1] is None):
            j += 1
        if j == len(chars):
            break
        _, bbox, line = chars[j]
        j += 1
        if previous is not None and previous == (i, line):
            word = words[-1]
            word[1] = i + 1
            b = word[3]
            word[3] = (min(b[0], bbox[0]), min(b[1], bbox[1]), max(b[2], bbox[2]), max(b[3], bbox[3]))
        else:
            words.append([i, i + 1, line, bbox])
        previous = (i + 1, line)
    return [tuple(w) for w in words]


def pdf_layout(path: str | Path, ocr_pages: dict[int, str] | None = None) -> tuple[str, list[Word]]:
    """The extracted text of a PDF (as ``qa.read`` builds it) and the box of each of its words.

    ``ocr_pages`` holds the text that OCR read on scanned pages (page number to its text,
    from the index), which pdfminer finds no text on: the offsets of later pages count it."""
    ocr_pages = ocr_pages or {}
    parts: list[str] = []
    words: list[Word] = []
    offset = 0
    line_base = 0
    with open(path, "rb") as handle:
        for number, (page, rotate, boxes) in enumerate(pdf_text_boxes(handle), start=1):
            m = _display_matrix(page.mediabox, rotate)  # the text was read upright; its boxes are turned here
            mx, my = page.mediabox[0], page.mediabox[1]
            corners = [_apply(m, x, y) for x in page.cropbox[0::2] for y in page.cropbox[1::2]]
            cx0, cy0 = min(c[0] for c in corners), min(c[1] for c in corners)
            cx1, cy1 = max(c[0] for c in corners), max(c[1] for c in corners)
            width, height = (cx1 - cx0) or 1.0, (cy1 - cy0) or 1.0
            if not boxes and ocr_pages.get(number):
                if parts:
                    parts.append("\n\n")
                    offset += 2
                parts.append(ocr_pages[number])
                offset += len(ocr_pages[number])
            for element, text in boxes:
                if parts:
                    parts.append("\n\n")
                    offset += 2
                chars = _chars(element)
                for start, end, line, (bx0, by0, bx1, by1) in _words(text, chars):
                    turned = [_apply(m, x + mx, y + my) for x in (bx0, bx1) for y in (by0, by1)]
                    x0, y0 = min(t[0] for t in turned), min(t[1] for t in turned)
                    x1, y1 = max(t[0] for t in turned), max(t[1] for t in turned)
                    words.append(Word(
                        number, line_base + line, offset + start, offset + end,
                        (x0 - cx0) / width, (cy1 - y1) / height, (x1 - cx0) / width, (cy1 - y0) / height,
                    ))
                line_base += max((c[2] for c in chars), default=0) + 1
                parts.append(text)
                offset += len(text)
    return "".join(parts), words


def regions(words: list[Word], page: int, start: int, end: int) -> list[tuple[float, float, float, float]]:
    """The cited characters' region on ``page``: the boxes of the words in [start, end), merged per line."""
    lines: dict[int, list[float]] = {}
    for w in words:
        if w.page != page or w.end <= start or w.start >= end:
            continue
        box = lines.get(w.line)
        if box is None:
            lines[w.line] = [w.x0, w.y0, w.x1, w.y1]
        else:
            box[:] = [min(box[0], w.x0), min(box[1], w.y0), max(box[2], w.x1), max(box[3], w.y1)]
    return [tuple(b) for b in lines.values()]


def render_page(path: str | Path, page: int, *, scale: float = 2.0):
    """The PDF page as an RGB Pillow image, as a viewer shows it (cropbox, /Rotate)."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return pdf[page - 1].render(scale=scale).to_pil().convert("RGB")
    finally:
        pdf.close()


def render_image(path: str | Path, page: int, *, scale: float = 2.0):
    """Frame ``page`` of an image file as OCR read it (upright), at most as large as a PDF page at ``scale``."""
    from qa.ocr import open_image

    image = open_image(path, page)
    # A 300 dpi scan is about 3500 pixels high; an A4 PDF page at ``scale`` is 842 * scale.
    factor = min(1.0, scale * 842 / max(image.size))
    if factor < 1.0:
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))))
    return image


def mark(image, boxes, *, pad: int = 1):
    """``image`` with the ``boxes`` (page fractions) marked; also the pixel rectangles drawn."""
    from PIL import Image, ImageDraw

    width, height = image.size
    rects = [
        (int(x0 * width) - pad, int(y0 * height) - pad, int(x1 * width + 0.999) + pad, int(y1 * height + 0.999) + pad)
        for x0, y0, x1, y1 in boxes
    ]
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for rect in rects:
        draw.rectangle(rect, fill=MARK_FILL, outline=MARK_LINE, width=2)
    marked = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    return marked, rects


class PageViewError(Exception):
    """The original page cannot be shown for this passage; one line saying why."""


def original_page(snapshot, passage, *, scale: float = 2.0):
    """The page of ``passage`` with its characters marked; see ``original_range``."""
    return original_range(snapshot, passage.doc, passage.page, passage.start, passage.end, scale=scale)


def original_range(snapshot, doc: str, page: int | None, start: int, end: int, *, scale: float = 2.0):
    """Page ``page`` of ``doc`` with the characters ``[start, end)`` marked, checked against the file the index read.

    The file must be the one indexed (same SHA-256): boxes from another
    version of it would mark the wrong words."""
    from qa.read import FORMATS
    from qa.storage.manifest import sha256_file

    fmt = FORMATS.get(Path(doc).suffix.lower())
    if page is None or fmt not in ("pdf", "image"):
        raise PageViewError(f"{doc} is neither a PDF nor an image: there is no original page to show")
    known = snapshot.source_of(doc)
    if known is None or not known[0]:
        raise PageViewError(f"the index does not know where the file of {doc} is")
    source, sha = known
    file = Path(source)
    if not file.is_file():
        raise PageViewError(f"the original of {doc} is gone ({file}); index it again to view its pages")
    if sha256_file(file) != sha:
        raise PageViewError(f"{file} has changed since it was indexed; index it again to view its pages")
    read = snapshot.ocr_words(doc)
    on_page = [w for w in read if w.page == page]
    if fmt == "image" or on_page:  # read by OCR: the index kept the boxes of the words it read
        image = render_image(file, page, scale=scale) if fmt == "image" else render_page(file, page, scale=scale)
        return mark(image, regions(on_page, page, start, end))
    stored = snapshot.document_text(doc)
    ocr_pages: dict[int, tuple[int, int]] = {}
    for w in read:
        first, last = ocr_pages.get(w.page, (w.start, w.end))
        ocr_pages[w.page] = (min(first, w.start), max(last, w.end))
    text, words = pdf_layout(file, {p: stored[a:b] for p, (a, b) in ocr_pages.items()})
    if text != stored:
        raise PageViewError(f"{file} reads differently now than when indexed; index it again to view its pages")
    return mark(render_page(file, page, scale=scale), regions(words, page, start, end))
