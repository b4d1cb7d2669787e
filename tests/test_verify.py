"""Checking a quote against its citation: ``QA.verify``, ``qa verify`` and the page's "Check a quote".

The logic runs on a small corpus with the fake embedder; the command and the
page run once with the real model on the seed index.
"""

from __future__ import annotations

import html
import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import page_handler
from qa import QA, CitationError, QueryError
from qa.cli import cli
from qa.verify import SIMILAR_RATIO, best_window, near_pattern, normalise

NOTES = (
    "Harbour notes\n"
    "\n"
    "The mayor said: \u201cWe will rebuild the harbour wall \u2014 whatever it costs.\u201d The council agreed.\n"
    "\n"
    "Engineers   inspected\n"
    "the gates in spring. They found rust on the third gate.\n"
    "\n"
    'The keeper said "the lamp is lit at dusk" and left.\n'
)
OTHER = "Orchard log\n\nThe keeper of the orchard picks cherries in June.\n\nThey found rust on the third gate.\n"
LONG = (
    "A long paragraph follows, longer than the fake model's window, so that it is cut into windows: "
    + " ".join(f"word{i}" for i in range(80))
    + ". The lighthouse keeper counted ships at dawn.\n"
)


@pytest.fixture
def docs(tmp_path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in {"notes.txt": NOTES, "other.txt": OTHER, "long.txt": LONG}.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def qa(fake_qa, docs) -> QA:
    report = fake_qa.index([docs])
    assert len(report.added) == 3, report
    return fake_qa


def text_of(qa: QA, doc: str) -> str:
    return qa.snapshot().document_text(doc)


def check_location(qa: QA, location) -> None:
    """A location's offsets give back its text, and its citation names the paragraph that holds it."""
    assert text_of(qa, location.doc)[location.start : location.end] == location.text
    shown = qa.show(location.citation, context=0).cited
    assert shown.doc == location.doc and shown.paragraph == location.paragraph
    assert shown.start <= location.start and location.end <= shown.end


# -- at the cited place -----------------------------------------------------------------


def test_exact_quote_is_exact_with_offsets(qa):
    quote = "They found rust on the third gate."
    verdict = qa.verify(quote, "notes.txt ¶3")
    assert verdict.status == "exact" and verdict.at_citation and verdict.score == 1.0
    assert verdict.citation == "notes.txt ¶3"
    assert verdict.match.text == quote and verdict.match.match == "exact"
    assert (verdict.match.doc, verdict.match.paragraph) == ("docs/notes.txt", 3)
    assert verdict.match.start == NOTES.index(quote)
    check_location(qa, verdict.match)
    assert verdict.found == ()  # not searched elsewhere


def test_whitespace_and_case_differences_are_near_exact(qa):
    verdict = qa.verify("  ENGINEERS inspected the gates   in Spring ", "notes.txt#3")
    assert verdict.status == "near-exact" and verdict.score == 1.0
    # the match is the document's own text, line break and all
    assert verdict.match.text == "Engineers   inspected\nthe gates in spring"
    check_location(qa, verdict.match)
    assert verdict.found == ()


def test_straight_quotes_and_hyphen_match_curly_quotes_and_dash(qa):
    quote = 'said: "We will rebuild the harbour wall - whatever it costs."'
    verdict = qa.verify(quote, "notes.txt ¶2")
    assert verdict.status == "near-exact"
    assert verdict.match.text == "said: \u201cWe will rebuild the harbour wall \u2014 whatever it costs.\u201d"
    check_location(qa, verdict.match)


def test_curly_quotes_in_the_quote_match_straight_ones_in_the_text(qa):
    verdict = qa.verify("The keeper said \u201cthe lamp is lit at dusk\u201d", "notes.txt ¶4")
    assert verdict.status == "near-exact"
    assert verdict.match.text == 'The keeper said "the lamp is lit at dusk"'


def test_misquote_is_similar_with_its_score_and_the_real_words(qa):
    verdict = qa.verify("They found rust on the fourth gate.", "notes.txt ¶3")
    assert verdict.status == "similar" and not verdict.at_citation
    assert SIMILAR_RATIO <= verdict.score < 1.0
    assert verdict.match.text == "They found rust on the third gate."
    check_location(qa, verdict.match)
    # nothing elsewhere is closer than the cited place
    assert all(f.score > verdict.score for f in verdict.found)


def test_whole_paragraph_of_several_windows_is_one_cited_passage(qa):
    paragraph = LONG.strip()
    windows = qa.snapshot().passages_of("docs/long.txt", 1)
    assert len(windows) > 1
    verdict = qa.verify(paragraph, "long.txt ¶1")
    assert verdict.status == "exact"
    assert (verdict.match.start, verdict.match.end) == (0, len(paragraph))
    assert verdict.match.citation == "long.txt ¶1"  # across windows: no chars in the citation


# -- elsewhere --------------------------------------------------------------------------


def test_quote_from_another_paragraph_is_found_there_with_offsets(qa):
    quote = "They found rust on the third gate."
    verdict = qa.verify(quote, "notes.txt ¶2")
    assert verdict.status == "not-found" and verdict.match is None
    assert verdict.score < SIMILAR_RATIO
    # the cited document first, then the other document holding the same words
    assert [(f.doc, f.paragraph, f.match) for f in verdict.found] == [
        ("docs/notes.txt", 3, "exact"),
        ("docs/other.txt", 3, "exact"),
    ]
    first = verdict.found[0]
    assert (first.start, first.end) == (NOTES.index(quote), NOTES.index(quote) + len(quote))
    assert first.citation == "notes.txt ¶3"
    for location in verdict.found:
        check_location(qa, location)
    # the citation it reports checks out
    assert qa.verify(quote, first.citation).status == "exact"


def test_quote_elsewhere_up_to_case_and_quotes_is_near_exact(qa):
    verdict = qa.verify('the MAYOR said: "we will rebuild', "other.txt ¶2")
    assert verdict.status == "not-found"
    assert [(f.doc, f.paragraph, f.match) for f in verdict.found] == [("docs/notes.txt", 2, "near-exact")]
    assert verdict.found[0].text == "The mayor said: \u201cWe will rebuild"
    check_location(qa, verdict.found[0])


def test_quote_in_another_window_is_cited_by_that_window(qa):
    windows = qa.snapshot().passages_of("docs/long.txt", 1)
    first, last = windows[0], windows[-1]
    quote = "The lighthouse keeper counted ships at dawn."
    assert quote not in first.text and quote in last.text
    verdict = qa.verify(quote, f"long.txt ¶1, chars {first.start}-{first.end}")
    assert verdict.status == "not-found"
    where = verdict.found[0]
    assert where.match == "exact" and where.citation == f"long.txt ¶1, chars {last.start}-{last.end}"
    check_location(qa, where)
    assert qa.verify(quote, where.citation).status == "exact"


def test_made_up_quote_is_not_found_and_closest_passages_are_listed(qa):
    verdict = qa.verify("Penguins migrate across the desert every autumn.", "notes.txt ¶2")
    assert verdict.status == "not-found" and verdict.match is None
    assert verdict.found, "the closest passages are listed"
    for location in verdict.found:
        assert location.match == "closest" and location.score < SIMILAR_RATIO
        check_location(qa, location)
        assert (location.doc, location.paragraph) != ("docs/notes.txt", 2)  # the cited place is not repeated


def test_near_misquote_elsewhere_is_reported_as_similar(qa):
    verdict = qa.verify("The keeper of the orchard picks plums in June.", "notes.txt ¶2")
    assert verdict.status == "not-found"
    top = verdict.found[0]
    assert (top.doc, top.paragraph, top.match) == ("docs/other.txt", 2, "similar")
    assert top.text == "The keeper of the orchard picks cherries in June."
    assert all(f.match == "similar" for f in verdict.found)
    check_location(qa, top)


def test_one_content_under_two_paths_is_reported_once(fake_qa, tmp_path):
    root = tmp_path / "dup"
    (root / "copy").mkdir(parents=True)
    (root / "a.txt").write_text(OTHER, encoding="utf-8")
    (root / "copy" / "a.txt").write_text(OTHER, encoding="utf-8")
    (root / "b.txt").write_text(NOTES, encoding="utf-8")
    fake_qa.index([root])
    verdict = fake_qa.verify("The keeper of the orchard picks cherries in June.", "b.txt ¶2")
    assert [f.match for f in verdict.found] == ["exact"]


def test_text_in_a_heading_is_not_reported_as_a_place(fake_qa, tmp_path):
    root = tmp_path / "md"
    root.mkdir()
    (root / "guide.md").write_text("# Guide\n\nIntro text here.\n\n## Setup steps\n\nRun the installer twice.\n")
    fake_qa.index([root])
    verdict = fake_qa.verify("Setup steps", "guide.md ¶1")
    assert verdict.status == "not-found"
    assert all(f.match not in ("exact", "near-exact") for f in verdict.found)  # the heading is no passage
    for location in verdict.found:
        check_location(fake_qa, location)
    assert verdict.found[0].citation == "guide.md, § Setup steps, ¶2"


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "citation, message",
    [
        ("nothing.txt ¶1", "no indexed document matches 'nothing.txt'"),
        ("notes.txt ¶99", "no paragraph 99"),
        ("notes.txt", "cannot read citation"),
    ],
)
def test_bad_citation_raises_citation_error(qa, citation, message):
    with pytest.raises(CitationError, match=re.escape(message)):
        qa.verify("They found rust", citation)


def test_empty_quote_raises_query_error(qa):
    with pytest.raises(QueryError, match="the quote is empty"):
        qa.verify(" \n ", "notes.txt ¶2")


# -- the matching helpers ---------------------------------------------------------------


def test_normalise_folds_case_space_quotes_dashes_and_ellipsis():
    assert normalise("  \u201cIt\u2019s  OK\u201d \u2013 he said\u2026 ") == "\"it's ok\"-he said..."


def test_near_pattern_finds_the_original_span():
    text = "Before. \u201cIt\u2019s\nOK\u201d\u2014he said\u2026 After."
    match = near_pattern("\"it's ok\" - HE SAID...").search(text)
    assert match and match.group() == "\u201cIt\u2019s\nOK\u201d\u2014he said\u2026"
    assert near_pattern("it is ok").search(text) is None


def test_best_window_picks_the_misquoted_sentence():
    text = "Cats sleep a lot. The barrier will cost 212 million euros. Dogs bark at night."
    ratio, start, end = best_window(text, "the barrier will cost 250 million euros")
    assert text[start:end] == "The barrier will cost 212 million euros."
    assert 0.85 < ratio < 1.0
    low, _, _ = best_window(text, "penguins migrate across deserts")
    assert low < SIMILAR_RATIO


# -- the command and the page, with the real model --------------------------------------

KESTREL = "000_kestrel_bay_tidal_barrier.txt"
MORVAN = "001_morvan_exile_government.txt"
SEEDS = Path(__file__).resolve().parent / "articles"
COST = "The barrier will cost an estimated 212 million euros"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.model
def test_cli_verify_json_exact(model, article_index):
    result = invoke("verify", COST, f"{KESTREL} ¶3", "--index", article_index, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    verdict = json.loads(result.stdout)
    assert verdict["status"] == "exact" and verdict["score"] == 1.0
    assert verdict["citation"] == f"{KESTREL} ¶3"
    m = verdict["match"]
    assert (m["doc"], m["paragraph"], m["start"], m["end"]) == (f"articles/{KESTREL}", 3, 376, 376 + len(COST))
    assert (SEEDS / KESTREL).read_text(encoding="utf-8")[m["start"] : m["end"]] == COST
    assert verdict["found"] == []


@pytest.mark.model
def test_cli_verify_json_finds_the_quote_in_the_other_article(model, article_index):
    quote = "Kostal was sharply critical of Tessaly\u2019s leader"  # the article has a straight apostrophe
    result = invoke("verify", quote, f"{KESTREL} ¶4", "--index", article_index, "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["status"] == "not-found" and verdict["match"] is None
    [where] = verdict["found"]
    assert (where["doc"], where["paragraph"], where["match"], where["citation"]) == (
        f"articles/{MORVAN}", 5, "near-exact", f"{MORVAN} ¶5"
    )
    text = (SEEDS / MORVAN).read_text(encoding="utf-8")
    assert text[where["start"] : where["end"]] == where["text"] == "Kostal was sharply critical of Tessaly's leader"


@pytest.mark.model
def test_cli_verify_made_up_quote_lists_closest_passages(model, article_index):
    result = invoke("verify", "Penguins migrate across the desert every autumn.", f"{MORVAN} ¶4", "--index", article_index)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"not-found: the quote is not at {MORVAN} ¶4 (best similarity ")
    assert "It is not in the indexed documents; the closest passages are:" in result.stdout
    assert re.search(r"^1\. \S+\.txt ¶\d+   articles/\S+ \[\d+, \d+\)  closest 0\.\d\d$", result.stdout, flags=re.M)


@pytest.mark.model
def test_cli_verify_readable_misquote(model, article_index):
    result = invoke("verify", "Aldan has won a war but he has not won an argument", f"{MORVAN} ¶4", "--index", article_index)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"not-found: the quote is not at {MORVAN} ¶4")
    assert "It is in no indexed document as quoted; similar text is at:" in lines
    assert any(line.startswith(f"1. {MORVAN} ¶5   articles/{MORVAN} [") and " similar 0.9" in line for line in lines)


@pytest.mark.model
@pytest.mark.parametrize(
    "citation, message",
    [
        ("nothing.txt ¶2", "Error: no indexed document matches 'nothing.txt' (see qa list)"),
        ("garbage", "Error: cannot read citation 'garbage'"),
    ],
)
def test_cli_verify_bad_citation_is_one_line_exit_1(model, article_index, citation, message):
    result = invoke("verify", COST, citation, "--index", article_index)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert result.stdout == ""


# -- the page -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_qa(article_index, real_embedder) -> QA:
    return QA(article_index, embedder=real_embedder)


@pytest.mark.model
def test_page_check_quote_marks_the_quote_in_the_cited_passage(seed_qa):
    from qa.ui import build_app

    check = page_handler(build_app(seed_qa), "check_quote")
    page = check(COST.lower(), f"{KESTREL} ¶3")
    assert 'data-status="near-exact"' in page
    assert f"Near-exact: the quote is at {KESTREL} ¶3" in page
    assert f"<mark>{html.escape(COST)}</mark>" in page
    assert "qa-found" not in page


@pytest.mark.model
def test_page_check_quote_shows_where_it_really_is(seed_qa):
    from qa.ui import build_app

    check = page_handler(build_app(seed_qa), "check_quote")
    page = check("Kostal was sharply critical of Tessaly's leader", f"{KESTREL} ¶4")
    assert 'data-status="not-found"' in page and "It is at:" in page
    found = re.findall(r'<div class="qa-card qa-found" data-rank="\d+">.*?</div></div>', page, flags=re.S)
    assert len(found) == 1
    assert f'title="Show in articles/{MORVAN}">{MORVAN} ¶5</a>' in found[0]  # a link that opens the source
    assert f"articles/{MORVAN} [1034, 1081)" in found[0]
    assert html.escape("Kostal was sharply critical of Tessaly's leader") in found[0]


@pytest.mark.model
def test_page_check_quote_errors_are_one_line(seed_qa):
    from qa.ui import build_app

    check = page_handler(build_app(seed_qa), "check_quote")
    page = check("x", "nothing<b>.txt ¶2")
    error = re.search(r'<div class="qa-error">(.*?)</div>', page).group(1)
    assert error == html.escape("no indexed document matches 'nothing<b>.txt' (see qa list)")
    assert "<b>" not in page
    assert "Type a quote" in check("", f"{KESTREL} ¶3")


@pytest.mark.model
def test_page_check_quote_escapes_document_text(tmp_path, real_embedder):
    from qa.ui import build_app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "x<i>y.txt").write_text(
        "Review\n\nThe page printed <script>alert(1)</script> as text.\n\nMarkup such as <b>x</b> stays.\n",
        encoding="utf-8",
    )
    qa = QA(tmp_path / "index", embedder=real_embedder)
    qa.index([docs])
    check = page_handler(build_app(qa), "check_quote")
    page = check("printed <SCRIPT>alert(1)</script>", "x<i>y.txt ¶3")  # wrong paragraph, odd case
    assert "<script" not in page.lower() and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x&lt;i&gt;y.txt ¶2" in page  # where it really is
    assert set(re.findall(r"</?([a-zA-Z]+)", page)) <= {"div", "span", "mark", "a"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model
def test_verify_api_endpoint(seed_qa):
    from gradio_client import Client

    from qa.ui import build_app, launch

    app = build_app(seed_qa)
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        out = client.predict(quote=COST, citation=f"{KESTREL}#3", api_name="/verify")
        assert out == seed_qa.verify(COST, f"{KESTREL} ¶3").to_json()
        assert out["status"] == "exact" and out["match"]["start"] == 376
        with pytest.raises(Exception, match="no indexed document matches 'nothing.txt'"):
            client.predict(quote=COST, citation="nothing.txt ¶1", api_name="/verify")
    finally:
        app.close()


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.model
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make test installs it)")
def test_check_a_quote_in_a_real_browser(seed_qa):
    from playwright.sync_api import sync_playwright

    from qa.ui import build_app, launch

    app = build_app(seed_qa)
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.locator("#check-panel").get_by_text("Check a quote").click()  # open the accordion
            page.locator("#quote textarea").fill("About 96,000 people fled Morvan")
            page.locator("#citation textarea").fill(f"{MORVAN} ¶5")
            page.locator("#check").click()
            verdict = page.locator("#verdict .qa-verdict")
            verdict.wait_for(timeout=60_000)
            assert verdict.get_attribute("data-status") == "not-found"
            found = verdict.locator(".qa-found")
            assert found.count() == 1
            assert found.locator(".qa-cite").inner_text() == f"{MORVAN} ¶6"
            assert found.locator(".qa-text").inner_text() == "About 96,000 people fled Morvan"

            page.locator("#citation textarea").fill(f"{MORVAN} ¶6")
            page.locator("#check").click()
            page.locator('#verdict .qa-verdict[data-status="exact"]').wait_for(timeout=60_000)
            assert page.locator("#verdict mark").inner_text() == "About 96,000 people fled Morvan"
            browser.close()
    finally:
        app.close()
