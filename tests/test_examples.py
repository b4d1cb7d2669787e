"""The chat page's example questions: from the index folder's file, else from the documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.examples import EXAMPLES_FILE, SEED_EXAMPLES, example_questions, read_examples

SEEDS = Path(__file__).resolve().parent.parent / "seeds"


def test_the_index_folders_file_gives_the_examples(fake_qa, corpus):
    fake_qa.index([corpus])
    (fake_qa.index_dir / EXAMPLES_FILE).write_text(
        "# for the orchard notes\n\nWhen are pears pruned?\n  Who picks the cherries?  \n", encoding="utf-8"
    )
    assert example_questions(fake_qa) == ["When are pears pruned?", "Who picks the cherries?"]
    assert example_questions(fake_qa, limit=1) == ["When are pears pruned?"]


def test_without_a_file_each_document_gives_one_from_its_own_words(fake_qa, corpus):
    fake_qa.index([corpus])
    assert example_questions(fake_qa) == [
        # alpha.txt opens with a sentence: its first name of two words
        "What is said about Kestrel Bay?",
        # beta.md: the heading is no passage; a sentence with no name of two words, and
        # its opening word alone is no name ("Apple trees need pruning")
        "What is said about Pears?",
        "What is said about gamma?",  # sub/gamma.txt: no name at all, the file name
    ]


def test_a_title_line_is_the_subject(fake_qa, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Microbial ecology of alpine lakes\n\nThe lakes were sampled twice.\n", encoding="utf-8")
    fake_qa.index([docs])
    assert example_questions(fake_qa) == ["What is said about Microbial ecology of alpine lakes?"]


def test_no_index_no_examples(fake_qa):
    assert example_questions(fake_qa) == []


def test_the_seed_examples_are_about_the_seeds():
    questions = read_examples(SEED_EXAMPLES)
    assert len(questions) == 4 and all(q.endswith("?") for q in questions)
    seeds = " ".join(p.read_text(encoding="utf-8") for p in SEEDS.glob("*.txt"))
    assert "East Turkistan" in seeds and any("East Turkistan" in q for q in questions)


@pytest.mark.model
def test_app_writes_the_seed_examples_beside_a_new_index(tmp_path, monkeypatch, model):
    import app

    served = {}
    monkeypatch.setenv("QA_INDEX", str(tmp_path / "index"))
    monkeypatch.setattr(app, "launch", lambda page, **kw: served.update(page=page, **kw))
    app.main()
    assert read_examples(tmp_path / "index" / EXAMPLES_FILE) == read_examples(SEED_EXAMPLES)
    assert served["page"] is not None
