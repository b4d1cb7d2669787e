"""The files of an index folder by role, for tests that damage, count or rewrite them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qa.storage import sha256_file


def manifest_of(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text(encoding="utf-8"))


def index_file(index: Path, key: str, segment: int = -1) -> Path:
    """``manifest``, ``live`` (the live catalog), or a segment's ``catalog``, ``passages`` or
    ``sentences`` (the last segment's unless told)."""
    if key == "manifest":
        return index / "manifest.json"
    m = manifest_of(index)
    if key == "live":
        return index / m["files"]["live"]
    return index / m["segments"][segment]["files"][key]


def generation_names(index: Path) -> list[str]:
    """Every file the folder should hold for its committed generation, lock and manifest included."""
    m = manifest_of(index)
    names = [".lock", "manifest.json", *m["files"].values()]
    for segment in m["segments"]:
        names += segment["files"].values()
    return sorted(names)


def catalog_counts(index: Path) -> dict[str, int]:
    """Live rows of the whole generation: paths, and passages and sentences of documents not removed."""
    m = manifest_of(index)
    db = sqlite3.connect(index_file(index, "live"))
    try:
        counts = {"documents": db.execute("SELECT COUNT(*) FROM paths").fetchone()[0], "passages": 0, "sentences": 0}
        for number, segment in enumerate(m["segments"]):
            db.execute(f"ATTACH DATABASE ? AS s{number}", (str(index / segment["files"]["catalog"]),))
            alive = f"FROM s{number}.passages p WHERE p.doc_id NOT IN (SELECT doc_id FROM main.removed)"
            counts["passages"] += db.execute(f"SELECT COUNT(*) {alive}").fetchone()[0]
            counts["sentences"] += db.execute(
                f"SELECT COUNT(*) FROM s{number}.sentences WHERE passage_id IN (SELECT p.id {alive})"
            ).fetchone()[0]
        return counts
    finally:
        db.close()


def as_one_catalog(index: Path, version: int = 5) -> Path:
    """Rewrite a one-segment index as versions before segments wrote it: one catalog
    (the segment's tables and the paths) named by the manifest beside two vector files
    of float32 vectors. Returns the catalog."""
    m = manifest_of(index)
    (segment,) = m["segments"]
    generation = m["generation"]
    catalog = index / f"catalog-{generation}.sqlite"
    (index / segment["files"]["catalog"]).rename(catalog)
    db = sqlite3.connect(catalog)
    db.execute("ATTACH DATABASE ? AS live", (str(index / m["files"]["live"]),))
    db.execute("CREATE TABLE paths (path TEXT PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id), "
               "source TEXT, size INTEGER, mtime_ns INTEGER, indexed_at REAL NOT NULL)")
    db.execute("CREATE INDEX paths_doc ON paths(doc_id)")
    db.execute("INSERT INTO paths SELECT * FROM live.paths")
    db.commit()
    db.execute("DETACH DATABASE live")
    db.close()
    (index / m["files"]["live"]).unlink()
    files = {"catalog": catalog.name}
    for key in ("passages", "sentences"):
        name = f"{key}-{generation}.faiss"
        as_float32(index / segment["files"][key], index / name)
        (index / segment["files"][key]).unlink()
        files[key] = name
    old = {
        "format": version, "generation": generation, "model": m["model"], "settings": m["settings"],
        "counts": m["counts"], "files": files,
        "checksums": {key: sha256_file(index / name) for key, name in files.items()},
        "committed_at": m["committed_at"],
    }
    (index / "manifest.json").write_text(json.dumps(old), encoding="utf-8")
    return catalog


def as_float32(source: Path, target: Path) -> None:
    """Write the vectors of ``source`` as versions before float16 stored them (``IndexFlatIP``)."""
    import faiss
    import numpy as np

    index = faiss.read_index(str(source))
    inner = faiss.downcast_index(index.index)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(index.d))
    if len(ids):
        old.add_with_ids(inner.reconstruct_n(0, len(ids)), ids)
    faiss.write_index(old, str(target))
