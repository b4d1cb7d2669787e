"""Read documents into text: one reader per format.

For plain-text formats (.txt, .md) the extracted text is the decoded file
itself, so a citation's ``[start, end)`` can be checked with any editor. For
PDF, DOCX, HTML and images (OCR) it is the parsed blocks joined by blank
lines; the catalog keeps it, and ``qa show`` prints it.

Rich formats are parsed in a child process with a time limit, so a parser that
hangs or crashes on a hostile file costs that file only.
"""

from __future__ import annotations

import codecs
import json
import logging
import multiprocessing
import os
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

from qa.formats import FormatError, Parsed, parse_docx, parse_html, parse_image, parse_pdf
from qa.records import OcrWord

logger = logging.getLogger(__name__)

FORMATS = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    # read by OCR (qa.ocr), a page a frame
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
}
SUPPORTED_SUFFIXES = tuple(FORMATS)
MAX_FILE_BYTES = 50 * 1024 * 1024
PARSE_TIMEOUT = 60.0


class ReadError(Exception):
    """A file cannot be read as a document; the message says why in one line."""


@dataclass(frozen=True)
class Heading:
    start: int
    end: int
    level: int
    title: str


@dataclass(frozen=True)
class ExtractedText:
    text: str
    format: str
    encoding: str | None = None
    pages: tuple[int, ...] = ()  # start offset of each page, for paged formats
    headings: tuple[Heading, ...] = ()
    ocr_words: tuple[OcrWord, ...] = ()  # the words read by OCR, in text order, with their boxes

    def page_at(self, offset: int) -> int | None:
        """1-based page holding ``offset``, or None for formats without pages."""
        if not self.pages:
            return None
        return max(1, bisect_right(self.pages, offset))

    @cached_property
    def _heading_starts(self) -> list[int]:
        return [h.start for h in self.headings]

    def section_at(self, offset: int) -> str | None:
        """Title of the last heading that starts at or before ``offset``."""
        index = bisect_right(self._heading_starts, offset) - 1
        return self.headings[index].title if index >= 0 else None


# -- plain text ------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of unknown encoding: a BOM wins, then UTF-8, then detection."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise ReadError(f"damaged {encoding} text: {exc.reason}") from exc
    if b"\x00" in data[:8192]:
        raise ReadError("looks like a binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    candidates = [(m.encoding, str(m), m.chaos) for m in from_bytes(data)]
    # On short Western text the detector's first guess is often a code page of
    # another script (Arabic, Cyrillic) or UTF-16. Text that is mostly ASCII is
    # in the Latin script, so its other characters must be Latin letters or
    # punctuation; cp1252 and Latin-1 are the fallbacks when no guess is.
    if sum(b < 0x80 for b in data) >= 0.7 * len(data):
        candidates = [c for c in candidates if len(c[1]) >= 0.9 * len(data) and _latin_plausible(c[1])]
        # The fallbacks count as plausible as the detector's best plausible guess.
        chaos = min((c[2] for c in candidates), default=0.0)
        for fallback in ("cp1252", "latin-1"):
            try:
                text = data.decode(fallback)
            except UnicodeDecodeError:
                continue
            if _latin_plausible(text):
                candidates.append((fallback, text, chaos))
    if not candidates:
        raise ReadError("cannot detect the text encoding (a binary file?)")
    # Among near-equal guesses (cp1250, cp1252 and cp1257 often tie on French or
    # German text, turning "è" into "č") prefer cp1252, the most common one.
    best = candidates[0]
    for candidate in candidates:
        if candidate[0] == "cp1252" and candidate[2] <= best[2] + 0.05:
            best = candidate
            break
    return best[1], best[0]


def _latin_plausible(text: str) -> bool:
    return all(
        ch < "\x80" or unicodedata.category(ch)[0] in "PSZ" or "LATIN" in unicodedata.name(ch, "")
        for ch in text
    )


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+([^\r\n]+?)(?:[ \t]+#+)?[ \t]*\r?$", re.MULTILINE)
_SETEXT = re.compile(r"^(?! {0,3}[-=#>*+`~])(\S[^\r\n]*?)[ \t]*\r?\n {0,3}(=+|-+)[ \t]*\r?$", re.MULTILINE)
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)[^\n]*\n.*?(?:^ {0,3}\1[ \t]*\r?$|\Z)", re.MULTILINE | re.DOTALL)


def markdown_headings(text: str) -> tuple[Heading, ...]:
    """ATX (``# Title``) and setext (underlined) headings, in order; none inside code fences."""
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(text)]

    def in_code(position: int) -> bool:
        return any(start <= position < end for start, end in fences)

    found = [Heading(m.start(), m.end(), len(m[1]), m[2].strip()) for m in _ATX.finditer(text)]
    found += [
        Heading(m.start(), m.end(), 1 if m[2][0] == "=" else 2, m[1].strip()) for m in _SETEXT.finditer(text)
    ]
    return tuple(sorted((h for h in found if not in_code(h.start)), key=lambda h: h.start))


# -- rich formats ------------------------------------------------------------------------


def _join(parsed: Parsed, fmt: str) -> ExtractedText:
    """One text from the blocks, a blank line between blocks (and between pages)."""
    parts: list[str] = []
    pages: list[int] = []
    headings: list[Heading] = []
    words: list[OcrWord] = []
    offset = 0
    for blocks in parsed.pages:
        pages.append(offset)
        for block in blocks:
            if parts:
                parts.append("\n\n")
                offset += 2
            if block.heading_level:
                headings.append(Heading(offset, offset + len(block.text), block.heading_level, block.text))
            parts.append(block.text)
            words.extend(word.shifted(offset) for word in block.words)
            offset += len(block.text)
    pages = [min(p, offset) for p in pages]
    return ExtractedText(
        text="".join(parts),
        format=fmt,
        pages=tuple(pages) if parsed.paged else (),
        headings=tuple(headings),
        ocr_words=tuple(words),
    )


def _parse_rich(path: Path, fmt: str, data: bytes) -> dict:
    if fmt == "pdf":
        parsed = parse_pdf(path)
    elif fmt == "docx":
        parsed = parse_docx(path)
    elif fmt == "image":
        parsed = parse_image(path)
    else:
        text, _ = decode_text(data)
        parsed = parse_html(text)
    extracted = _join(parsed, fmt)
    return {
        "text": extracted.text,
        "pages": list(extracted.pages),
        "headings": [[h.start, h.end, h.level, h.title] for h in extracted.headings],
        "ocr_words": [list(vars(w).values()) for w in extracted.ocr_words],
        "notes": parsed.notes,
    }


def _in_child(path: Path, fmt: str, data: bytes, timeout: float) -> ExtractedText:
    """Parse in a forked child; JSON comes back over a pipe (no pickle)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def work() -> None:
        try:
            payload = {"ok": _parse_rich(path, fmt, data)}
        except (FormatError, ReadError) as exc:
            payload = {"error": str(exc)}
        except MemoryError:
            payload = {"error": "the parser ran out of memory"}
        except Exception as exc:  # a parser bug must cost this file only
            payload = {"error": f"cannot parse {fmt.upper()}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"}
        sender.send_bytes(json.dumps(payload).encode("utf-8"))
        sender.close()

    process = context.Process(target=work, daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            hint = " (scanned pages are read by OCR, a second or two a page: raise --timeout)" if fmt in (
                "pdf", "image") else ""
            raise ReadError(f"parsing took longer than the {timeout:g} s limit{hint}")
        payload = json.loads(receiver.recv_bytes().decode("utf-8"))
    except EOFError:
        raise ReadError(f"the {fmt.upper()} parser crashed") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if "error" in payload:
        raise ReadError(payload["error"])
    ok = payload["ok"]
    for note in ok["notes"]:  # said here, not in the child: its stderr may not be the caller's
        logger.warning("%s: %s", path, note)
    return ExtractedText(
        text=ok["text"],
        format=fmt,
        pages=tuple(ok["pages"]),
        headings=tuple(Heading(*h) for h in ok["headings"]),
        ocr_words=tuple(OcrWord(*w) for w in ok["ocr_words"]),
    )


# -- entry points --------------------------------------------------------------------------


def format_of(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ReadError(f"unsupported file type {suffix or '(none)'}")
    return FORMATS[suffix]


def read_bytes(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refusing files over ``max_bytes`` before reading them."""
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            raise ReadError(f"file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:g} MiB limit")
        with open(path, "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise ReadError(exc.strerror or str(exc)) from exc


def extract_text(path: str | os.PathLike, data: bytes, *, timeout: float = PARSE_TIMEOUT) -> ExtractedText:
    """The extracted text of a file whose bytes are ``data``."""
    path = Path(path)
    fmt = format_of(path)
    if not data.strip():
        raise ReadError("file is empty")
    if fmt in ("text", "markdown"):
        text, encoding = decode_text(data)
        headings = markdown_headings(text) if fmt == "markdown" else ()
        extracted = ExtractedText(text=text, format=fmt, encoding=encoding, headings=headings)
    else:
        extracted = _in_child(path, fmt, data, timeout)
    if not extracted.text.strip():
        raise ReadError("no text to index")
    return extracted


def read_document(
    path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES, timeout: float = PARSE_TIMEOUT
) -> ExtractedText:
    format_of(path)
    return extract_text(path, read_bytes(path, max_bytes=max_bytes), timeout=timeout)


def iter_files(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, str]]:
    """Yield ``(file, doc_name)`` for every supported file under ``paths``.

    A document's name is its path relative to the parent of the folder given, so
    ``qa index seeds`` names ``seeds/a.txt`` the same from any working directory.
    Hidden files and folders are skipped.
    """
    for given in paths:
        root = Path(given)
        if root.is_dir():
            base = root.resolve().parent
            for dirpath, dirnames, filenames in os.walk(root.resolve()):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in sorted(filenames):
                    if filename.startswith(".") or Path(filename).suffix.lower() not in FORMATS:
                        continue
                    file = Path(dirpath) / filename
                    yield file, file.relative_to(base).as_posix()
        else:
            yield root, root.name
