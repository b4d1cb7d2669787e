"""Writing segments from other files: a merge of neighbouring segments, and a one-catalog index migrated.

Both write only new files, beside the live generation, for the writer's commit
to name; neither changes a file the live manifest names, so a crash at any
point leaves the previous generation as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings import VectorIndex
from qa.storage.manifest import StoreError, check_file, sha256_file
from qa.storage.segments import (
    COUNTED,
    LIVE_SCHEMA,
    OCR_WORDS_SCHEMA,
    copy_live_rows,
    create_segment,
    id_ranges,
    removed_ids,
    segment_files,
)

logger = logging.getLogger(__name__)

# Earlier formats that the current one only adds to, and the SQL that brings one's
# single catalog up to date: nothing stored changes meaning, so such an index is
# migrated with no embedding (``qa.upgrade``): its catalog becomes the first segment
# (copied when SQL must change it, else linked, as its vector files are) and its
# paths the live catalog. Format 4 read no scans, so its passages have no OCR
# confidence and its documents no OCR words; format 5 differs only in being one catalog.
MIGRATIONS = {4: "ALTER TABLE passages ADD COLUMN ocr_confidence REAL;" + OCR_WORDS_SCHEMA, 5: ""}


def merge(
    db: sqlite3.Connection,
    folder: Path,
    run: list[dict],
    schemas: list[str],
    number: int,
    fresh: dict[str, VectorIndex],
    dimension: int,
) -> tuple[dict, dict[str, Path], list[Path]]:
    """One segment (numbered ``number``) of the live documents of neighbouring segments ``run``.

    ``db`` is the writer's connection, the segments attached to it as ``schemas``;
    a segment without checksums is the one this commit writes, its vectors in
    ``fresh`` (the writer checked every committed segment's files when it began).
    Returns the new segment's manifest entry, its files, and the files
    of the merged committed segments (to delete once the commit is made).
    """
    names = segment_files(number)
    paths = {key: folder / name for key, name in names.items()}
    create_segment(paths["catalog"], {t: 1 for t in COUNTED})
    db.execute("ATTACH DATABASE ? AS merged", (str(paths["catalog"]),))
    removed_passages, removed_sentences = removed_ids(db)
    excluded = {"passages": np.asarray(removed_passages, np.int64), "sentences": np.asarray(removed_sentences, np.int64)}
    for schema in schemas:
        copy_live_rows(db, schema, "merged")
    db.execute("INSERT INTO merged.passages_fts(passages_fts) VALUES('rebuild')")
    for schema in schemas:
        db.execute(f"DELETE FROM main.removed WHERE doc_id IN (SELECT id FROM {schema}.documents)")
    db.commit()
    stored = {t: db.execute(f"SELECT COUNT(*) FROM merged.{t}").fetchone()[0] for t in ("passages", "sentences")}
    db.execute("DETACH DATABASE merged")
    for kind in ("passages", "sentences"):
        vectors = VectorIndex(dimension)
        for segment in run:
            source = fresh[kind] if "checksums" not in segment else VectorIndex.load(folder / segment["files"][kind],
                                                                                    dimension)
            for ids, rows in source.chunks():
                keep = ~np.isin(ids, excluded[kind])
                vectors.add(ids[keep], rows[keep])
        if len(vectors) != stored[kind]:
            raise StoreError("internal error: merged vector and catalog counts differ; nothing was committed")
        vectors.save(paths[kind])
    fsync_file(paths["catalog"])
    away = [folder / name for segment in run if "checksums" in segment for name in segment["files"].values()]
    ranges = {t: [min(s["ids"][t][0] for s in run if s["ids"][t][1] >= 0), max(s["ids"][t][1] for s in run)]
              for t in COUNTED}
    logger.info("merged %d segments into segment %d (%d passages)", len(run), number, stored["passages"])
    return {"number": number, "files": names, "ids": ranges, "counts": stored}, paths, away


@dataclass(frozen=True)
class Migrated:
    segments: list[dict]
    next_ids: dict[str, int]
    next_segment: int
    counts: dict[str, int]
    files: dict[str, Path]  # written for the commit: deleted if it never comes


def migrate(folder: Path, manifest: dict, live: Path) -> Migrated:
    """Make an outdated one-catalog generation the first segment, its paths the live catalog ``live``."""
    old = {key: folder / manifest["files"][key] for key in ("catalog", "passages", "sentences")}
    for key, path in old.items():
        check_file(path, manifest["checksums"][key])
    number = 1
    names = segment_files(number)
    targets = {key: folder / name for key, name in names.items()}
    written = {f"migrated-{key}": path for key, path in targets.items()}
    sql = MIGRATIONS[manifest["format"]]
    if sql:  # the catalog changes: on a copy
        source = sqlite3.connect(f"file:{old['catalog']}?mode=ro", uri=True)
        target = sqlite3.connect(targets["catalog"])
        try:
            source.backup(target)
            target.executescript(sql)
            target.commit()
        finally:
            source.close()
            target.close()
    else:
        _link(old["catalog"], targets["catalog"])
    _link(old["passages"], targets["passages"])
    _link(old["sentences"], targets["sentences"])
    db = sqlite3.connect(live)
    try:
        db.executescript(LIVE_SCHEMA)
        db.execute("ATTACH DATABASE ? AS s0", (str(targets["catalog"]),))
        db.execute("INSERT INTO main.paths SELECT path, doc_id, source, size, mtime_ns, indexed_at FROM s0.paths")
        db.commit()
        ranges = id_ranges(db, "s0")
        stored = {t: db.execute(f"SELECT COUNT(*) FROM s0.{t}").fetchone()[0] for t in ("passages", "sentences")}
    finally:
        db.close()
    # A linked file is the old one: its checksum, checked above, is its own.
    checksums = {key: sha256_file(path) if (key == "catalog" and sql) else manifest["checksums"][key]
                 for key, path in targets.items()}
    segment = {"number": number, "files": names, "ids": ranges, "counts": stored, "checksums": checksums}
    next_ids = {t: ranges[t][1] + 1 if ranges[t][1] >= 0 else 1 for t in COUNTED}
    return Migrated([segment], next_ids, number + 1, dict(stored), written)


def _link(source: Path, target: Path) -> None:
    """``target`` as a second name of ``source`` (a file never written again), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        fsync_file(target)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
