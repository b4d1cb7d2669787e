"""An index folder's manifest: what a commit consists of, and the checks on it.

``manifest.json`` names the files of the live generation with their SHA-256,
the embedding model, the counts; it is replaced last, so it is the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from embeddings import canonical_model_name

# 3: the catalog keeps each passage's token vectors (qa.late).
# 4: a document's one-line first paragraph (its title) is embedded as context of its other passages.
# 5: words read by OCR, with their boxes and confidences (ocr_words); each passage's OCR confidence.
# 6: segments (``qa.storage.segments``): a commit writes a small live catalog and a segment of what it added.
FORMAT_VERSION = 6
# Older formats that ``qa.upgrade`` brings up to date (4 and 5 migrated, 2 and 3 embedded again).
UPGRADABLE = (2, 3, 4, 5)
MANIFEST = "manifest.json"


class StoreError(Exception):
    """Something is wrong with an index folder; the message is one line for the user."""


class IndexMissing(StoreError):
    pass


class IndexCorrupt(StoreError):
    pass


class IndexOutdated(IndexCorrupt):
    """Written by an earlier version in a format ``qa.upgrade`` can bring up to date."""


class ModelMismatch(StoreError):
    pass


class IndexLocked(StoreError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dimension: int
    max_tokens: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path) -> tuple:
    """What tells a file apart from one rewritten under its name: path, inode, size, times."""
    stat = path.stat()
    return (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


_VERIFIED: dict[tuple, str] = {}
_VERIFIED_GUARD = threading.Lock()


def checked_sha256(path: Path) -> str:
    """SHA-256 of an index file, hashed once per process for a file not changed since.

    A segment is written once and named by every later generation until merged;
    hashing it again at every commit's reopen would make opening a new generation
    cost the whole index. A file changed in place (same name, new size, time or
    inode) is hashed again.
    """
    key = file_identity(path)
    with _VERIFIED_GUARD:
        known = _VERIFIED.get(key)
    if known is None:
        known = sha256_file(path)
        with _VERIFIED_GUARD:
            _VERIFIED[key] = known
    return known


def check_file(path: Path, expected: str, *, verify: bool = True) -> None:
    """Raise ``IndexCorrupt`` if an index file is missing or (``verify``) fails its checksum."""
    if not path.is_file():
        raise IndexCorrupt(f"index file {path} is missing; {REBUILD}")
    if verify and checked_sha256(path) != expected:
        raise IndexCorrupt(f"index file {path} fails its checksum; {REBUILD}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexMissing(f"no index at {folder} (create one with: qa index PATH --index {folder})") from None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"{path} is unreadable ({exc}); {REBUILD}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found in UPGRADABLE:
            raise IndexOutdated(
                f"{folder} was built by an earlier version (index format {found}, this one reads "
                f"{FORMAT_VERSION}); bring it up to date with: qa index PATH --index {folder} "
                "(once, from what it stores)"
            )
        raise IndexCorrupt(
            f"{folder} holds index format {found!r}, this version reads {FORMAT_VERSION}; {REBUILD}"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorrupt(f"{path} is damaged ({problem}); {REBUILD}")
    return manifest


REBUILD = "rebuild it with: qa index PATH --index NEW_FOLDER"


def generation_of(folder: Path) -> int | None:
    try:
        return read_manifest(folder)["generation"]
    except StoreError:
        return None
LIVE_FILE = re.compile(r"live-\d+\.sqlite")
SEGMENT_FILES = {
    "catalog": re.compile(r"seg-\d+\.sqlite"),
    "passages": re.compile(r"seg-\d+-passages\.faiss"),
    "sentences": re.compile(r"seg-\d+-sentences\.faiss"),
}
_COUNTED = ("documents", "passages", "sentences")


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a manifest's shape, or None. Names must be plain files of this folder."""
    model, files, checksums, counts = (manifest.get(k) for k in ("model", "files", "checksums", "counts"))
    if not isinstance(manifest.get("generation"), int):
        return "no generation"
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return "no model name"
    if not all(isinstance(model.get(k), int) for k in ("dimension", "max_tokens")):
        return "no model dimension"
    if not isinstance(files, dict) or not isinstance(checksums, dict) or not isinstance(counts, dict):
        return "no file list"
    if not isinstance(files.get("live"), str) or not LIVE_FILE.fullmatch(files["live"]):
        return "bad live file name"
    if not isinstance(checksums.get("live"), str):
        return "no live checksum"
    if not all(isinstance(counts.get(k), int) for k in _COUNTED):
        return "no counts"
    next_ids = manifest.get("next_ids")
    if not isinstance(next_ids, dict) or not all(isinstance(next_ids.get(k), int) for k in _COUNTED):
        return "no next ids"
    if not isinstance(manifest.get("next_segment"), int):
        return "no next segment"
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        return "no segment list"
    for number, segment in enumerate(segments):
        problem = _segment_problem(segment)
        if problem:
            return f"segment {number}: {problem}"
    return None


def _segment_problem(segment) -> str | None:
    if not isinstance(segment, dict):
        return "not an object"
    files, checksums, ids, counts = (segment.get(k) for k in ("files", "checksums", "ids", "counts"))
    if not isinstance(files, dict) or not isinstance(checksums, dict):
        return "no file list"
    for key, pattern in SEGMENT_FILES.items():
        if not isinstance(files.get(key), str) or not pattern.fullmatch(files[key]):
            return f"bad {key} file name"
        if not isinstance(checksums.get(key), str):
            return f"no {key} checksum"
    if not isinstance(ids, dict) or not all(
        isinstance(ids.get(k), list) and len(ids[k]) == 2 and all(isinstance(v, int) for v in ids[k]) for k in _COUNTED
    ):
        return "no id ranges"
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in ("passages", "sentences")):
        return "no counts"
    return None


def check_model(manifest: dict, model: ModelInfo | str | None, folder) -> None:
    """Refuse to mix embedding models in one index."""
    if model is None:
        return
    name = canonical_model_name(model if isinstance(model, str) else model.name)
    stored = manifest["model"]["name"]
    if name != canonical_model_name(stored):
        raise ModelMismatch(
            f"index {folder} was built with model {stored!r}, not {name!r}; "
            f"use --model {stored!r} or another --index"
        )
    if not isinstance(model, str) and model.dimension != manifest["model"]["dimension"]:
        raise ModelMismatch(f"model {name!r} gives dimension {model.dimension}, index has {manifest['model']['dimension']}")


