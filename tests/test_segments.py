"""Segments (index format 6): a commit writes what it changed, readers see one index.

Adding a document writes a new segment and leaves the committed ones byte for byte;
removing one marks it removed without rewriting its segment; the answers are those
of an index built in one commit; merges keep at most ``MAX_SEGMENTS``; ``qa compact``
folds everything into one segment.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes import FakeEmbedder
from indexfiles import catalog_counts, generation_names, manifest_of
from qa import QA
from qa.cli import cli
from qa.lexical import fts_query
import qa.storage.snapshot as snapshot_module
from qa.storage.segments import MAX_SEGMENTS, choose_merge

WORDS = ["harbour", "glacier", "orchard", "violin", "lantern", "meadow", "copper", "falcon", "canyon", "tundra",
         "quarry", "bramble", "ember", "willow"]


def _doc(word: str, n: int) -> str:
    return (f"The {word} report, part {n}.\n\nEvery {word} in the valley was counted twice by surveyors in spring.\n\n"
            f"Notes on {word} and river stones close the report.\n")


def _write(docs: Path, words) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    for n, word in enumerate(words):
        (docs / f"{n:02d}_{word}.txt").write_text(_doc(word, n), encoding="utf-8")


def _file_ids(index: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in index.iterdir()
            if p.name.startswith("seg-")}


def _answers(qa: QA, retriever: str = "hybrid") -> list[list[tuple]]:
    out = []
    for word in WORDS + ["river stones counted", "surveyors in spring"]:
        answer = qa.ask(f"Where was the {word} counted?", k=4, retriever=retriever)
        out.append([(h.passage.doc, h.passage.paragraph, h.passage.start, h.passage.end) for h in answer.hits])
    return out


def _one_commit(tmp_path: Path, docs: Path, name: str = "single") -> QA:
    qa = QA(tmp_path / name, embedder=FakeEmbedder())
    qa.index([docs])
    return qa


def test_adding_a_document_writes_a_segment_and_leaves_the_others_untouched(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, WORDS[:6])
    fake_qa.index([docs])
    before = _file_ids(fake_qa.index_dir)
    (docs / "99_new.txt").write_text(_doc("lighthouse", 99), encoding="utf-8")
    report = fake_qa.index([docs])
    assert report.added == ["docs/99_new.txt"] and report.passages_embedded == 3
    after = _file_ids(fake_qa.index_dir)
    assert {name: after[name] for name in before} == before  # same inode, time and bytes
    new = sorted(set(after) - set(before))
    assert new == ["seg-2-passages.faiss", "seg-2-sentences.faiss", "seg-2.sqlite"]
    m = manifest_of(fake_qa.index_dir)
    assert [s["counts"]["passages"] for s in m["segments"]] == [18, 3]
    assert catalog_counts(fake_qa.index_dir) == m["counts"] == {"documents": 7, "passages": 21, "sentences": 21}
    assert sorted(p.name for p in fake_qa.index_dir.iterdir()) == generation_names(fake_qa.index_dir)
    hit = fake_qa.ask("Where was the lighthouse counted?").hits[0]
    assert hit.passage.doc == "docs/99_new.txt"


def test_removing_a_document_marks_it_without_rewriting_its_segment(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, WORDS[:6])
    fake_qa.index([docs])
    before = _file_ids(fake_qa.index_dir)
    (docs / "02_orchard.txt").unlink()
    report = fake_qa.index([docs])
    assert report.removed == ["docs/02_orchard.txt"]
    assert _file_ids(fake_qa.index_dir) == before  # no segment written or changed
    assert manifest_of(fake_qa.index_dir)["counts"] == {"documents": 5, "passages": 15, "sentences": 15}
    assert "docs/02_orchard.txt" not in [d.path for d in fake_qa.documents()]
    for retriever in ("hybrid", "fused", "lexical", "dense"):
        answer = fake_qa.ask("orchard report counted", k=20, retriever=retriever)
        assert answer.hits and all(h.passage.doc != "docs/02_orchard.txt" for h in answer.hits), retriever
    snapshot = fake_qa.snapshot()
    assert len(snapshot.passage_vectors) == 15 and len(snapshot.sentence_vectors.excluded) == 3
    assert all(snapshot.passages(snapshot.lexical(fts_query("orchard")))[pid].doc != "docs/02_orchard.txt"
               for pid in snapshot.lexical(fts_query("orchard")))
    # Added back, it is stored again in a new segment and found again.
    (docs / "02_orchard.txt").write_text(_doc("orchard", 2), encoding="utf-8")
    fake_qa.index([docs])
    assert fake_qa.ask("Where was the orchard counted?").hits[0].passage.doc == "docs/02_orchard.txt"


def test_a_segment_whose_documents_are_all_removed_is_dropped(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, WORDS[:4])
    fake_qa.index([docs])
    (docs / "98_a.txt").write_text(_doc("lighthouse", 98), encoding="utf-8")
    (docs / "99_b.txt").write_text(_doc("beacon", 99), encoding="utf-8")
    fake_qa.index([docs])
    assert [s["number"] for s in manifest_of(fake_qa.index_dir)["segments"]] == [1, 2]
    (docs / "98_a.txt").unlink()
    fake_qa.index([docs])
    assert [s["number"] for s in manifest_of(fake_qa.index_dir)["segments"]] == [1, 2]  # one document left in it
    (docs / "99_b.txt").unlink()
    fake_qa.index([docs])
    assert [s["number"] for s in manifest_of(fake_qa.index_dir)["segments"]] == [1]
    assert sorted(p.name for p in fake_qa.index_dir.iterdir()) == generation_names(fake_qa.index_dir)
    assert len(fake_qa.snapshot().passage_vectors.excluded) == 0  # its removals went with it
    assert catalog_counts(fake_qa.index_dir) == manifest_of(fake_qa.index_dir)["counts"]


def test_an_index_built_over_many_commits_answers_as_one_built_at_once(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for n, word in enumerate(WORDS):  # one commit a document, one removed and one changed on the way
        (docs / f"{n:02d}_{word}.txt").write_text(_doc(word, n), encoding="utf-8")
        fake_qa.index([docs])
        if n == 5:
            (docs / "01_glacier.txt").unlink()
            fake_qa.index([docs])
        if n == 8:
            (docs / "03_violin.txt").write_text(_doc("cello", 3), encoding="utf-8")
            fake_qa.index([docs])
    m = manifest_of(fake_qa.index_dir)
    assert 1 < len(m["segments"]) <= MAX_SEGMENTS
    single = _one_commit(tmp_path, docs)
    assert [d.path for d in fake_qa.documents()] == [d.path for d in single.documents()]
    assert catalog_counts(fake_qa.index_dir) == m["counts"] == manifest_of(single.index_dir)["counts"]
    # The vectors are the same: dense search gives the same passages in the same order.
    assert _answers(fake_qa, "dense") == _answers(single, "dense")
    # bm25's length normalisation stays per segment, so near-ties may swap; the best passage does not.
    for retriever in ("lexical", "hybrid"):
        firsts = [hits[0] for hits in _answers(fake_qa, retriever)]
        assert firsts == [hits[0] for hits in _answers(single, retriever)], retriever
    # bm25 over the segments takes each term's idf over all of them: close to one segment's.
    segmented, whole = fake_qa.snapshot(), single.snapshot()
    for question in ("glacier cello harbour", "river stones", "falcon counted spring"):
        a = {(p.doc, p.paragraph): s for p, s in _scored(segmented, question)}
        b = {(p.doc, p.paragraph): s for p, s in _scored(whole, question)}
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= 0.15 * abs(b[k]) for k in b), question


def _scored(snapshot, question: str):
    scores = snapshot.lexical(fts_query(question))
    passages = snapshot.passages(scores)
    return [(passages[pid], score) for pid, score in scores.items()]


def test_a_term_queried_alone_per_segment_sums_to_fts5s_own_bm25(fake_qa, corpus, monkeypatch):
    fake_qa.index([corpus])
    snapshot = fake_qa.snapshot()
    monkeypatch.setattr(snapshot_module, "DOMINANT", 1.01)  # no segment asked the whole query at once
    for question in ("barrier gates tested", "cherries pears pruning", "violins lighthouse ships"):
        match = fts_query(question)
        own = snapshot.lexical(match)
        summed = snapshot._lexical_segments(match)
        assert own.keys() == summed.keys() and own
        assert all(abs(own[k] - summed[k]) < 1e-9 for k in own)


def test_a_dominant_segment_asked_at_once_scores_close_to_term_by_term(fake_qa, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    _write(docs, WORDS[:10])
    fake_qa.index([docs])
    (docs / "50_extra.txt").write_text("A falcon and a canyon wren nest by the harbour.\n", encoding="utf-8")
    fake_qa.index([docs])
    snapshot = fake_qa.snapshot()
    match = fts_query("falcon canyon harbour counted")
    at_once = snapshot._lexical_segments(match)  # the first segment holds 30 of 31 rows
    monkeypatch.setattr(snapshot_module, "DOMINANT", 1.01)
    term_by_term = snapshot._lexical_segments(match)
    assert at_once.keys() == term_by_term.keys() and len(at_once) > 3
    # 30 rows against 31: its idf is off by up to 14% here; in a large index, by a hair.
    assert all(abs(at_once[k] - term_by_term[k]) <= 0.15 * term_by_term[k] for k in at_once)
    assert at_once != term_by_term


def test_a_term_s_rows_from_the_term_dictionary_are_those_fts5_counts(fake_qa, corpus):
    fake_qa.index([corpus])
    snapshot = fake_qa.snapshot()
    (schema,) = snapshot._schemas
    for term in ("gates", "tested", "testing", "cherries", "violins", "x_y", "nowhere", "word7", "the"):
        counted = snapshot._query(f"SELECT COUNT(*) FROM {schema}.passages_fts WHERE passages_fts MATCH ?",
                                  (f'"{term}"',))[0][0]
        assert snapshot._rows_with(schema, f'"{term}"') == counted, term


def test_a_document_added_alone_is_not_ranked_down_by_its_small_segment(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    _write(docs, WORDS[:10])
    fake_qa.index([docs])
    (docs / "50_extra.txt").write_text("A falcon and a canyon wren nest here.\n", encoding="utf-8")
    fake_qa.index([docs])  # its own segment of one passage, where "falcon" is in every row
    single = _one_commit(tmp_path, docs)
    segmented = dict((p.doc, s) for p, s in _scored(fake_qa.snapshot(), "falcon canyon wren") if p.doc.endswith("extra.txt"))
    whole = dict((p.doc, s) for p, s in _scored(single.snapshot(), "falcon canyon wren") if p.doc.endswith("extra.txt"))
    assert segmented["docs/50_extra.txt"] == pytest.approx(whole["docs/50_extra.txt"], rel=0.15)
    for qa in (fake_qa, single):
        assert qa.ask("falcon canyon wren", retriever="lexical").hits[0].passage.doc == "docs/50_extra.txt"


def test_merges_keep_the_segments_few_and_drop_removed_documents(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for n, word in enumerate(WORDS):
        (docs / f"{n:02d}_{word}.txt").write_text(_doc(word, n), encoding="utf-8")
        fake_qa.index([docs])
        assert len(manifest_of(fake_qa.index_dir)["segments"]) <= MAX_SEGMENTS
    assert len(manifest_of(fake_qa.index_dir)["segments"]) == MAX_SEGMENTS
    for word in WORDS[:3]:
        next(docs.glob(f"*_{word}.txt")).unlink()
    fake_qa.index([docs])
    result = CliRunner().invoke(cli, ["compact", "--index", str(fake_qa.index_dir)])
    assert result.exit_code == 0, result.output
    # Segments of one removed document each were dropped by the removal's commit already.
    assert "6 segments -> 1, 33 passages" in result.output
    m = manifest_of(fake_qa.index_dir)
    assert len(m["segments"]) == 1 and m["segments"][0]["counts"] == {"passages": 33, "sentences": 33}
    assert sorted(p.name for p in fake_qa.index_dir.iterdir()) == generation_names(fake_qa.index_dir)
    snapshot = fake_qa.snapshot()
    assert len(snapshot.passage_vectors.excluded) == 0  # the removed documents' rows are gone
    assert _answers(fake_qa) == _answers(_one_commit(tmp_path, docs))


def test_choose_merge_takes_the_smallest_run_of_neighbours():
    assert choose_merge([100, 5, 5], limit=3) is None
    assert choose_merge([100, 5, 5, 1], limit=3) == (2, 4)
    assert choose_merge([100, 50, 1, 1, 60, 1], limit=4) == (1, 4)
    assert choose_merge([1] * 10, limit=8) == (7, 10)  # ties: the newest


@pytest.mark.model
def test_segments_with_the_real_model_and_the_seed_articles(tmp_path, real_embedder):
    seeds = Path(__file__).resolve().parent.parent / "seeds"
    docs = tmp_path / "docs"
    docs.mkdir()
    first, second = sorted(seeds.iterdir())
    shutil.copy(first, docs)
    qa = QA(tmp_path / "index", embedder=real_embedder)
    qa.index([docs])
    shutil.copy(second, docs)
    qa.index([docs])
    assert len(manifest_of(qa.index_dir)["segments"]) == 2
    whole = QA(tmp_path / "whole", embedder=real_embedder)
    whole.index([docs])
    questions = ["Who is the foreign minister of the exile government?", "What did Pakistan do to the Uyghurs?",
                 "What does the exile government ask of the international community?"]
    for question in questions:
        a, b = qa.ask(question), whole.ask(question)
        assert [(h.passage.doc, h.passage.paragraph) for h in a.hits] == [(h.passage.doc, h.passage.paragraph) for h in b.hits]
        assert a.confidence == pytest.approx(b.confidence, abs=0.02)
    os.remove(docs / first.name)
    qa.index([docs])
    assert [d.path for d in qa.documents()] == [f"docs/{second.name}"]
    assert all(h.passage.doc == f"docs/{second.name}" for h in qa.ask(questions[0], k=10).hits)


def test_compact_on_no_index_says_so_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["compact", "--index", str(tmp_path / "nowhere")])
    assert result.exit_code != 0
    message = result.output.strip()
    assert message.startswith("Error: no index at") and "\n" not in message, message
