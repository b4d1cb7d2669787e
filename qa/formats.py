"""Text extraction for rich formats: PDF, DOCX and HTML.

Each parser returns blocks (a paragraph or a heading each) per page; ``read.py``
joins them into the document's extracted text with a blank line between blocks,
so every citation points into that text exactly.

Why these parsers:
- PDF: pdfminer.six groups characters into text boxes in reading order (it
  handles columns), which gives paragraphs; pypdf only gives lines.
- DOCX: python-docx reads paragraphs with their style names, so headings are known.
- HTML: trafilatura is made to keep an article's main content and drop
  navigation, scripts, styles and boilerplate; its XML output marks headings.
- Scanned PDF pages and images: Tesseract (``qa.ocr``), whose words keep
  their boxes and confidences in the blocks they make.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from qa.ocr import OcrUnavailable

# A DOCX is a zip: refuse archives that would expand to absurd sizes.
MAX_UNZIPPED_BYTES = 200 * 1024 * 1024
MAX_ZIP_RATIO = 200


class FormatError(Exception):
    """The file is not a readable document of its format; one line for the user."""


@dataclass(frozen=True)
class Block:
    text: str
    heading_level: int = 0  # 0 for body text
    words: tuple = ()  # for OCR'd text, its ``qa.ocr.OcrWord``s, ranges within ``text``


@dataclass
class Parsed:
    """Blocks, per page for paged formats (one page otherwise)."""

    pages: list[list[Block]] = field(default_factory=list)
    paged: bool = False
    notes: list[str] = field(default_factory=list)  # what a reader should know of a file read in part


_SOFT_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\n(?=[a-z])")
_BLANK_LINES = re.compile(r"\n\s*\n")


_SPACES = re.compile(r"[ \t\u00a0]+")


def _clean_block(text: str, *, reflow: bool = False) -> str:
    """Tidy one block: join words hyphenated across line ends, collapse runs of
    spaces, no blank lines inside. With ``reflow`` (PDF, where line ends are
    only where the page ran out) lines are joined into one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    text = _BLANK_LINES.sub("\n", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.strip().split("\n")]
    return (" " if reflow else "\n").join(line for line in lines if line)


def pdf_text_boxes(handle: BinaryIO) -> Iterator[tuple[object, int, list[tuple[object, str]]]]:
    """Each page of an open PDF as ``(page, its /Rotate, [(text box, cleaned text)])``, read upright.

    The one reading of a PDF's text: ``parse_pdf`` indexes it and
    ``qa.pageview`` finds the same words' boxes in it. Boxes whose text is
    empty once cleaned are left out."""
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams, LTTextContainer
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
    from pdfminer.pdfpage import PDFPage

    manager = PDFResourceManager()
    device = PDFPageAggregator(manager, laparams=LAParams())
    interpreter = PDFPageInterpreter(manager, device)
    for pdf_page in PDFPage.get_pages(handle):
        rotate = pdf_page.rotate
        # Read a turned page (/Rotate) upright: turned, its lines run down the
        # page and pdfminer reads them one character per line.
        pdf_page.rotate = 0
        interpreter.process_page(pdf_page)
        boxes = []
        for element in device.get_result():
            if isinstance(element, LTTextContainer):
                text = _clean_block(element.get_text(), reflow=True)
                if text:
                    boxes.append((element, text))
        yield pdf_page, rotate, boxes


def parse_pdf(path: Path) -> Parsed:
    from pdfminer.pdfparser import PDFSyntaxError
    from pdfminer.psparser import PSEOF, PSException

    parsed = Parsed(paged=True)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise FormatError(f"cannot open PDF: {exc.strerror or exc}") from exc
    try:
        for _, _, boxes in pdf_text_boxes(handle):
            parsed.pages.append([Block(text) for _, text in boxes])
        if not all(parsed.pages):
            _ocr_pdf_pages(path, parsed)
    except OcrUnavailable as exc:
        if not any(parsed.pages):
            raise FormatError(f"PDF has no extractable text (a scanned image?) and OCR cannot read it: {exc}") from exc
        # The pages with text are indexed; the scanned ones cannot be read here.
        empty = [str(n) for n, blocks in enumerate(parsed.pages, start=1) if not blocks]
        parsed.notes.append(f"page(s) {', '.join(empty)} have no text (scanned?) and were left out: {exc}")
    except PSEOF as exc:
        raise FormatError("not a readable PDF (truncated: it ends too early)") from exc
    except (PDFSyntaxError, PSException) as exc:
        raise FormatError("not a readable PDF (damaged or not a PDF at all)") from exc
    except Exception as exc:  # pdfminer raises many kinds on damaged files
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"cannot parse PDF: {message}") from exc
    finally:
        handle.close()
    if not any(parsed.pages):
        raise FormatError("PDF has no extractable text, and OCR found none on its pages")
    return parsed


def _ocr_pdf_pages(path: Path, parsed: Parsed) -> None:
    """Read the pages pdfminer found no text on (scans) with Tesseract, in place."""
    import pypdfium2 as pdfium

    from qa.ocr import check_available, pdf_page_image, read_page

    check_available()
    pdf = pdfium.PdfDocument(str(path))
    try:
        for number, blocks in enumerate(parsed.pages, start=1):
            if not blocks:
                image = pdf_page_image(pdf, number)
                blocks.extend(Block(text, words=words) for text, words in read_page(image, number))
    finally:
        pdf.close()


def parse_image(path: Path) -> Parsed:
    """An image file read by Tesseract, one page a frame (a multi-page TIFF has several)."""
    from PIL import Image, UnidentifiedImageError

    from qa.ocr import check_available, image_pages, open_image, read_page

    try:
        check_available()
    except OcrUnavailable as exc:
        raise FormatError(f"an image is read by OCR, which cannot run: {exc}") from exc
    parsed = Parsed(paged=True)
    try:
        for number in range(1, image_pages(path) + 1):
            blocks = [Block(text, words=words) for text, words in read_page(open_image(path, number), number)]
            parsed.pages.append(blocks)
    except Image.DecompressionBombError as exc:
        raise FormatError(f"refused: the image is too large to read ({exc})") from exc
    except (UnidentifiedImageError, OSError, EOFError) as exc:
        raise FormatError(f"not a readable image ({type(exc).__name__})") from exc
    if not any(parsed.pages):
        raise FormatError("OCR found no text in the image")
    return parsed


def check_zip(path: Path) -> None:
    """Refuse a zip whose contents would expand past sane limits (a zip bomb)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"not a valid DOCX (zip) file: {exc}") from exc
    total = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos) or 1
    if total > MAX_UNZIPPED_BYTES or total / packed > MAX_ZIP_RATIO:
        raise FormatError(
            f"refused: expands to {total // (1024 * 1024)} MiB from {packed // 1024} KiB (zip bomb?)"
        )


def parse_docx(path: Path) -> Parsed:
    check_zip(path)
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise FormatError(f"not a readable DOCX: {exc}") from exc
    from docx.table import Table

    blocks = []
    for item in document.iter_inner_content():  # paragraphs and tables in body order
        if isinstance(item, Table):
            rows = [" | ".join(_clean_block(cell.text) for cell in row.cells) for row in item.rows]
            text = "\n".join(row for row in rows if row.strip(" |"))
            if text:
                blocks.append(Block(text))
            continue
        text = _clean_block(item.text)
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        level = 0
        if style == "Title":
            level = 1
        elif style.startswith("Heading"):
            digits = style.removeprefix("Heading").strip()
            level = int(digits) if digits.isdigit() else 1
        blocks.append(Block(text, level))
    return Parsed(pages=[blocks])


def parse_html(data: str) -> Parsed:
    import trafilatura
    from lxml import etree

    xml = trafilatura.extract(
        data, output_format="xml", include_comments=False, include_tables=True, favor_recall=True
    )
    if not xml:
        raise FormatError("HTML has no main text")
    try:
        root = etree.fromstring(xml.encode("utf-8"))
    except etree.XMLSyntaxError as exc:
        raise FormatError(f"cannot read the extracted HTML content: {exc}") from exc
    main = root.find("main")
    blocks = []
    for element in main if main is not None else root:
        if element.tag == "head":
            rend = element.get("rend") or "h1"
            level = int(rend[1:]) if rend[1:].isdigit() else 1
            text = _clean_block("".join(element.itertext()))
            if text:
                blocks.append(Block(text, level))
        elif element.tag == "list":
            items = [_clean_block("".join(item.itertext())) for item in element.iter("item")]
            text = "\n".join(f"- {item}" for item in items if item)
            if text:
                blocks.append(Block(text))
        elif element.tag == "table":
            rows = []
            for row in element.iter("row"):
                rows.append(" | ".join(_clean_block("".join(cell.itertext())) for cell in row.iter("cell")))
            text = "\n".join(r for r in rows if r.strip(" |"))
            if text:
                blocks.append(Block(text))
        else:
            text = _clean_block("".join(element.itertext()))
            if text:
                blocks.append(Block(text))
    if not blocks:
        raise FormatError("HTML has no main text")
    return Parsed(pages=[blocks])
