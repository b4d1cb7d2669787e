"""The index folder through the library API, with the fake embedder: commits, updates,
corruption, locking, model checks, unreadable files, encodings and hostile questions."""

from __future__ import annotations

import codecs
import json
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest

from conftest import CORPUS
from indexfiles import catalog_counts, generation_names, index_file
from fakes import FakeEmbedder
from qa import QA, CitationError, IndexCorrupt, IndexLocked, IndexMissing, ModelMismatch, QueryError
from qa.storage import ModelInfo, Writer, open_snapshot

FAKE = ModelInfo("fake-hash", 64, 32)
NAMES = sorted(f"docs/{name}" for name in CORPUS)


def manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text(encoding="utf-8"))


def live_file(index: Path, key: str) -> Path:
    """The live catalog (``live``), or the last segment's ``catalog``, ``passages`` or ``sentences``."""
    return index_file(index, key)


def folder_state(index: Path) -> dict[str, bytes]:
    """Every file of the index folder and its bytes (the lock file is empty)."""
    return {p.name: p.read_bytes() for p in sorted(index.iterdir())}


def all_passages(qa: QA) -> dict[str, list]:
    snap = qa.snapshot()
    return {d.path: snap.passages_of(d.path) for d in snap.documents()}


def text_of(qa: QA, doc: str) -> str:
    return qa.snapshot().document_text(doc)


def assert_passages_are_exact(qa: QA) -> None:
    snap = qa.snapshot()
    for doc in snap.documents():
        text = snap.document_text(doc.path)
        passages = snap.passages_of(doc.path)
        assert passages and len(passages) == doc.passages
        for p in passages:
            assert text[p.start : p.end] == p.text


@pytest.fixture
def indexed(fake_qa, corpus):
    report = fake_qa.index([corpus])
    assert sorted(report.added) == NAMES
    return fake_qa


# -- round trip -------------------------------------------------------------------------


def test_round_trip_through_a_fresh_qa(indexed, corpus):
    index = indexed.index_dir
    fresh = QA(index)  # no model given or loaded: reading needs none
    assert fresh.documents() == indexed.documents()
    assert [d.path for d in fresh.documents()] == NAMES
    assert all_passages(fresh) == all_passages(indexed)
    assert_passages_are_exact(fresh)
    snap = fresh.snapshot()
    for name, text in CORPUS.items():
        assert snap.document_text(f"docs/{name}") == text
        for p in snap.passages_of(f"docs/{name}"):
            assert (corpus / name).read_text(encoding="utf-8")[p.start : p.end] == p.text


def test_long_paragraph_is_stored_as_windows(indexed):
    windows = indexed.snapshot().passages_of("docs/sub/gamma.txt", 1)
    assert len(windows) > 1
    assert [w.window for w in windows] == list(range(1, len(windows) + 1))
    text = indexed.snapshot().document_text("docs/sub/gamma.txt")
    paragraph = text.split("\n\n")[0]
    assert windows[0].start == 0 and windows[-1].end == len(paragraph)


def test_manifest_counts_match_catalog_and_vectors(indexed):
    index = indexed.index_dir
    m = manifest(index)
    assert m["generation"] == 1
    assert m["model"] == {"name": "fake-hash", "dimension": 64, "max_tokens": 32}
    assert len(m["segments"]) == 1
    counts = catalog_counts(index)
    with sqlite3.connect(live_file(index, "catalog")) as db:
        assert db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == counts["documents"]
        fts = db.execute("SELECT COUNT(*) FROM passages_fts WHERE passages_fts MATCH 'gates'").fetchone()[0]
    assert counts == m["counts"]
    assert counts["documents"] == len(CORPUS)
    assert counts["sentences"] >= counts["passages"] > counts["documents"]
    assert fts >= 1
    assert faiss.read_index(str(live_file(index, "passages"))).ntotal == counts["passages"]
    assert faiss.read_index(str(live_file(index, "sentences"))).ntotal == counts["sentences"]
    assert sum(d.passages for d in indexed.documents()) == counts["passages"]


def test_ask_cites_exact_text(indexed):
    answer = indexed.ask("When are the barrier gates tested?", k=3)
    assert answer.hits
    top = answer.hits[0]
    assert top.passage.doc == "docs/alpha.txt"
    assert top.highlight == "Engineers tested the gates every spring."
    text = indexed.snapshot().document_text(top.passage.doc)
    for hit in answer.hits:
        assert text_of(indexed, hit.passage.doc)[hit.passage.start : hit.passage.end] == hit.passage.text
        assert hit.passage.start <= hit.highlight_start < hit.highlight_end <= hit.passage.end
    assert text[top.highlight_start : top.highlight_end] == top.highlight


# -- updates -----------------------------------------------------------------------------


def test_reindexing_an_unchanged_folder_embeds_nothing_and_commits_nothing(indexed, corpus, fake_embedder):
    before = folder_state(indexed.index_dir)
    encoded = len(fake_embedder.encoded)
    report = indexed.index([corpus])
    assert report.passages_embedded == 0 and report.sentences_embedded == 0
    assert sorted(report.unchanged) == NAMES
    assert not report.added and not report.updated and not report.removed
    assert len(fake_embedder.encoded) == encoded
    assert manifest(indexed.index_dir)["generation"] == 1
    assert folder_state(indexed.index_dir) == before


def test_changing_one_file_reembeds_only_that_file(indexed, corpus, fake_embedder):
    old = all_passages(indexed)
    (corpus / "beta.md").write_text("# Orchard notes\n\nPlums are grafted in April.\n", encoding="utf-8")
    fake_embedder.encoded.clear()
    report = indexed.index([corpus])
    assert report.updated == ["docs/beta.md"]
    assert sorted(report.unchanged) == ["docs/alpha.txt", "docs/sub/gamma.txt"]
    assert report.passages_embedded == 1  # the heading is the section, not a passage
    assert all("Plums" in t for t in fake_embedder.encoded)
    assert manifest(indexed.index_dir)["generation"] == 2
    new = all_passages(indexed)
    assert new["docs/alpha.txt"] == old["docs/alpha.txt"]  # same ids, offsets and text
    assert new["docs/sub/gamma.txt"] == old["docs/sub/gamma.txt"]
    assert [p.text for p in new["docs/beta.md"]] == ["Plums are grafted in April."]
    assert not {p.id for p in new["docs/beta.md"]} & {p.id for p in old["docs/beta.md"]}
    assert_passages_are_exact(indexed)
    assert indexed.ask("When are plums grafted?").hits[0].passage.doc == "docs/beta.md"
    # the old text is gone from the lexical index too
    answer = indexed.ask("cherries ripen June", retriever="lexical")
    assert all(h.passage.doc != "docs/beta.md" for h in answer.hits)
    # the commit wrote a live catalog and a segment of the new text; the first segment is
    # untouched, the previous live catalog removed
    assert sorted(p.name for p in indexed.index_dir.iterdir()) == generation_names(indexed.index_dir)
    assert [s["number"] for s in manifest(indexed.index_dir)["segments"]] == [1, 2]
    assert not (indexed.index_dir / "live-1.sqlite").exists()


def test_deleting_a_file_removes_its_document(indexed, corpus):
    (corpus / "alpha.txt").unlink()
    report = indexed.index([corpus])
    assert report.removed == ["docs/alpha.txt"]
    assert [d.path for d in indexed.documents()] == ["docs/beta.md", "docs/sub/gamma.txt"]
    m = manifest(indexed.index_dir)
    assert m["counts"]["documents"] == 2
    assert m["counts"]["passages"] == sum(d.passages for d in indexed.documents())
    for retriever in ("hybrid", "lexical", "dense"):
        answer = indexed.ask("Kestrel Bay tidal barrier gates", retriever=retriever, k=20)
        assert all(h.passage.doc != "docs/alpha.txt" for h in answer.hits)


def test_indexing_one_file_does_not_prune_the_rest(indexed, corpus):
    (corpus / "beta.md").unlink()
    report = indexed.index([corpus / "alpha.txt"], prune=True)
    assert not report.removed  # only folders given are pruned
    assert set(NAMES) <= {d.path for d in indexed.documents()}


def test_remove_documents(indexed):
    assert indexed.remove(["alpha.txt"]) == ["docs/alpha.txt"]
    assert [d.path for d in indexed.documents()] == ["docs/beta.md", "docs/sub/gamma.txt"]
    assert manifest(indexed.index_dir)["generation"] == 2
    assert manifest(indexed.index_dir)["counts"]["passages"] == sum(d.passages for d in indexed.documents())
    answer = indexed.ask("tidal barrier", retriever="lexical")
    assert answer.hits == ()
    with pytest.raises(CitationError):
        indexed.remove(["no-such-document.txt"])
    assert manifest(indexed.index_dir)["generation"] == 2


# -- damaged or missing indexes ------------------------------------------------------------


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("key", ["catalog", "passages", "sentences"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_file_is_detected_on_open(indexed, key, damage):
    path = live_file(indexed.index_dir, key)
    if damage == "flip":
        flip_byte(path, path.stat().st_size // 2)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexCorrupt):
        QA(indexed.index_dir).documents()
    with pytest.raises(IndexCorrupt):
        QA(indexed.index_dir, embedder=FakeEmbedder()).ask("tidal barrier")
    # a writer refuses to build on it rather than silently starting over
    with pytest.raises(IndexCorrupt):
        QA(indexed.index_dir, embedder=FakeEmbedder()).index([])


@pytest.mark.parametrize("key", ["passages", "sentences"])
def test_truncated_vectors_are_detected_even_without_checksums(indexed, key):
    path = live_file(indexed.index_dir, key)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IndexCorrupt):
        open_snapshot(indexed.index_dir, verify=False)


def test_missing_index_file_is_corrupt(indexed):
    live_file(indexed.index_dir, "sentences").unlink()
    with pytest.raises(IndexCorrupt):
        QA(indexed.index_dir).documents()


@pytest.mark.parametrize("content", ["", "{not json", '{"format": 99}', "[1, 2"])
def test_unreadable_manifest_is_corrupt(indexed, content):
    (indexed.index_dir / "manifest.json").write_text(content, encoding="utf-8")
    with pytest.raises(IndexCorrupt):
        QA(indexed.index_dir).documents()


def test_counts_that_disagree_with_the_vectors_are_corrupt(indexed):
    index = indexed.index_dir
    m = manifest(index)
    m["counts"]["passages"] += 1
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(IndexCorrupt):
        QA(index).documents()


def test_missing_index(tmp_path):
    with pytest.raises(IndexMissing):
        QA(tmp_path / "nowhere").documents()
    with pytest.raises(IndexMissing):
        QA(tmp_path / "nowhere", embedder=FakeEmbedder()).ask("anything at all")
    # a folder of files without a manifest (a first commit that never finished) is no index
    half = tmp_path / "half"
    half.mkdir()
    (half / "catalog-1.sqlite").write_bytes(b"partial")
    with pytest.raises(IndexMissing):
        QA(half).documents()


# -- writers -------------------------------------------------------------------------------


def test_second_writer_is_locked_out(indexed, corpus):
    index = indexed.index_dir
    with Writer(index, FAKE) as first:
        with pytest.raises(IndexLocked):
            Writer(index, FAKE).__enter__()
        with pytest.raises(IndexLocked):
            QA(index, embedder=FakeEmbedder()).index([corpus])
        first.remove_document("docs/alpha.txt")
        # readers are not blocked and still see the committed generation
        assert len(QA(index).documents()) == len(CORPUS)
    assert len(QA(index).documents()) == len(CORPUS) - 1
    with Writer(index, FAKE):  # the lock was released
        pass


def test_exception_inside_writer_leaves_previous_generation(indexed):
    index = indexed.index_dir
    before = folder_state(index)
    with pytest.raises(RuntimeError, match="boom"):
        with Writer(index, FAKE) as writer:
            assert writer.generation == 2
            writer.remove_document("docs/alpha.txt")
            writer.remove_document("docs/beta.md")
            assert (index / "live-2.sqlite").exists() and (index / "seg-2.sqlite").exists()
            raise RuntimeError("boom")
    assert folder_state(index) == before  # nothing new left behind, nothing changed
    assert [d.path for d in QA(index).documents()] == NAMES
    assert_passages_are_exact(QA(index))
    with Writer(index, FAKE) as writer:  # not locked, and still generation 2 next
        assert writer.generation == 2
        writer.discard()


def test_failed_embedding_leaves_previous_generation(indexed, corpus):
    class Failing(FakeEmbedder):
        def encode(self, texts, batch_size=32, progress=False):
            raise RuntimeError("model crashed")

    index = indexed.index_dir
    before = folder_state(index)
    (corpus / "alpha.txt").write_text("Completely new text about gates.\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="model crashed"):
        QA(index, embedder=Failing()).index([corpus])
    assert folder_state(index) == before
    assert QA(index).snapshot().document_text("docs/alpha.txt") == CORPUS["alpha.txt"]


def test_files_of_a_crashed_writer_are_cleaned_up(indexed, corpus):
    index = indexed.index_dir
    for name in ("live-2.sqlite", "seg-2.sqlite", "seg-2-passages.faiss", "seg-2-sentences.faiss",
                 "seg-7.sqlite-journal", "catalog-2.sqlite", "manifest.json.999.tmp"):
        (index / name).write_bytes(b"left by a crash")
    assert [d.path for d in QA(index).documents()] == NAMES  # strays do not disturb readers
    (corpus / "alpha.txt").write_text("New words.\n", encoding="utf-8")
    indexed.index([corpus])
    names = sorted(p.name for p in index.iterdir())
    assert names == generation_names(index)
    assert names == [".lock", "live-2.sqlite", "manifest.json", "seg-1-passages.faiss", "seg-1-sentences.faiss",
                     "seg-1.sqlite", "seg-2-passages.faiss", "seg-2-sentences.faiss", "seg-2.sqlite"]
    assert QA(index).snapshot().document_text("docs/alpha.txt") == "New words.\n"


# -- models --------------------------------------------------------------------------------


def test_other_model_is_refused_for_searching(indexed):
    with pytest.raises(ModelMismatch):
        QA(indexed.index_dir, model="other-model").ask("tidal barrier")
    with pytest.raises(ModelMismatch):
        QA(indexed.index_dir, embedder=FakeEmbedder(name="other-model")).ask("tidal barrier")
    assert QA(indexed.index_dir, model="fake-hash").documents() == indexed.documents()


@pytest.mark.parametrize(
    "qa_args",
    [
        {"model": "other-model"},
        {"embedder": FakeEmbedder(name="other-model")},
        {"embedder": FakeEmbedder(dimension=32)},  # same name, different vectors
    ],
    ids=["model-name", "embedder-name", "dimension"],
)
def test_other_model_is_refused_for_extending(indexed, corpus, qa_args):
    before = folder_state(indexed.index_dir)
    (corpus / "extra.txt").write_text("Another document to add.\n", encoding="utf-8")
    with pytest.raises(ModelMismatch):
        QA(indexed.index_dir, **qa_args).index([corpus])
    with pytest.raises(ModelMismatch):
        with Writer(indexed.index_dir, ModelInfo("other-model", 64, 32)):
            pass
    assert folder_state(indexed.index_dir) == before


# -- files that cannot be read, and encodings ------------------------------------------------


def test_unreadable_files_are_skipped_and_the_rest_indexed(fake_qa, corpus, tmp_path):
    (corpus / "empty.txt").write_bytes(b"")
    (corpus / "blank.md").write_text(" \n\n\t\n", encoding="utf-8")
    (corpus / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (corpus / "ignored.xyz").write_bytes(b"an unknown type is not looked at inside a folder")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    explicit = tmp_path / "notes.rtf"
    explicit.write_bytes(b"{\\rtf1 not a supported type}")
    report = fake_qa.index([corpus, explicit, tmp_path / "missing-folder"])
    assert sorted(report.added) == NAMES
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"empty.txt", "blank.md", "binary.txt", "broken.pdf", "notes.rtf", "missing-folder"}
    assert "empty" in reasons["empty.txt"] and "empty" in reasons["blank.md"]
    assert "binary" in reasons["binary.txt"]
    assert "PDF" in reasons["broken.pdf"]
    assert "unsupported" in reasons["notes.rtf"] and ".rtf" in reasons["notes.rtf"]
    assert "no such" in reasons["missing-folder"]
    assert [d.path for d in fake_qa.documents()] == NAMES


def test_only_unreadable_files_create_no_index(fake_qa, tmp_path):
    """A run that indexed nothing (a typo'd path, an empty file) must not leave an empty index behind."""
    (tmp_path / "empty.txt").write_bytes(b"")
    report = fake_qa.index([tmp_path / "empty.txt", tmp_path / "typo.txt"])
    assert sorted(s.reason for s in report.skipped) == ["file is empty", "no such file or folder"]
    assert not fake_qa.exists()
    with pytest.raises(IndexMissing):
        fake_qa.documents()


def test_empty_folder_creates_an_empty_index(fake_qa, tmp_path):
    (tmp_path / "nothing").mkdir()
    report = fake_qa.index([tmp_path / "nothing"])
    assert report.skipped == []
    assert fake_qa.documents() == []
    assert fake_qa.ask("anything").hits == ()


@pytest.mark.parametrize(
    "data",
    [
        codecs.BOM_UTF16_LE + "Zürich café — “quoted” 日本語.\n\nSecond ¶.\n".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "Zürich café — “quoted” 日本語.\n\nSecond ¶.\n".encode("utf-16-be"),
        codecs.BOM_UTF8 + "Zürich café — “quoted” 日本語.\n\nSecond ¶.\n".encode("utf-8"),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-8-sig"],
)
def test_bom_files_decode(fake_qa, tmp_path, data):
    path = tmp_path / "bom.txt"
    path.write_bytes(data)
    fake_qa.index([path])
    text = fake_qa.snapshot().document_text("bom.txt")
    assert text == "Zürich café — “quoted” 日本語.\n\nSecond ¶.\n"
    assert [p.text for p in fake_qa.snapshot().passages_of("bom.txt")] == ["Zürich café — “quoted” 日本語.", "Second ¶."]
    assert_passages_are_exact(fake_qa)


CP1252_GERMAN = "Die Straße in München ist schön. Über die Brücke gehen wir zum Fluss. Grüße aus Köln.\n" * 3
CP1252_QUOTES = "He said “hello” and left.\n\nShe replied “goodbye” – then walked away…\n"
CP1252_FRENCH = (
    "Les élèves étaient à l’école. Il était déjà très tard, et la fenêtre était fermée. "
    "Où êtes-vous allés ? Ça va très bien, merci.\n"
) * 3


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(CP1252_GERMAN, id="german"),
        pytest.param(CP1252_QUOTES, id="smart-quotes"),
        pytest.param(CP1252_FRENCH, id="french"),
        pytest.param("Crème brûlée, naïve café — £5 à emporter.\n" * 3, id="french-pounds"),
    ],
)
def test_cp1252_file_decodes(fake_qa, tmp_path, text):
    path = tmp_path / "legacy.txt"
    path.write_bytes(text.encode("cp1252"))
    fake_qa.index([path])
    assert fake_qa.snapshot().document_text("legacy.txt") == text
    assert_passages_are_exact(fake_qa)


def test_crlf_file_keeps_exact_offsets(fake_qa, tmp_path):
    text = "First line\r\nsame paragraph.\r\n\r\nSecond paragraph.\r\n"
    path = tmp_path / "dos.txt"
    path.write_bytes(text.encode("utf-8"))
    fake_qa.index([path])
    assert fake_qa.snapshot().document_text("dos.txt") == text
    assert [p.text for p in fake_qa.snapshot().passages_of("dos.txt")] == [
        "First line\r\nsame paragraph.",
        "Second paragraph.",
    ]


def test_file_that_becomes_unreadable_is_not_served_with_old_text(indexed, corpus):
    (corpus / "alpha.txt").write_bytes(b"")
    report = indexed.index([corpus])
    assert [Path(s.path).name for s in report.skipped] == ["alpha.txt"]
    assert "docs/alpha.txt" not in [d.path for d in indexed.documents()]


# -- questions -------------------------------------------------------------------------------

HOSTILE = [
    '"',
    '""',
    '"gates',
    "NEAR",
    "AND",
    "OR NOT AND",
    "*",
    "gates*",
    ":",
    "text:gates",
    "passages_fts:gates",
    "^gates",
    "NEAR(tidal barrier, 2)",
    "(gates",
    "gates)",
    "'; DROP TABLE passages; --",
    "gates\x00tidal\x07\x1b[31m",
    "\x00\x01\x02 gates",
    "-gates +barrier",
    "{text}: gates",
    "_",
    "gate's \"barrier\" AND (NEAR OR *)",
    "\u202egates\u200b",
    "gates " * 3000,
]


@pytest.mark.parametrize("retriever", ["hybrid", "lexical", "dense"])
def test_fts_hostile_questions_never_leak_sqlite_errors(indexed, retriever):
    for question in HOSTILE:
        try:
            answer = indexed.ask(question, retriever=retriever)
        except QueryError:
            continue
        except sqlite3.Error as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"{question!r} raised {exc!r}")
        for hit in answer.hits:
            assert text_of(indexed, hit.passage.doc)[hit.passage.start : hit.passage.end] == hit.passage.text
        if "gates" in question:
            assert answer.hits and answer.hits[0].passage.doc == "docs/alpha.txt", question
    assert [d.path for d in indexed.documents()] == NAMES  # the catalog is intact


@pytest.mark.parametrize("question", ["", " ", "\n\t \r\n", "\x00\x01\x1f", "\u200b\u202e"])
def test_empty_question_is_refused(indexed, question):
    with pytest.raises(QueryError):
        indexed.ask(question)


def test_question_that_is_not_text_is_refused(indexed):
    with pytest.raises(QueryError):
        indexed.ask(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("k,retriever", [(0, "hybrid"), (-3, "dense"), (5, "magic")])
def test_bad_search_options_are_query_errors(indexed, k, retriever):
    with pytest.raises(QueryError):
        indexed.ask("tidal barrier", k=k, retriever=retriever)


# -- vectors line up with the text they were made from ------------------------------------------


def assert_vectors_match_text(qa: QA) -> None:
    """Each stored passage and sentence vector is the embedding of exactly that text."""
    snap = qa.snapshot()
    fake = FakeEmbedder()
    for doc in snap.documents():
        text = snap.document_text(doc.path)
        passages = snap.passages_of(doc.path)
        ids = [p.id for p in passages]
        stored = snap.passage_vectors.vectors(ids)
        # A passage under a heading is embedded with the heading as context; without
        # headings, the document's first paragraph is when it is one sentence on one line.
        first = passages[0]
        title = (
            first.text
            if first.windows == 1 and "\n" not in first.text.strip() and len(first.text) <= 300
            and len(snap.sentences([first.id])[first.id]) == 1
            else None
        )
        contexts = [p.section or (title if p.seq != first.seq else None) for p in passages]
        expected = fake.encode([f"{c}\n{p.text}" if c else p.text for c, p in zip(contexts, passages)])
        assert abs(stored - in_float16(expected)).max() < 1e-6, doc.path  # as the index keeps them
        sentences = snap.sentences(ids)
        for p in passages:
            assert sentences[p.id], (doc.path, p.paragraph)
            s_ids = [s[0] for s in sentences[p.id]]
            s_texts = [text[s[1] : s[2]] for s in sentences[p.id]]
            assert all(p.start <= s[1] < s[2] <= p.end for s in sentences[p.id])
            stored = snap.sentence_vectors.vectors(s_ids)
            assert abs(stored - in_float16(fake.encode(s_texts))).max() < 1e-6, (doc.path, p.paragraph)


def in_float16(vectors) -> np.ndarray:
    return np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)


def test_vectors_match_their_text(indexed, corpus):
    assert_vectors_match_text(indexed)
    (corpus / "beta.md").write_text("One. Two three.\n\nFour five six. Seven!\n", encoding="utf-8")
    (corpus / "alpha.txt").unlink()
    indexed.index([corpus])
    assert_vectors_match_text(indexed)


def test_many_files_are_embedded_in_groups_and_stay_aligned(fake_qa, tmp_path, fake_embedder):
    root = tmp_path / "many"
    root.mkdir()
    for f in range(30):
        paragraphs = [f"File {f} paragraph {n} says fact{f}x{n}. It has a second sentence." for n in range(20)]
        (root / f"f{f:02}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    report = fake_qa.index([root])
    assert len(report.added) == 30 and report.passages_embedded == 600
    assert manifest(fake_qa.index_dir)["counts"]["passages"] == 600
    assert_vectors_match_text(fake_qa)
    hit = fake_qa.ask("fact17x13", retriever="lexical").hits[0]
    assert (hit.passage.doc, hit.passage.paragraph) == ("many/f17.txt", 14)



def test_groups_embedded_while_the_next_is_split_store_as_one_group(tmp_path, monkeypatch):
    """Indexing embeds one group on a worker thread while it reads and splits the next
    (``qa.ingest.Pipeline``): groups of 7 passages give the index one group gives, a copy of
    a file whose first copy is still being embedded names the same content, and a model
    that fails on the third group leaves the previous generation as it was."""
    import qa.ingest as ingest

    root = tmp_path / "many"
    root.mkdir()
    for f in range(12):
        paragraphs = [f"File {f} paragraph {n} says fact{f}x{n}. It has a second sentence." for n in range(4)]
        (root / f"f{f:02}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    (root / "f05 copy.txt").write_bytes((root / "f05.txt").read_bytes())  # right after f05: in flight

    def build(name: str, embedder) -> QA:
        qa = QA(tmp_path / name, embedder=embedder)
        report = qa.index([root])
        assert len(report.added) == 13 and report.passages_embedded == 48
        return qa

    whole = build("whole", FakeEmbedder())
    monkeypatch.setattr(ingest, "EMBED_GROUP", 7)
    grouped = build("grouped", FakeEmbedder())
    assert_vectors_match_text(grouped)
    assert [(d.path, d.sha256, d.passages, d.same_as) for d in grouped.documents()] == [
        (d.path, d.sha256, d.passages, d.same_as) for d in whole.documents()
    ]
    copy = next(d for d in grouped.documents() if d.path.endswith("f05 copy.txt"))
    assert copy.same_as == ("many/f05.txt",)
    for question in ("fact3x2", "fact11x0", "second sentence"):
        a, b = grouped.ask(question, retriever="lexical"), whole.ask(question, retriever="lexical")
        assert [(h.citation, h.score) for h in a.hits] == [(h.citation, h.score) for h in b.hits]

    class FailsThird(FakeEmbedder):
        calls = 0

        def encode(self, texts, batch_size=32, progress=False):
            if texts:
                FailsThird.calls += 1
                if FailsThird.calls == 3:
                    raise RuntimeError("model crashed on the third group")
            return super().encode(texts, batch_size=batch_size, progress=progress)

    before = folder_state(grouped.index_dir)
    for f in range(12):
        (root / f"f{f:02}.txt").write_text(f"New text {f}. Two paragraphs.\n\nOf file {f}.", encoding="utf-8")
    with pytest.raises(RuntimeError, match="third group"):
        QA(grouped.index_dir, embedder=FailsThird()).index([root])
    assert folder_state(grouped.index_dir) == before
    assert grouped.ask("fact3x2", retriever="lexical").hits[0].passage.doc == "many/f03.txt"

# -- readers and writers together ---------------------------------------------------------------


def test_a_reader_sees_the_next_commit(indexed, corpus):
    reader = QA(indexed.index_dir)
    assert len(reader.documents()) == len(CORPUS)
    (corpus / "alpha.txt").unlink()
    indexed.index([corpus])
    assert [d.path for d in reader.documents()] == ["docs/beta.md", "docs/sub/gamma.txt"]


def test_an_open_snapshot_outlives_the_commit_that_replaces_it(indexed, corpus):
    old = indexed.snapshot()
    (corpus / "beta.md").write_text("Replaced entirely.\n", encoding="utf-8")
    indexed.index([corpus])
    assert not (indexed.index_dir / "live-1.sqlite").exists()
    assert old.generation == 1 and indexed.snapshot().generation == 2
    assert old.document_text("docs/beta.md") == CORPUS["beta.md"]
    assert [p.section for p in old.passages_of("docs/beta.md")][0] == "Orchard notes"
    assert indexed.snapshot().document_text("docs/beta.md") == "Replaced entirely.\n"


@pytest.mark.parametrize(
    "text,encoding",
    [
        ("Zażółć gęślą jaźń, to jest polski tekst z ogonkami. Łódź i Gdańsk leżą w Polsce.\n" * 3, "cp1250"),
        ("Привет, как дела? Это тест кодировки, достаточно длинный русский текст.\n" * 3, "cp1251"),
    ],
    ids=["polish-cp1250", "russian-cp1251"],
)
def test_other_legacy_code_pages_are_not_forced_to_cp1252(fake_qa, tmp_path, text, encoding):
    path = tmp_path / "legacy.txt"
    path.write_bytes(text.encode(encoding))
    fake_qa.index([path])
    assert fake_qa.snapshot().document_text("legacy.txt") == text
