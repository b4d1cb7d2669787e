"""OCR: the words of a scanned page or an image, read by Tesseract, each with its box and confidence.

A scanned PDF page (one pdfminer finds no text on) is rendered by pypdfium2
at ``PDF_DPI``; an image file is read by Pillow, one page a frame (a
multi-page TIFF), turned as its EXIF orientation says. Tesseract's TSV output
(through pytesseract) gives every word with its box, its line and its
confidence (0-100); the words become blocks of the document's text like any
other format's, and each word keeps its box as fractions of the page (y down,
as ``qa.pageview`` keeps PDF boxes), so the page view can mark what a passage
cites on the very image that was read.

Why the boxes are stored in the index and not recomputed at view time, as
``qa.pageview`` does for text PDFs: Tesseract's LSTM runs on SIMD code chosen
for the CPU (AVX2, AVX-512, ...) and a different build or CPU may read a word
differently; the boxes must be those of the words indexed. OCR also costs
about a second a page, too slow to repeat for every view.
"""

from __future__ import annotations

import os
import shutil
from statistics import median

from qa.config import tesseract_command
from qa.records import OcrWord

LANGUAGE = "eng"
PDF_DPI = 300
# A poster-sized page at 300 dpi would be gigabytes of pixels: its longest side is capped
# here (an A4 page at 300 dpi is 3508 pixels high).
MAX_SIDE = 5000
# One page may not take longer than this (a damaged or enormous image); the whole
# file is bounded by the reader's own --timeout as well.
PAGE_TIMEOUT = 120
INSTALL = "apt-get install tesseract-ocr tesseract-ocr-eng"


class OcrUnavailable(Exception):
    """Tesseract (or its English data) is missing; the message says how to install it."""


def check_available() -> str:
    """The Tesseract command to run, or :class:`OcrUnavailable` saying how to install it."""
    command = tesseract_command()
    if shutil.which(command) is None:
        raise OcrUnavailable(f"Tesseract is not installed ({command} not found); install it with: {INSTALL}")
    return command


def read_page(image, page: int) -> list[tuple[str, tuple[OcrWord, ...]]]:
    """The paragraphs Tesseract reads on ``image``: ``(text, its words)``, word ranges within that text.

    A paragraph is a block of Tesseract's, cut where a line is indented or
    lies well below the one before it. Tesseract's own paragraphs are not
    used as they are: it also ends one at any short line of ragged text.
    Lines are joined with a space; a word hyphenated at a line's end is
    joined to its end on the next line, as PDF text is (``qa.formats``).
    """
    import pytesseract

    command = check_available()
    pytesseract.pytesseract.tesseract_cmd = command
    # Tesseract's OpenMP threads spin-wait: on a shared machine one thread a
    # page was 2 to 7 times faster than two (README, "Scanned PDFs and images").
    # Set only while it runs: pytesseract hands tesseract this process's environment.
    limit = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = limit or "1"
    try:
        data = pytesseract.image_to_data(
            image.convert("RGB"), lang=LANGUAGE, output_type=pytesseract.Output.DICT, timeout=PAGE_TIMEOUT
        )
    except pytesseract.TesseractNotFoundError as exc:
        raise OcrUnavailable(f"Tesseract is not installed ({command} not found); install it with: {INSTALL}") from exc
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc.message):
            raise OcrUnavailable(f"Tesseract has no '{LANGUAGE}' language data; install it with: {INSTALL}") from exc
        raise
    finally:
        if limit is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
    width, height = image.size
    lines: dict[tuple[int, int, int], list[tuple[str, float, tuple[int, int, int, int]]]] = {}
    for i, level in enumerate(data["level"]):
        text = str(data["text"][i]).strip()
        if level != 5 or not text:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        box = (data["left"][i], data["top"][i], data["left"][i] + data["width"][i], data["top"][i] + data["height"][i])
        lines.setdefault(key, []).append((text, max(0.0, float(data["conf"][i])), box))
    return _paragraphs(list(lines.items()), page, width or 1, height or 1)


def _paragraphs(lines, page: int, width: int, height: int) -> list[tuple[str, tuple[OcrWord, ...]]]:
    heights = [max(b[3] for _, _, b in words) - min(b[1] for _, _, b in words) for _, words in lines]
    line_height = median(heights) if heights else 0
    out: list[tuple[str, tuple[OcrWord, ...]]] = []
    text, words = "", []
    block_left: dict[int, int] = {}
    for (block, _, _), line in lines:
        block_left[block] = min(block_left.get(block, line[0][2][0]), line[0][2][0])
    previous = None  # (block, bottom) of the line before
    for number, ((block, _, _), line) in enumerate(lines):
        top = min(b[1] for _, _, b in line)
        left = line[0][2][0]
        new = (
            previous is None
            or block != previous[0]
            or top - previous[1] > 0.8 * line_height  # a blank line between paragraphs
            or left - block_left[block] > 1.5 * line_height  # an indented first line
        )
        if new and words:
            out.append((text, tuple(words)))
            text, words = "", []
        for position, (word, confidence, (x0, y0, x1, y1)) in enumerate(line):
            if text and not (position == 0 and text.endswith("-") and _joins(text, word)):
                text += " "
            elif text:  # the hyphen of a word broken across lines goes
                text = text[:-1]
                last = words[-1]
                words[-1] = OcrWord(page, last.line, last.start, last.end - 1, last.confidence,
                                    last.x0, last.y0, last.x1, last.y1)
            words.append(OcrWord(page, number, len(text), len(text) + len(word), confidence,
                                 x0 / width, y0 / height, x1 / width, y1 / height))
            text += word
        previous = (block, max(b[3] for _, _, b in line))
    if words:
        out.append((text, tuple(words)))
    return out


def _joins(text: str, word: str) -> bool:
    """Whether ``text``'s trailing hyphen breaks a word continued by ``word`` (a lower-case letter follows a letter)."""
    return len(text) >= 2 and text[-2].isalpha() and word[:1].islower()


def pdf_page_image(pdf, number: int):
    """Page ``number`` (1-based) of an open pypdfium2 document as Tesseract should see it."""
    page = pdf[number - 1]
    width, height = page.get_size()
    return page.render(scale=min(PDF_DPI / 72, MAX_SIDE / max(width, height, 1))).to_pil()


def open_image(path, page: int = 1):
    """Frame ``page`` (1-based) of an image file, upright (EXIF orientation applied), in RGB."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.seek(page - 1)
        return ImageOps.exif_transpose(image).convert("RGB")


def image_pages(path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        return getattr(image, "n_frames", 1)


