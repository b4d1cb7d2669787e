"""The chat page's Python side and its ``/ask`` API over HTTP, with the real model.

(The page in a real browser is tested in test_browser.py.)
"""

from __future__ import annotations

import csv
import html
import json
import re
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import page_handler
from qa import QA
from qa.ui import build_app, launch, new_chat, render_turn

pytestmark = pytest.mark.model

KESTREL = "000_kestrel_bay_tidal_barrier.txt"
MORVAN = "001_morvan_exile_government.txt"
ALDAN = "What did Kostal say about President Aldan?"
FLOODED = "How many homes were flooded in January?"
# What Kostal said about him, in his words (the sentence before only says he was critical).
ALDAN_SENTENCE = '"President Aldan says he has brought peace to Morvan. There is no peace in a valley emptied of its people," Kostal said.'
RESULT_KEYS = {
    "rank", "score", "doc", "paragraph", "page", "start", "end", "text",
    "highlight", "highlight_start", "highlight_end", "similarity", "confidence", "citation", "section", "also_in",
    "ocr", "ocr_confidence",
}


@pytest.fixture(scope="module")
def seed_qa(article_index, real_embedder) -> QA:
    return QA(article_index, embedder=real_embedder)


def cards(page: str) -> list[str]:
    return re.findall(r'<div class="qa-card".*?</div></div>', page, flags=re.S)


def citation_text(card: str) -> str:
    return html.unescape(re.search(r'<a class="qa-cite qa-open"[^>]*>(.*?)</a>', card).group(1))


def test_render_turn_shows_citation_and_marks_best_sentence(seed_qa):
    answer = seed_qa.ask(ALDAN, k=3).to_json()
    page = render_turn(ALDAN, answer)
    assert page.count('class="qa-card"') == 3
    first = cards(page)[0]
    assert 'data-rank="1"' in first
    assert citation_text(first) == f"{MORVAN} ¶5"
    key = html.unescape(re.search(r'data-key="([^"]*)"', first).group(1))
    assert json.loads(key) == {"doc": f"articles/{MORVAN}", "start": 1034, "end": 1461}
    assert "qa-cue-strong" in first or "qa-cue-fair" in first
    assert f"<mark>{html.escape(ALDAN_SENTENCE)}</mark>" in first
    assert first.count("<mark>") == 1
    assert f"articles/{MORVAN} [1034, 1461)" in first
    assert f"Q: {html.escape(ALDAN)}" in page
    assert "do not seem to answer" not in page and "<details" not in page
    # every card's text, unescaped and unmarked, is the cited passage
    for card, result in zip(cards(page), answer["results"]):
        body = card.split('<div class="qa-text">', 1)[1].removesuffix("</div></div>")
        assert html.unescape(body.replace("<mark>", "").replace("</mark>", "")) == result["text"]
        assert html.escape(result["citation"]) in card


def test_render_turn_notes_weak_and_empty_answers():
    weak = {"answered": False, "results": []}
    assert "No passage in the indexed documents matches" in render_turn("q", weak)
    error = render_turn("q<", error="boom <b>bad</b>")
    assert '<div class="qa-error">boom &lt;b&gt;bad&lt;/b&gt;</div>' in error
    assert "Q: q&lt;" in error


def test_respond_adds_turns_in_order_and_keeps_the_previous_answer(seed_qa):
    respond = page_handler(build_app(seed_qa), "respond")
    chat, page, textbox, *_ = respond(ALDAN, 3, [], new_chat())
    assert textbox == "" and len(chat["turns"]) == 1
    assert chat["previous"].hits[0].passage.paragraph == 5
    assert page.count('class="qa-card"') == 3
    assert f"{MORVAN} ¶5" in page and f"<mark>{html.escape(ALDAN_SENTENCE)}</mark>" in page

    chat, page, _, *_ = respond(FLOODED, 2.0, [], chat)  # the slider may send a float
    assert len(chat["turns"]) == 2
    assert page.count('class="qa-card"') == 5
    assert page.index(html.escape(ALDAN)) < page.index(html.escape(FLOODED))  # a chat: newest last
    assert citation_text(cards(page)[3]) == f"{KESTREL} ¶5"

    same, unchanged, _, *_ = respond("   ", 3, [], chat)
    assert same == chat and unchanged == page


def test_conversation_downloads_hold_every_citation_with_its_link(seed_qa):
    respond = page_handler(build_app(seed_qa), "respond")
    chat, _, _, none_json, none_csv = respond("   ", 3, [], new_chat())
    assert none_json == {"__type__": "update"} and none_csv == {"__type__": "update"}  # nothing asked yet
    chat, _, _, *_ = respond(ALDAN, 3, [], chat)
    chat, _, _, json_file, csv_file = respond(FLOODED, 2, [], chat)
    asked = [seed_qa.ask(ALDAN, k=3).to_json(), seed_qa.ask(FLOODED, k=2).to_json()]

    saved = json.loads(Path(json_file["value"]).read_text(encoding="utf-8"))
    assert saved["index"] == str(seed_qa.index_dir)
    assert [a["question"] for a in saved["answers"]] == [ALDAN, FLOODED]
    assert [a["id"] for a in saved["answers"]] == ["1", "2"]
    for got, expected in zip(saved["answers"], asked):
        assert [(r["doc"], r["start"], r["end"], r["citation"]) for r in got["results"]] == [
            (r["doc"], r["start"], r["end"], r["citation"]) for r in expected["results"]
        ]
        for r in got["results"]:
            link = parse_qs(urlparse(r["link"]).query)
            assert (link["doc"], link["start"], link["end"]) == ([r["doc"]], [str(r["start"])], [str(r["end"])])
            text = seed_qa.snapshot().document_text(r["doc"])
            assert text[r["start"]:r["end"]] == r["text"]

    with open(csv_file["value"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["id"], row["rank"], row["citation"], row["link"]) for row in rows] == [
        (a["id"], str(r["rank"]), r["citation"], r["link"]) for a in saved["answers"] for r in a["results"]
    ]
    assert len(rows) == 5 and rows[0]["question"] == ALDAN and rows[0]["text"] == saved["answers"][0]["results"][0]["text"]

    # a new conversation has nothing to download
    clear = page_handler(build_app(seed_qa), "new_conversation")
    fresh, page, off_json, off_csv = clear()
    assert fresh == new_chat() and page == "" and off_json["interactive"] is False and off_csv["value"] is None


def test_respond_reads_a_follow_up_with_the_previous_answer(seed_qa):
    respond = page_handler(build_app(seed_qa), "respond")
    chat, _, _, *_ = respond("Who voted against the barrier?", 3, [], new_chat())
    chat, page, _, *_ = respond("What does she propose instead?", 3, [], chat)
    last = page.split('<div class="qa-turn">')[-1]
    assert "Read as a follow-up" in last and "Petra Lund" in last
    assert citation_text(cards(last)[0]) == f"{KESTREL} ¶7"


def test_respond_searches_only_the_chosen_documents(seed_qa):
    respond = page_handler(build_app(seed_qa), "respond")
    _, page, _, *_ = respond(ALDAN, 3, [f"articles/{KESTREL}"], new_chat())
    assert cards(page) and all(citation_text(c).startswith(KESTREL) for c in cards(page))


def test_respond_off_topic_question_says_no_good_answer(seed_qa):
    respond = page_handler(build_app(seed_qa), "respond")
    _, page, _, *_ = respond("How do I bake a chocolate cake?", 2, [], new_chat())
    assert "The documents do not seem to answer this question." in page
    assert page.count('class="qa-card"') == 2  # the closest passages are still offered,
    assert page.index("<details") < page.index('class="qa-card"')  # collapsed


def test_respond_shows_library_error_as_one_line(tmp_path, real_embedder):
    respond = page_handler(build_app(QA(tmp_path / "nowhere", embedder=real_embedder)), "respond")
    chat, page, _, *_ = respond("When?", 3, [], new_chat())
    error = re.search(r'<div class="qa-error">(.*?)</div>', page).group(1)
    assert error.startswith(html.escape(f"no index at {tmp_path / 'nowhere'}"))
    assert "\n" not in error and "Traceback" not in page
    assert len(chat["turns"]) == 1


def test_document_markup_is_escaped_never_rendered(tmp_path, real_embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "x<i>y.txt").write_text(
        "Security review notes\n\n"
        "The review page printed <script>alert(1)</script> as plain text when the reviewer opened it.\n\n"
        "Markup such as <b>x</b> must appear exactly as typed by the reviewer.\n",
        encoding="utf-8",
    )
    qa = QA(tmp_path / "index", embedder=real_embedder)
    assert qa.index([docs]).added == ["docs/x<i>y.txt"]
    respond = page_handler(build_app(qa), "respond")
    _, page, _, *_ = respond("What did the review page print <script>alert(2)</script>?", 3, [], new_chat())

    assert page.count('class="qa-card"') == 3
    assert "<script" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # the question, too
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "x&lt;i&gt;y.txt ¶2" in page
    # the only tags are the page's own
    tags = set(re.findall(r"</?([a-zA-Z]+)", page))
    assert tags <= {"div", "span", "mark", "a"}, tags
    # and the source view escapes the document too
    key = html.unescape(re.search(r'data-key="([^"]*)"', page).group(1))
    source = page_handler(build_app(qa), "open_source")(key)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source and "<script" not in source
    assert 'id="qa-cited"' in source


# -- the running app and its /ask API ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(seed_qa):
    app = build_app(seed_qa)
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_page_is_served(server_url):
    import httpx

    response = httpx.get(server_url, timeout=30)
    assert response.status_code == 200
    assert "Ask your documents" in response.text


def test_ask_api_returns_a_batch_line(server_url, seed_qa):
    from gradio_client import Client

    client = Client(server_url, verbose=False)
    out = client.predict(question=ALDAN, k=3, api_name="/ask")
    assert isinstance(out, dict), type(out)  # gradio_client decodes the JSON
    assert set(out) == {"id", "question", "answered", "confidence", "results"}
    assert (out["id"], out["question"], out["answered"]) == ("1", ALDAN, True)
    assert len(out["results"]) == 3
    for rank, r in enumerate(out["results"], start=1):
        assert set(r) == RESULT_KEYS and r["rank"] == rank
        assert r["ocr"] is False and r["ocr_confidence"] is None  # the seeds are text
    top = out["results"][0]
    assert (Path(top["doc"]).name, top["paragraph"], top["citation"]) == (MORVAN, 5, f"{MORVAN} ¶5")
    assert top["highlight"] == ALDAN_SENTENCE

    # the same object a batch line (QA.ask(...).to_json()) holds, up to float noise
    local = seed_qa.ask(ALDAN, k=3, id="1").to_json()
    assert out["confidence"] == pytest.approx(local["confidence"], abs=1e-3)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("score", "similarity", "confidence")} for r in rs]  # noqa: E731
    assert strip(out["results"]) == strip(local["results"])

    default_k = client.predict(question=FLOODED, api_name="/ask")
    assert len(default_k["results"]) == 5
    assert (Path(default_k["results"][0]["doc"]).name, default_k["results"][0]["paragraph"]) == (KESTREL, 5)


def test_upload_refuses_other_types_and_oversize_files_and_names_broken_ones(article_index, real_embedder, tmp_path, monkeypatch):
    import shutil

    import qa.ui

    index = tmp_path / "index"
    shutil.copytree(article_index, index)
    add_files = page_handler(build_app(QA(index, embedder=real_embedder)), "add_files")
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ\x90\x00")
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000, encoding="utf-8")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7 not really")
    good = tmp_path / "../evil/../note.txt"  # a path that tries to leave the uploads folder
    (tmp_path / "note.txt").write_text("The ferry to Skerry leaves at nine every morning.\n", encoding="utf-8")
    monkeypatch.setattr(qa.ui, "UPLOAD_MAX_BYTES", 1000)
    status, documents, _ = add_files([str(exe), str(big), str(broken), str(tmp_path / "note.txt")])
    assert "Not added: tool.exe: type .exe is not accepted" in html.unescape(status)
    assert "Not added: big.txt: larger than the" in html.unescape(status)
    assert "broken.pdf" in status and "not a readable PDF" in status
    assert "Added 1 document(s): uploads/note.txt" in status
    assert "uploads/note.txt" in documents and "tool.exe" not in documents
    assert (index / "uploads" / "note.txt").exists() and not (index / "uploads" / "tool.exe").exists()
    assert qa.ui._safe_name(str(good)) == "note.txt"
    assert qa.ui._safe_name("../../etc/passwd") == "passwd"
    status, _, _ = add_files([])
    assert "choose one or more files first" in status


def test_a_passage_link_survives_re_indexing_and_names_its_words(fake_qa, corpus):
    from urllib.parse import parse_qs

    from qa.render import fingerprint, passage_link

    fake_qa.index([corpus])
    hit = fake_qa.ask("When was the tidal barrier finished?", k=1).hits[0].passage
    link = passage_link(hit.doc, hit.start, hit.end, hit.text)
    params = {k: v[0] for k, v in parse_qs(link[1:]).items()}
    assert params == {"doc": hit.doc, "start": str(hit.start), "end": str(hit.end), "sha": fingerprint(hit.text)}
    # the same file indexed again (new time, same words): the same link
    path = corpus / "alpha.txt"
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    fake_qa.index([corpus])
    again = fake_qa.ask("When was the tidal barrier finished?", k=1).hits[0].passage
    assert passage_link(again.doc, again.start, again.end, again.text) == link
    # the file edited before the passage: the range now holds other words, which the sha tells
    path.write_text("A new opening line.\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    fake_qa.index([corpus])
    text = fake_qa.snapshot().document_text(hit.doc)
    assert fingerprint(text[hit.start : hit.end]) != params["sha"]


def test_the_cue_on_the_seeds_tells_a_good_match_from_a_poor_one(seed_index, real_embedder):
    """The words beside a passage are the calibrated confidence: the passage that answers a
    paraphrased question and the closest passage to a question the seeds have nothing on get
    different words. (Near-topic questions still mostly get "may answer": the abstention
    figures of the quality issue.)"""
    from qa import QA
    from qa.render import cue

    qa = QA(seed_index, embedder=real_embedder)
    page = page_handler(build_app(qa), "respond")
    good = qa.ask("Who is the foreign minister of the exile government?", k=1)
    poor = qa.ask("How do I bake a chocolate cake?", k=1)
    assert good.hits[0].confidence > poor.hits[0].confidence
    (good_level, good_words), (poor_level, poor_words) = cue(good.hits[0].confidence), cue(poor.hits[0].confidence)
    assert good_level in ("strong", "fair") and poor_level == "weak" and good_words != poor_words
    for question, level, words in ((good.question, good_level, good_words), (poor.question, poor_level, poor_words)):
        _, shown, _, *_ = page(question, 1, [], new_chat())
        first = cards(shown)[0]
        assert f"qa-cue-{level}" in first and html.escape(words) in first
