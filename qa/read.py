"""Read documents into text: one reader per format.

For plain-text formats the extracted text is the decoded file itself, so a
citation's ``[start, end)`` can be checked against the file with any editor.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown")
MAX_FILE_BYTES = 50 * 1024 * 1024


class ReadError(Exception):
    """A file cannot be read as a document; the message says why in one line."""


@dataclass(frozen=True)
class ExtractedText:
    text: str
    sha256: str
    encoding: str


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
            return data.decode(encoding), encoding
    if b"\x00" in data[:8192]:
        raise ReadError("looks like a binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise ReadError("cannot detect the text encoding")
    # On short Western text charset-normalizer often ranks cp1250 or cp1257 above
    # cp1252 by a hair, which turns "è" into "č". cp1252 is by far the most common
    # legacy encoding, so it wins whenever the detector finds it about as plausible.
    best = matches[0]
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.05:
            best = match
            break
    return str(best), best.encoding


def read_document(path: str | os.PathLike) -> ExtractedText:
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ReadError(f"unsupported file type {path.suffix or '(none)'}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ReadError(f"file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit")
        data = path.read_bytes()
    except OSError as exc:
        raise ReadError(exc.strerror or str(exc)) from exc
    text, encoding = decode_text(data)
    if not text.strip():
        raise ReadError("file is empty")
    return ExtractedText(text=text, sha256=hashlib.sha256(data).hexdigest(), encoding=encoding)


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
                    if filename.startswith(".") or Path(filename).suffix.lower() not in SUPPORTED_SUFFIXES:
                        continue
                    file = Path(dirpath) / filename
                    yield file, file.relative_to(base).as_posix()
        else:
            yield root, root.name
