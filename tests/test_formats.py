"""Every format and every bad file, on a corpus generated in a temporary folder.

The corpus (tests/corpus.py) is drawn fresh for each run: a PDF with known text
on known pages, a DOCX with heading styles and a table, an HTML page wrapped in
boilerplate, Markdown with ATX and setext headings, plain text in five
encodings, and one file for each way reading can fail. Checks use the fake
embedder except the last, which uses the real model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import corpus as gen
from fakes import FakeEmbedder
from qa import QA
from qa.cite import CitationError, format_citation
from qa.cli import cli

PDF = "report.pdf"
DOCX = "manual.docx"
HTML = "bees.html"
MD = "guide.md"


class ExplodingEmbedder(FakeEmbedder):
    """Same name and shape as the fake, but any embedding or tokenising work fails the test."""

    def encode(self, texts, batch_size: int = 32, progress: bool = False):
        raise AssertionError(f"encode called on {len(list(texts))} texts")

    def token_offsets(self, text):
        raise AssertionError("token_offsets called")


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading any real model fails the test."""
    import embeddings

    def refuse(name=None):
        raise AssertionError(f"load_embedder({name!r}) called")

    monkeypatch.setattr(embeddings, "load_embedder", refuse)


# -- corpora, generated once per module; tests that change files work on a copy ---------------


@pytest.fixture(scope="module")
def good_template(tmp_path_factory) -> gen.Corpus:
    return gen.build_good(tmp_path_factory.mktemp("good") / "docs")


@pytest.fixture(scope="module")
def bad_template(tmp_path_factory) -> gen.Corpus:
    return gen.add_bad(gen.build_good(tmp_path_factory.mktemp("bad") / "docs"))


def copy_corpus(template: gen.Corpus, dst: Path) -> gen.Corpus:
    root = gen.copy_tree(template.root, dst / "docs")
    return gen.Corpus(root=root, good=list(template.good), bad=dict(template.bad), texts=dict(template.texts))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, good_template):
    """The good corpus indexed with the fake model: ``(qa, corpus, report)``; read-only."""
    work = tmp_path_factory.mktemp("indexed")
    corpus = copy_corpus(good_template, work)
    qa = QA(work / "index", embedder=FakeEmbedder())
    report = qa.index([corpus.root])
    return qa, corpus, report


@pytest.fixture
def fresh(tmp_path, good_template):
    """A writable copy of the good corpus, indexed with the fake: ``(qa, corpus, report)``."""
    corpus = copy_corpus(good_template, tmp_path)
    qa = QA(tmp_path / "index", embedder=FakeEmbedder())
    report = qa.index([corpus.root])
    assert not report.skipped, report.skipped
    return qa, corpus, report


def passages(qa: QA, doc: str):
    found = qa.snapshot().passages_of(doc)
    assert found, f"no passages for {doc}"
    return found


def passage_with(qa: QA, doc: str, words: str):
    """The one passage of ``doc`` whose text contains ``words`` (whitespace-insensitive)."""
    norm = lambda s: " ".join(s.split())  # noqa: E731
    hits = [p for p in passages(qa, doc) if norm(words) in norm(p.text)]
    assert len(hits) == 1, f"{words!r} found in {len(hits)} passages of {doc}"
    return hits[0]


def same_words(a: str, b: str) -> bool:
    return a.split() == b.split()


def assert_exact_and_showable(qa: QA) -> int:
    """Every passage is its document's text [start:end], and its citation shows the same text."""
    snap = qa.snapshot()
    checked = 0
    for document in snap.documents():
        text = snap.document_text(document.path)
        assert text, document.path
        for p in snap.passages_of(document.path):
            assert text[p.start : p.end] == p.text, (document.path, p)
            shown = qa.show(format_citation(p), context=0)
            assert (shown.cited.start, shown.cited.end, shown.cited.text) == (p.start, p.end, p.text), format_citation(p)
            checked += 1
    return checked


# -- every format: exact offsets and citations -----------------------------------------------


def test_every_good_file_is_indexed(indexed):
    qa, corpus, report = indexed
    assert report.skipped == []
    assert sorted(report.added) == sorted(corpus.doc(n) for n in corpus.good)
    formats = {d.path.rsplit("/", 1)[1]: d.format for d in qa.documents()}
    assert formats[PDF] == "pdf" and formats[DOCX] == "docx" and formats[HTML] == "html"
    assert formats[MD] == "markdown" and formats["enc_utf16.txt"] == "text"
    assert all(d.passages > 0 for d in qa.documents())


def test_every_passage_is_exact_and_its_citation_shows_it(indexed, no_model_load):
    qa, corpus, _ = indexed
    assert assert_exact_and_showable(qa) >= 30
    # The same through a QA that never loads a model: reading an index needs none.
    assert assert_exact_and_showable(QA(qa.index_dir)) >= 30


@pytest.mark.parametrize(
    "question",
    [
        "When was the Skerry Point lamp converted to electricity?",
        "Which pump moves 450 litres per second?",
        "When are mouse guards fitted to the hives?",
        "How large should the cache be?",
        "What does the Bäcker in Köln sell?",
    ],
)
def test_hit_citations_show_the_hit(indexed, question):
    qa, _, _ = indexed
    answer = qa.ask(question, k=5)
    assert answer.hits
    for hit in answer.hits:
        p = hit.passage
        assert qa.snapshot().document_text(p.doc)[p.start : p.end] == p.text
        assert hit.citation == format_citation(p)
        assert qa.show(hit.citation).cited.text == p.text
        assert hit.to_json()["citation"] == hit.citation


# -- PDF -----------------------------------------------------------------------------------


def test_pdf_every_passage_has_a_page(indexed):
    qa, corpus, _ = indexed
    found = passages(qa, corpus.doc(PDF))
    assert all(p.page is not None for p in found)
    assert sorted({p.page for p in found}) == [1, 2, gen.PDF_COLUMNS_PAGE]  # page 3 is blank


def pdf_expected():
    """(page, paragraph on the page, text as written) for everything put in the PDF."""
    for page, paragraphs in gen.PDF_PAGES.items():
        for number, text in enumerate(paragraphs, start=1):
            yield page, number, text
    yield gen.PDF_COLUMNS_PAGE, 1, gen.PDF_LEFT
    yield gen.PDF_COLUMNS_PAGE, 2, gen.PDF_RIGHT


@pytest.mark.parametrize("page, number, written", list(pdf_expected()), ids=lambda v: str(v)[:24])
def test_pdf_text_is_cited_on_the_page_it_was_written_on(indexed, page, number, written):
    qa, corpus, _ = indexed
    joined = written.replace("-\n", "")  # the hyphenated word comes back whole
    p = passage_with(qa, corpus.doc(PDF), joined[:40])
    assert same_words(p.text, joined), p.text
    assert (p.page, p.paragraph) == (page, number)
    citation = format_citation(p)
    assert f", p. {page}, ¶{number}" in citation, citation
    assert citation.startswith(f"{PDF}, p. {page}")
    assert qa.show(f"{PDF}, p. {page}, ¶{number}").cited.text == p.text


def test_pdf_paragraph_numbers_restart_on_each_page(indexed):
    qa, corpus, _ = indexed
    by_page: dict[int, list[int]] = {}
    for p in passages(qa, corpus.doc(PDF)):
        if p.window == 1:
            by_page.setdefault(p.page, []).append(p.paragraph)
    assert by_page == {1: [1, 2], 2: [1, 2, 3], gen.PDF_COLUMNS_PAGE: [1, 2]}
    seqs = [p.seq for p in passages(qa, corpus.doc(PDF)) if p.window == 1]
    assert seqs == list(range(1, len(seqs) + 1))  # seq keeps counting across pages


def test_pdf_hyphenated_word_is_joined(indexed):
    qa, corpus, _ = indexed
    text = qa.snapshot().document_text(corpus.doc(PDF))
    assert gen.PDF_HYPHENATED in text
    assert "inter-" not in text and "nationalisation" not in text.replace(gen.PDF_HYPHENATED, "")
    assert qa.ask("internationalisation", k=1, retriever="lexical").hits[0].passage.page == 2


def test_pdf_two_columns_read_left_column_first(indexed):
    qa, corpus, _ = indexed
    text = qa.snapshot().document_text(corpus.doc(PDF))
    left_end = text.index("gentians in July.")
    right_start = text.index("Right column text")
    assert text.index("Left column text") < left_end < right_start
    # No right-column words inside the left column's text, and vice versa.
    left = passage_with(qa, corpus.doc(PDF), "alpine meadows").text
    right = passage_with(qa, corpus.doc(PDF), "coastal dunes").text
    assert "dunes" not in left and "meadows" not in right


# -- HTML ------------------------------------------------------------------------------------


def test_html_boilerplate_is_dropped(indexed):
    qa, corpus, _ = indexed
    text = qa.snapshot().document_text(corpus.doc(HTML))
    for word in gen.HTML_BOILERPLATE:
        assert word not in text, word
    assert "<" not in text and "{" not in text
    for paragraph in (gen.HTML_INTRO, gen.HTML_MOVE, gen.HTML_CLUSTER, gen.HTML_GUARDS):
        assert paragraph in text


@pytest.mark.parametrize(
    "paragraph, section",
    [
        (gen.HTML_INTRO, gen.HTML_H1),
        (gen.HTML_MOVE, gen.HTML_H1),
        (gen.HTML_CLUSTER, gen.HTML_H2),
        (gen.HTML_GUARDS, gen.HTML_H2),
    ],
    ids=["intro", "move", "cluster", "guards"],
)
def test_html_headings_become_sections(indexed, paragraph, section):
    qa, corpus, _ = indexed
    p = passage_with(qa, corpus.doc(HTML), paragraph)
    assert p.text == paragraph
    assert p.section == section and p.page is None
    assert format_citation(p).startswith(f"{HTML}, § {section}, ¶")


# -- DOCX ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words, section",
    [
        ("maintain the pumping station", "Introduction"),
        ("Inspect the intake screens", "Daily checks"),
        ("Record the water level", "Daily checks"),
        ("Drain the pipes", "Winter storage"),
    ],
)
def test_docx_headings_become_sections(indexed, words, section):
    qa, corpus, _ = indexed
    p = passage_with(qa, corpus.doc(DOCX), words)
    assert p.section == section and p.page is None
    assert f"§ {section}, ¶{p.paragraph}" in format_citation(p)


def test_docx_table_text_is_present(indexed):
    qa, corpus, _ = indexed
    text = qa.snapshot().document_text(corpus.doc(DOCX))
    for row in gen.DOCX_TABLE:
        for cell in row:
            assert cell in text
    assert "Northbank | 450 litres per second" in text  # a row's cells stay together
    p = passage_with(qa, corpus.doc(DOCX), "Northbank")
    assert "Southbank" in p.text and "Capacity" in p.text
    assert gen.DOCX_TITLE in text


def test_docx_table_stays_where_it_is_in_the_document(indexed):
    qa, corpus, _ = indexed
    text = qa.snapshot().document_text(corpus.doc(DOCX))
    assert text.index("Northbank") < text.index("Drain the pipes")
    assert passage_with(qa, corpus.doc(DOCX), "Northbank").section == "Daily checks"


# -- Markdown ----------------------------------------------------------------------------------


@pytest.mark.parametrize("section, paragraph", gen.MARKDOWN_PARAGRAPHS, ids=lambda v: str(v)[:20])
def test_markdown_headings_become_sections(indexed, section, paragraph):
    qa, corpus, _ = indexed
    p = passage_with(qa, corpus.doc(MD), paragraph)
    assert p.text == paragraph
    assert p.section == section
    citation = format_citation(p)
    if section is None:
        assert "§" not in citation and citation == f"{MD} ¶{p.paragraph}"
    else:
        assert citation == f"{MD}, § {section}, ¶{p.paragraph}"
    assert qa.show(citation).cited.text == paragraph


def test_markdown_file_is_its_own_extracted_text(indexed):
    qa, corpus, _ = indexed
    assert qa.snapshot().document_text(corpus.doc(MD)) == gen.MARKDOWN


def index_one(qa: QA, folder: Path, name: str, data: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    report = qa.index([folder])
    assert report.added == [f"{folder.name}/{name}"], report
    return f"{folder.name}/{name}"


def test_markdown_comment_in_a_code_fence_is_not_a_heading(fake_qa, tmp_path):
    doc = index_one(fake_qa, tmp_path / "md", "fenced.md", gen.MARKDOWN_FENCED.encode())
    p = passage_with(fake_qa, doc, "Then build the documentation")
    assert p.section == "Setup"


def test_markdown_with_crlf_line_ends_has_the_same_sections(fake_qa, tmp_path):
    doc = index_one(fake_qa, tmp_path / "md", "windows.md", gen.MARKDOWN.replace("\n", "\r\n").encode())
    text = fake_qa.snapshot().document_text(doc)
    for section, paragraph in gen.MARKDOWN_PARAGRAPHS:
        p = passage_with(fake_qa, doc, paragraph)
        assert text[p.start : p.end] == paragraph
        assert p.section == section, (paragraph, p.section)


# -- encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(gen.ENCODED_TEXTS))
def test_text_in_any_encoding_decodes_to_the_original(indexed, name):
    qa, corpus, _ = indexed
    original = gen.ENCODED_TEXTS[name][1]
    assert qa.snapshot().document_text(corpus.doc(name)) == original
    first = original.split("\n\n")[0]
    p = passages(qa, corpus.doc(name))[0]
    assert (p.start, p.text) == (0, first)


@pytest.mark.parametrize("text", ["Le café\n", "Niño\n", "Straße\n", "Garçon\n"])
def test_short_latin1_note_decodes_to_the_original(fake_qa, tmp_path, text):
    doc = index_one(fake_qa, tmp_path / "short", "note.txt", text.encode("latin-1"))
    assert fake_qa.snapshot().document_text(doc) == text


# -- bad input -------------------------------------------------------------------------------------


def test_bad_files_are_skipped_with_a_reason_and_the_rest_committed(tmp_path, bad_template):
    corpus = copy_corpus(bad_template, tmp_path)
    missing = tmp_path / "no-such-folder"
    qa = QA(tmp_path / "index", embedder=FakeEmbedder())
    report = qa.index([corpus.root, missing], max_bytes=gen.BAD_MAX_BYTES)

    skipped = {Path(s.path).name: s for s in report.skipped}
    assert sorted(skipped) == sorted([*corpus.bad, missing.name])
    assert skipped[missing.name].reason == "no such file or folder"
    for name, word in corpus.bad.items():
        line = str(skipped[name])
        assert word.lower() in skipped[name].reason.lower(), line
        assert "\n" not in line and line.startswith(f"skipped {corpus.root / name}: "), line
        assert len(line) < 300, line
    assert "300 MiB" in skipped["bomb.docx"].reason  # refused from the zip's directory, not unpacked

    assert sorted(report.added) == sorted(corpus.doc(n) for n in corpus.good)
    # Committed: a fresh reader with no model sees every good file and nothing else.
    reader = QA(qa.index_dir)
    assert sorted(d.path for d in reader.documents()) == sorted(corpus.doc(n) for n in corpus.good)
    assert assert_exact_and_showable(reader) > 0


def test_a_zip_bomb_check_does_not_unpack(tmp_path, good_template):
    """The refusal comes from the zip's directory: fast, however large the member claims to be."""
    from qa.formats import FormatError, check_zip

    bomb = gen.make_zip_bomb_docx(tmp_path / "bomb.docx", good_template.root / DOCX, mebibytes=20)
    with pytest.raises(FormatError, match="zip bomb"):
        check_zip(bomb)
    check_zip(good_template.root / DOCX)  # a real DOCX passes


def preimport_parsers():
    # Children are forked: what the parent imported they need not import again,
    # so a 1 s limit is about the parser, not about import time.
    import docx  # noqa: F401
    import pdfminer.high_level  # noqa: F401
    import trafilatura  # noqa: F401


def test_a_hanging_parser_is_stopped_and_the_rest_indexed(tmp_path, good_template, monkeypatch):
    import qa.read

    corpus = copy_corpus(good_template, tmp_path)
    # Different content from bees.html, or it would be stored as an alias without parsing.
    (corpus.root / "hang.html").write_text(gen.HTML.replace("Highland", "Lowland"), encoding="utf-8")
    original = qa.read._parse_rich

    def parse(path, fmt, data):
        if Path(path).name == "hang.html":
            time.sleep(100)
        return original(path, fmt, data)

    monkeypatch.setattr(qa.read, "_parse_rich", parse)  # inherited by the forked child
    preimport_parsers()
    index = QA(tmp_path / "index", embedder=FakeEmbedder())
    started = time.monotonic()
    report = index.index([corpus.root], timeout=1)
    elapsed = time.monotonic() - started
    assert [Path(s.path).name for s in report.skipped] == ["hang.html"]
    assert "longer than the 1 s limit" in report.skipped[0].reason
    assert elapsed < 15, f"indexing took {elapsed:.1f} s"
    assert sorted(report.added) == sorted(corpus.doc(n) for n in corpus.good)
    assert len(QA(index.index_dir).documents()) == len(corpus.good)


def test_a_crashing_parser_costs_that_file_only(tmp_path, good_template, monkeypatch):
    import qa.read

    corpus = copy_corpus(good_template, tmp_path)
    gen.make_pdf(corpus.root / "crash.pdf")
    with open(corpus.root / "crash.pdf", "ab") as handle:
        handle.write(b"\n% different bytes, so it is parsed\n")
    original = qa.read._parse_rich

    def parse(path, fmt, data):
        if Path(path).name == "crash.pdf":
            os._exit(11)  # as a segfaulting C extension would
        return original(path, fmt, data)

    monkeypatch.setattr(qa.read, "_parse_rich", parse)
    report = QA(tmp_path / "index", embedder=FakeEmbedder()).index([corpus.root])
    assert [(Path(s.path).name, "crashed" in s.reason) for s in report.skipped] == [("crash.pdf", True)]
    assert sorted(report.added) == sorted(corpus.doc(n) for n in corpus.good)


def test_a_file_that_turns_unreadable_is_dropped_from_the_index(fresh):
    qa, corpus, _ = fresh
    target = corpus.root / "enc_utf8.txt"
    gen.make_binary_txt(target)
    report = QA(qa.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert [Path(s.path).name for s in report.skipped] == ["enc_utf8.txt"]
    assert "removed from the index" in report.skipped[0].reason
    assert report.removed == [corpus.doc("enc_utf8.txt")]
    assert corpus.doc("enc_utf8.txt") not in [d.path for d in QA(qa.index_dir).documents()]
    assert len(report.unchanged) == len(corpus.good) - 1 and report.passages_embedded == 0


# -- CLI exit status ---------------------------------------------------------------------------------


@pytest.fixture
def fake_model(monkeypatch):
    """``qa`` commands load a FakeEmbedder instead of the real model."""
    import embeddings

    loaded: list[str | None] = []

    def load(name=None):
        loaded.append(name)
        assert name in (None, "fake-hash"), name
        return FakeEmbedder()

    monkeypatch.setattr(embeddings, "load_embedder", load)
    return loaded


def qa_index(*args):
    return CliRunner().invoke(cli, ["index", *[str(a) for a in args]])


def test_cli_index_exits_0_when_everything_is_indexed(tmp_path, good_template, fake_model):
    corpus = copy_corpus(good_template, tmp_path)
    result = qa_index(corpus.root, "--index", tmp_path / "index", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert sorted(report["added"]) == sorted(corpus.doc(n) for n in corpus.good)
    assert fake_model == [None]
    # Again: nothing changed, exit 0, and no model is loaded.
    again = qa_index(corpus.root, "--index", tmp_path / "index", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["passages_embedded"] == 0 and fake_model == [None]


def test_cli_index_exits_3_when_some_files_are_skipped(tmp_path, bad_template, fake_model):
    corpus = copy_corpus(bad_template, tmp_path)
    result = qa_index(corpus.root, "--index", tmp_path / "index", "--max-size", 1)
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert sorted(Path(line.split(": ", 1)[0].removeprefix("skipped ")).name for line in lines) == sorted(corpus.bad)
    assert all(line.startswith("skipped ") for line in lines)
    assert f"{len(corpus.good)} added" in result.stdout and f"{len(corpus.bad)} skipped" in result.stdout
    assert len(QA(tmp_path / "index").documents()) == len(corpus.good)


def test_cli_index_exits_1_when_nothing_could_be_indexed(tmp_path, fake_model):
    root = tmp_path / "junk"
    root.mkdir()
    gen.make_empty(root / "empty.txt")
    gen.make_random_pdf(root / "random.pdf")
    gen.make_binary_txt(root / "binary.txt")
    result = qa_index(root, "--index", tmp_path / "index")
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert sorted(line.split(": ", 1)[0].rsplit("/", 1)[1] for line in lines) == ["binary.txt", "empty.txt", "random.pdf"]
    assert "Traceback" not in result.output


# -- incremental indexing -------------------------------------------------------------------------


def test_reindexing_an_unchanged_folder_embeds_nothing_and_loads_no_model(fresh, no_model_load):
    qa, corpus, first = fresh
    generation = qa.snapshot().generation
    # No embedder given: the model must not even be loaded (no_model_load would fail).
    lazy = QA(qa.index_dir)
    report = lazy.index([corpus.root])
    assert report.passages_embedded == 0 and report.sentences_embedded == 0
    assert sorted(report.unchanged) == sorted(first.added)
    assert report.added == report.updated == report.removed == report.skipped == []
    # And with a model object that fails if used.
    report = QA(qa.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert report.passages_embedded == 0 and sorted(report.unchanged) == sorted(first.added)
    assert QA(qa.index_dir).snapshot().generation == generation  # nothing to commit


def test_touching_a_file_reembeds_nothing(fresh):
    qa, corpus, _ = fresh
    gen.bump_mtime(corpus.root / PDF)
    gen.bump_mtime(corpus.root / MD)
    report = QA(qa.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert report.passages_embedded == 0
    assert corpus.doc(PDF) in report.unchanged and corpus.doc(MD) in report.unchanged
    assert report.updated == []


def test_a_touched_file_is_not_read_again_on_the_next_run(fresh, monkeypatch):
    import qa.ingest

    qa_, corpus, _ = fresh
    gen.bump_mtime(corpus.root / MD)
    QA(qa_.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    reads: list[str] = []
    original = qa.ingest.read_bytes
    monkeypatch.setattr(qa.ingest, "read_bytes", lambda p, **kw: reads.append(Path(p).name) or original(p, **kw))
    report = QA(qa_.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert report.passages_embedded == 0
    assert reads == []


def test_changing_one_file_reembeds_exactly_its_passages(fresh):
    qa, corpus, _ = fresh
    new_text = gen.MARKDOWN + "\n## Uninstall\n\nDelete the program folder and the cache directory.\n"
    (corpus.root / MD).write_text(new_text, encoding="utf-8")
    embedder = FakeEmbedder()
    report = QA(qa.index_dir, embedder=embedder).index([corpus.root])
    assert report.updated == [corpus.doc(MD)] and report.added == [] and report.removed == []
    assert len(report.unchanged) == len(corpus.good) - 1
    counts = {d.path: d.passages for d in QA(qa.index_dir).documents()}
    assert counts[corpus.doc(MD)] == len(gen.MARKDOWN_PARAGRAPHS) + 1
    assert report.passages_embedded == counts[corpus.doc(MD)]
    # Only guide.md's text was embedded (a passage may be embedded with its heading).
    assert embedder.encoded
    assert set(" ".join(embedder.encoded).split()) <= set(new_text.split())
    p = passage_with(qa, corpus.doc(MD), "Delete the program folder")
    assert p.section == "Uninstall"
    assert qa.snapshot().document_text(corpus.doc(MD)) == new_text
    assert_exact_and_showable(qa)


def test_a_file_deleted_from_the_folder_is_removed(fresh):
    qa, corpus, _ = fresh
    (corpus.root / HTML).unlink()
    report = QA(qa.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert report.removed == [corpus.doc(HTML)] and report.passages_embedded == 0
    assert corpus.doc(HTML) not in [d.path for d in qa.documents()]
    hits = qa.ask("mouse guards fitted to the hive entrances", k=10).hits
    assert all(h.passage.doc != corpus.doc(HTML) for h in hits)
    with pytest.raises(CitationError):
        qa.show(f"{HTML} ¶1")


def test_qa_remove(fresh):
    qa, corpus, _ = fresh
    assert qa.remove([DOCX]) == [corpus.doc(DOCX)]
    paths = [d.path for d in QA(qa.index_dir).documents()]
    assert corpus.doc(DOCX) not in paths and len(paths) == len(corpus.good) - 1
    assert all(h.passage.doc != corpus.doc(DOCX) for h in qa.ask("intake screens debris", k=10).hits)
    with pytest.raises(CitationError):
        qa.show(f"{DOCX} ¶1")
    assert_exact_and_showable(qa)


def test_the_same_file_under_two_paths_is_stored_once(tmp_path, fake_qa):
    root = tmp_path / "docs"
    text = "The ferry to Inchmurrin leaves at nine.\n\nTickets are sold on the pier by the boatman.\n"
    (root / "sub").mkdir(parents=True)
    (root / "ferry.txt").write_text(text, encoding="utf-8")
    (root / "sub" / "ferry-copy.txt").write_text(text, encoding="utf-8")
    (root / "other.txt").write_text("Unrelated notes about pottery glazes.\n", encoding="utf-8")
    report = fake_qa.index([root])
    assert sorted(report.added) == ["docs/ferry.txt", "docs/other.txt", "docs/sub/ferry-copy.txt"]
    assert report.passages_embedded == 3  # two for the ferry text, once; one for the other file

    docs = {d.path: d for d in fake_qa.documents()}
    assert docs["docs/ferry.txt"].same_as == ("docs/sub/ferry-copy.txt",)
    assert docs["docs/sub/ferry-copy.txt"].same_as == ("docs/ferry.txt",)
    assert docs["docs/other.txt"].same_as == ()
    assert docs["docs/ferry.txt"].id == docs["docs/sub/ferry-copy.txt"].id

    hit = fake_qa.ask("When does the ferry to Inchmurrin leave?", k=1).hits[0]
    assert {hit.passage.doc, *hit.passage.also} == {"docs/ferry.txt", "docs/sub/ferry-copy.txt"}
    assert hit.to_json()["also_in"] == [p for p in ("docs/ferry.txt", "docs/sub/ferry-copy.txt") if p != hit.passage.doc]
    assert fake_qa.show("ferry-copy.txt ¶1").cited.text == "The ferry to Inchmurrin leaves at nine."

    assert fake_qa.remove(["docs/ferry.txt"]) == ["docs/ferry.txt"]
    docs = {d.path: d for d in fake_qa.documents()}
    assert sorted(docs) == ["docs/other.txt", "docs/sub/ferry-copy.txt"]
    assert docs["docs/sub/ferry-copy.txt"].same_as == ()
    hit = fake_qa.ask("When does the ferry to Inchmurrin leave?", k=1).hits[0]
    assert (hit.passage.doc, hit.passage.also) == ("docs/sub/ferry-copy.txt", ())
    assert hit.passage.text == "The ferry to Inchmurrin leaves at nine."
    assert_exact_and_showable(fake_qa)


def test_a_renamed_file_is_not_embedded_again(fresh):
    qa, corpus, _ = fresh
    (corpus.root / PDF).rename(corpus.root / "renamed.pdf")
    report = QA(qa.index_dir, embedder=ExplodingEmbedder()).index([corpus.root])
    assert report.added == [corpus.doc("renamed.pdf")] and report.removed == [corpus.doc(PDF)]
    assert report.passages_embedded == 0
    p = passage_with(qa, corpus.doc("renamed.pdf"), "Skerry Point")
    assert (p.page, p.paragraph, p.also) == (2, 1, ())
    assert qa.show("renamed.pdf, p. 2, ¶1").cited.text == p.text


def test_changing_one_copy_keeps_the_other(tmp_path, fake_qa):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("Shared paragraph about river otters.\n", encoding="utf-8")
    (root / "b.txt").write_text("Shared paragraph about river otters.\n", encoding="utf-8")
    fake_qa.index([root])
    (root / "b.txt").write_text("Changed paragraph about sea eagles.\n", encoding="utf-8")
    report = fake_qa.index([root])
    assert report.updated == ["docs/b.txt"] and report.passages_embedded == 1
    snap = fake_qa.snapshot()
    assert snap.document_text("docs/a.txt") == "Shared paragraph about river otters.\n"
    assert snap.document_text("docs/b.txt") == "Changed paragraph about sea eagles.\n"
    assert all(d.same_as == () for d in snap.documents())


def test_rechecking_1000_unchanged_files(tmp_path, no_model_load):
    root = tmp_path / "many"
    names = gen.make_many_txt(root, 1000)
    embedder = FakeEmbedder()
    first = QA(tmp_path / "index", embedder=embedder).index([root])
    assert len(first.added) == 1000 and first.passages_embedded == 1000

    lazy = QA(tmp_path / "index")
    started = time.perf_counter()
    report = lazy.index([root])
    seconds = time.perf_counter() - started
    print(f"\nre-check of 1000 unchanged files: {seconds:.3f} s")
    assert report.passages_embedded == 0 and len(report.unchanged) == len(names)

    for name in names:
        gen.bump_mtime(root / name)
    QA(tmp_path / "index").index([root])
    started = time.perf_counter()
    report = QA(tmp_path / "index").index([root])
    seconds = time.perf_counter() - started
    print(f"re-check of 1000 files after their mtimes changed (second run after the touch): {seconds:.3f} s")
    assert report.passages_embedded == 0 and len(report.unchanged) == len(names)


# -- the real model ------------------------------------------------------------------------------


@pytest.mark.model
def test_real_model_cites_the_pdf_page_of_the_answer(tmp_path, good_template, real_embedder):
    root = tmp_path / "docs"
    root.mkdir()
    for name in (PDF, DOCX, HTML, MD):
        shutil.copyfile(good_template.root / name, root / name)
    qa = QA(tmp_path / "index", embedder=real_embedder)
    report = qa.index([root])
    assert sorted(report.added) == sorted(f"docs/{n}" for n in (PDF, DOCX, HTML, MD)) and not report.skipped
    answer = qa.ask("When was the lighthouse lamp converted from paraffin to electricity?", k=3)
    top = answer.hits[0]
    assert top.passage.doc == "docs/report.pdf"
    assert top.passage.page == 2
    assert "p. 2" in top.citation and top.citation == "report.pdf, p. 2, ¶1"
    assert "1962" in top.highlight
    assert qa.show(top.citation).cited.text == top.passage.text
