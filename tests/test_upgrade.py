"""An index written by an earlier version (format 2, no token vectors; format 4, no OCR words)
is brought up to date from the texts it stores, with the same citations; a damaged one is
left as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from embeddings import VectorIndex
from qa import QA
from qa.cli import cli
from indexfiles import as_one_catalog
from qa.storage import FORMAT_VERSION, IndexCorrupt, IndexOutdated, read_manifest, sha256_file

pytestmark = pytest.mark.model

SEEDS = Path(__file__).resolve().parent / "articles"
KESTREL = "000_kestrel_bay_tidal_barrier.txt"


def _as_format(folder: Path, version: int) -> None:
    """Make a current index look as an earlier version wrote it: format 4 had no OCR words
    (nor a passage's OCR confidence), format 2 no token vectors either."""
    catalog = as_one_catalog(folder, version)
    if version >= 5:  # format 5 was the current tables in one catalog
        return
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    db = sqlite3.connect(catalog)
    db.execute("DROP TABLE ocr_words")
    db.execute("ALTER TABLE passages DROP COLUMN ocr_confidence")
    if version < 3:
        db.execute("DROP TABLE passage_tokens")
    db.commit()
    db.execute("VACUUM")
    db.close()
    manifest["format"] = version
    manifest["checksums"]["catalog"] = sha256_file(catalog)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture(params=[2, 4, 5], ids=["format-2", "format-4", "format-5"])
def old_index(request, tmp_path, real_embedder) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    shutil.copy(docs / KESTREL, docs / "copy of kestrel.txt")  # one content under two paths
    folder = tmp_path / "index"
    QA(folder, embedder=real_embedder).index([docs])
    _as_format(folder, request.param)
    return folder


def _citations(qa: QA) -> dict[str, list[tuple]]:
    snapshot = qa.snapshot()
    out = {}
    for doc in qa.documents():
        passages = snapshot.passages_of(doc.path)
        sentences = snapshot.sentences(p.id for p in passages)
        out[doc.path] = [
            (p.paragraph, p.window, p.start, p.end, p.page, p.section, [s[1:] for s in sentences[p.id]]) for p in passages
        ]
    return out


def test_an_outdated_index_says_how_to_bring_it_up_to_date(old_index, real_embedder):
    qa = QA(old_index, embedder=real_embedder)
    assert qa.outdated() and qa.exists()
    found = read_manifest_raw(old_index)["format"]
    with pytest.raises(IndexOutdated, match=rf"earlier version \(index format {found}, this one reads {FORMAT_VERSION}\).*qa index PATH"):
        qa.ask("How much will the barrier cost?")


def test_upgrade_keeps_the_citations_and_answers_of_a_new_index(old_index, real_embedder, tmp_path):
    qa = QA(old_index, embedder=real_embedder)
    before_files = set(p.name for p in old_index.iterdir())
    found = read_manifest_raw(old_index)["format"]
    old_files = {key: old_index / name for key, name in read_manifest_raw(old_index)["files"].items()}
    inodes = {key: path.stat().st_ino for key, path in old_files.items()}
    db = sqlite3.connect(old_files["catalog"])
    old_rows = db.execute("SELECT p.start, p.end, p.paragraph, p.text FROM passages p ORDER BY p.id").fetchall()
    db.close()

    report = qa.upgrade()

    assert not qa.outdated() and read_manifest(old_index)["format"] == FORMAT_VERSION
    assert sorted(report.updated) == sorted(d.path for d in qa.documents())
    if found in (4, 5):  # migrated (formats 5 and 6 only added to them), nothing embedded again
        assert report.passages_embedded == 0
        (segment,) = read_manifest(old_index)["segments"]
        linked = {key: (old_index / segment["files"][key]).stat().st_ino for key in inodes}
        # The vectors, and format 5's catalog, become the first segment as they are: linked, not copied.
        assert linked["passages"] == inodes["passages"] and linked["sentences"] == inodes["sentences"]
        assert (linked["catalog"] == inodes["catalog"]) == (found == 5)
    else:
        assert report.passages_embedded == len(old_rows)  # each stored passage once: the copy shares its content
    # The same documents, paths (the copy still names the same content), passages and sentences.
    fresh = QA(tmp_path / "fresh", embedder=real_embedder)
    fresh.index([old_index.parent / "docs"])
    assert _citations(qa) == _citations(fresh)
    copy = next(d for d in qa.documents() if d.path.endswith("copy of kestrel.txt"))
    assert copy.same_as and copy.same_as[0].endswith(KESTREL)
    # Every passage has its token vectors now, and hybrid ranks as on a new index.
    snapshot = qa.snapshot()
    ids = [p.id for d in qa.documents() for p in snapshot.passages_of(d.path)]
    assert set(snapshot.passage_tokens(ids)) == set(ids)
    for question in ("How much will the barrier cost?", "Who is Kostal's deputy?"):
        ours, theirs = qa.ask(question, k=3), fresh.ask(question, k=3)
        assert [(h.citation, round(h.score, 4)) for h in ours.hits] == [(h.citation, round(h.score, 4)) for h in theirs.hits]
    # The previous generation's files are gone; only the new one is left.
    after = set(p.name for p in old_index.iterdir())
    assert not (after & before_files - {"manifest.json", ".lock"})
    # Migrated vectors stay as the earlier version wrote them (float32) until ``qa compact``
    # writes the index again, in float16 as a new index keeps them, with the same answers.
    (segment,) = read_manifest(old_index)["segments"]
    stored = VectorIndex.load(old_index / segment["files"]["sentences"], real_embedder.dimension).stored
    assert stored == ("float32" if found in (4, 5) else "float16")
    qa.compact()
    (segment,) = read_manifest(old_index)["segments"]
    for key in ("passages", "sentences"):
        assert VectorIndex.load(old_index / segment["files"][key], real_embedder.dimension).stored == "float16"
    for question in ("How much will the barrier cost?", "Who is Kostal's deputy?"):
        ours, theirs = qa.ask(question, k=3), fresh.ask(question, k=3)
        assert [(h.citation, round(h.score, 4)) for h in ours.hits] == [(h.citation, round(h.score, 4)) for h in theirs.hits]


def read_manifest_raw(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_qa_index_on_an_outdated_index_upgrades_it_first(old_index, model):
    docs = old_index.parent / "docs"
    found = read_manifest_raw(old_index)["format"]
    result = CliRunner().invoke(cli, ["index", str(docs), "--index", str(old_index)])
    assert result.exit_code == 0, result.output
    assert "brought up to date, 3 documents and" in result.stderr
    assert ("and 0 passages embedded again" in result.stderr) == (found in (4, 5)), result.stderr
    assert "0 added, 0 updated, 3 unchanged" in result.stdout  # nothing left to embed after the upgrade
    assert read_manifest(old_index)["format"] == FORMAT_VERSION


def test_a_damaged_outdated_index_is_left_as_it_was(old_index, real_embedder):
    manifest = read_manifest_raw(old_index)
    catalog = old_index / manifest["files"]["catalog"]
    with open(catalog, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff" * 16)
    qa = QA(old_index, embedder=real_embedder)
    with pytest.raises(IndexCorrupt, match="fails its checksum; rebuild it with"):
        qa.upgrade()
    assert read_manifest_raw(old_index) == manifest
    assert sorted(p.name for p in old_index.iterdir()) == sorted([".lock", "manifest.json", *manifest["files"].values()])
