"""Bring an index written by an earlier version up to date, from what it stores.

The catalog of an older format (``qa.storage.UPGRADABLE``) holds every
document's extracted text, its paths and each passage's and sentence's range,
so nothing has to be read or split again: the passages are embedded again
(with what the current format keeps, such as the token vectors of
``qa.late``) and written as the next generation, which replaces the old one
in one commit like any other. Citations stay the same: same texts, same
ranges, same paragraph numbers. A format that the current one only adds to
(``qa.storage.MIGRATIONS``: format 4, before OCR; format 5, before segments)
needs no embedding at all: its catalog becomes the first segment (format 4's
copied with the new table and column added, format 5's linked as it is), its
vectors kept.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from qa.ingest import EMBED_GROUP, IndexReport, Pending, embed_and_store
from qa.read import ExtractedText
from qa.records import OcrWord, PassageSpan, Span
from qa.storage import MIGRATIONS, StoredPassage, Writer
from qa.storage.manifest import MANIFEST, REBUILD, IndexCorrupt, ModelInfo, sha256_file

logger = logging.getLogger(__name__)

def upgrade(folder: str | Path, model: ModelInfo, get_embedder) -> IndexReport:
    """Rewrite the index at ``folder`` in the current format; its documents in ``report.updated``.

    A format the current one only adds to (``qa.storage.MIGRATIONS``) is migrated on a copy
    of its catalog with its vectors kept: nothing is embedded (``passages_embedded`` 0).
    """
    folder = Path(folder)
    report = IndexReport()
    found = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format")
    if found in MIGRATIONS:
        # The writer opens the old generation checking every file's checksum: a damaged one is refused, nothing written.
        with Writer(folder, model, migrate=True) as writer:
            report.updated = sorted(writer.path_states())
        logger.info("brought %s up to date from format %s: %d documents, nothing embedded", folder, found,
                    len(report.updated))
        return report
    with Writer(folder, model, fresh=True) as writer:
        catalog = _old_catalog(folder)
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
        try:
            has_ocr = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ocr_words'").fetchone()
            pending, aliases = [], []
            for doc_id, sha, fmt, encoding, text in db.execute(
                "SELECT id, sha256, format, encoding, text FROM documents ORDER BY id"
            ):
                paths = db.execute(
                    "SELECT path, source, size, mtime_ns FROM paths WHERE doc_id = ? ORDER BY path", (doc_id,)
                ).fetchall()
                if not paths:
                    continue
                (path, source, size, mtime_ns), *others = paths
                passages = _passages(db, doc_id)
                extracted = ExtractedText(text, fmt, encoding, ocr_words=_ocr_words(db, doc_id, has_ocr))
                pending.append(Pending(path, source, sha, size, mtime_ns, extracted, passages))
                aliases += [(p, sha, s, z, m) for p, s, z, m in others]
                report.updated += [p[0] for p in paths]
                if sum(len(d.passages) for d in pending) >= EMBED_GROUP:
                    embed_and_store(pending, writer, get_embedder(), report)
                    pending = []
            if pending:
                embed_and_store(pending, writer, get_embedder(), report)
            for path, sha, source, size, mtime_ns in aliases:
                writer.add_alias(path, sha256=sha, source=source, size=size, mtime_ns=mtime_ns)
        except sqlite3.Error as exc:
            raise IndexCorrupt(f"cannot read the earlier index in {folder} ({exc}); {REBUILD}") from exc
        finally:
            db.close()
    logger.info("brought %s up to date: %d documents, %d passages embedded", folder, len(report.updated),
                report.passages_embedded)
    return report


def _old_catalog(folder: Path) -> Path:
    """The live catalog the outdated manifest names, checked against its checksum."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    try:
        catalog = folder / manifest["files"]["catalog"]
        expected = manifest["checksums"]["catalog"]
    except (KeyError, TypeError):
        raise IndexCorrupt(f"{folder / MANIFEST} names no catalog; {REBUILD}") from None
    if catalog.parent != folder or not catalog.is_file() or sha256_file(catalog) != expected:
        raise IndexCorrupt(f"index file {catalog} is missing or fails its checksum; {REBUILD}")
    return catalog


def _ocr_words(db: sqlite3.Connection, doc_id: int, has_ocr) -> tuple[OcrWord, ...]:
    """The words OCR read, kept from a format that has them (5 on): OCR is not run again."""
    if not has_ocr:
        return ()
    rows = db.execute(
        "SELECT page, line, start, end, confidence, x0, y0, x1, y1 FROM ocr_words WHERE doc_id = ? ORDER BY start",
        (doc_id,),
    )
    return tuple(OcrWord(*row) for row in rows)


def _passages(db: sqlite3.Connection, doc_id: int) -> list[StoredPassage]:
    rows = db.execute(
        "SELECT id, seq, paragraph, window, windows, start, end, page, section FROM passages "
        "WHERE doc_id = ? ORDER BY seq, window",
        (doc_id,),
    ).fetchall()
    sentences: dict[int, list[Span]] = {}
    for pid, s_start, s_end in db.execute(
        "SELECT s.passage_id, s.start, s.end FROM sentences s JOIN passages p ON p.id = s.passage_id "
        "WHERE p.doc_id = ? ORDER BY s.id",
        (doc_id,),
    ):
        sentences.setdefault(pid, []).append(Span(s_start, s_end))
    out = []
    for pid, seq, paragraph, window, windows, start, end, page, section in rows:
        span = PassageSpan(
            paragraph=seq, window=window, windows=windows, start=start, end=end, sentences=tuple(sentences.get(pid, ()))
        )
        out.append(StoredPassage(span=span, paragraph=paragraph, page=page, section=section))
    return out
