"""Follow-up questions and the document filter."""

from __future__ import annotations

import pytest

from qa import QA
from qa.followup import contextualize, is_follow_up, names_in

MORVAN = "articles/001_morvan_exile_government.txt"
KESTREL = "articles/000_kestrel_bay_tidal_barrier.txt"


@pytest.mark.parametrize(
    "question,expected",
    [
        ("What did he say about Aldan?", True),
        ("Where do they live now?", True),
        ("When does it open?", True),
        ("How many homes were flooded in January?", False),
        ("Who is the president of the exile government?", False),
    ],
)
def test_is_follow_up(question, expected):
    assert is_follow_up(question) is expected


def test_names_skip_openers_datelines_and_calendar_words():
    text = "GENEVA, 2 October - About 96,000 people fled Morvan on Sunday, crossing the Lazar Pass into Corvia."
    assert names_in(text) == ["Morvan", "Lazar Pass", "Corvia"]
    assert names_in("Andrej Kostal, a former judge, was elected president.") == ["Andrej Kostal"]
    assert names_in("The deputy of Kostal's office, Irina Sova, said so.") == ["Kostal", "Irina Sova"]
    assert names_in("Kostal was critical.") == []  # a lone capitalised opener may be any word


def test_contextualize_adds_names_only_for_follow_ups(fake_qa, corpus):
    fake_qa.index([corpus])
    previous = fake_qa.ask("apple trees")
    assert contextualize("How many apples?", previous) == "How many apples?"
    assert contextualize("What did he say?", None) == "What did he say?"


@pytest.mark.model
def test_follow_up_finds_the_quote(article_index, real_embedder):
    qa = QA(article_index, embedder=real_embedder)
    first = qa.ask("Who is Kostal's deputy?", k=3)
    assert "Irina Sova" in first.hits[0].highlight
    follow_up = qa.ask("What did she say about a second case?", k=3, previous=first)
    assert "Irina Sova" in (follow_up.searched or "")
    assert (follow_up.hits[0].passage.doc, follow_up.hits[0].passage.paragraph) == (MORVAN, 10)

    first = qa.ask("Who was elected president of the exile government?", k=3)
    follow_up = qa.ask("What did he say about Aldan?", k=3, previous=first)
    assert (follow_up.hits[0].passage.doc, follow_up.hits[0].passage.paragraph) == (MORVAN, 5)
    assert "Aldan has won a war" in follow_up.hits[0].passage.text
    assert follow_up.question == "What did he say about Aldan?"  # the user's words, not the search text
    if follow_up.searched is not None:
        assert follow_up.to_json()["searched_for"] == follow_up.searched


@pytest.mark.model
def test_follow_up_with_a_pronoun_for_a_person_named_only_in_the_answer(article_index, real_embedder):
    qa = QA(article_index, embedder=real_embedder)
    first = qa.ask("Who voted against the barrier?", k=3)
    follow_up = qa.ask("What does she propose instead?", k=3, previous=first)
    assert "Petra Lund" in (follow_up.searched or "")
    assert (follow_up.hits[0].passage.doc, follow_up.hits[0].passage.paragraph) == (KESTREL, 7)


@pytest.mark.model
def test_document_filter_restricts_every_result(article_index, real_embedder):
    qa = QA(article_index, embedder=real_embedder)
    unfiltered = qa.ask("What did Kostal say about President Aldan?", k=5)
    assert unfiltered.hits[0].passage.doc == MORVAN
    filtered = qa.ask("What did Kostal say about President Aldan?", k=5, docs=[KESTREL])
    assert filtered.hits and {h.passage.doc for h in filtered.hits} == {KESTREL}
    assert qa.ask("anything at all", k=5, docs=["no/such/doc.txt"]).hits == ()


def test_document_filter_with_the_fake_model(fake_qa, corpus):
    fake_qa.index([corpus])
    docs = [d.path for d in fake_qa.documents()]
    for doc in docs:
        answer = fake_qa.ask("apple plum orchard tree", k=10, docs=[doc])
        assert answer.hits and all(h.passage.doc == doc for h in answer.hits)
