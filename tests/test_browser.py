"""The chat page in a real headless Chromium (Debian's /usr/bin/chromium via Playwright).

Set QA_SCREENSHOTS=docs to refresh the README's pictures; by default they go
to a temporary folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from qa import QA
from qa.ui import build_app, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The real seed articles: the exile government on Pakistan and China, and on Azerbaijan and China.
PAKISTAN = "000_1e317d521278b0dc.txt"
AZERBAIJAN = "001_a6e42268cab0470d.txt"
WAIT = 60_000

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ["QA_SCREENSHOTS"]) if os.environ.get("QA_SCREENSHOTS") else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page_url(seed_index, real_embedder, tmp_path_factory):
    # A copy: uploads write to the index.
    index = tmp_path_factory.mktemp("browser") / "index"
    shutil.copytree(seed_index, index)
    app = build_app(QA(index, embedder=real_embedder))
    port = _free_port()
    launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(page_url, wait_until="domcontentloaded")
    page.locator("#question textarea").wait_for(timeout=WAIT)
    yield page
    page.close()


def ask(page, question: str):
    """Ask and return the locator of the newest turn once its answer is shown."""
    before = page.locator("#conversation .qa-turn").count()
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()
    page.locator("#conversation .qa-turn").nth(before).wait_for(timeout=WAIT)
    return page.locator("#conversation .qa-turn").nth(before)


def test_question_shows_cited_passage_with_highlight(page, screenshots):
    turn = ask(page, "Who is the foreign minister of the exile government?")
    first = turn.locator(".qa-card").first
    assert first.locator(".qa-cite").inner_text() == f"{PAKISTAN} ¶4"
    assert "Salih Hudayar" in first.locator("mark").inner_text()
    # the calibrated confidence in words, and its figure on hover
    assert first.locator(".qa-cue").inner_text() in ("likely answers", "may answer")
    assert "in 10 answered their question" in first.locator(".qa-cue").get_attribute("title")
    page.screenshot(path=str(screenshots / "chat.png"), full_page=True)
    assert (screenshots / "chat.png").stat().st_size > 10_000


def test_clicking_a_citation_opens_the_source_beside_the_chat(page, screenshots):
    turn = ask(page, "Which court should look into Chinese officials?")
    first = turn.locator(".qa-card").first
    passage = first.locator(".qa-text").inner_text()
    first.locator("a.qa-open").click()
    cited = page.locator("#source mark#qa-cited")
    cited.wait_for(timeout=WAIT)
    assert cited.inner_text() == passage
    assert f"seeds/{PAKISTAN}" in page.locator("#source .qa-source-head").inner_text()
    # the whole document is there, the cited passage in view inside its scroll box
    source_text = page.locator("#source .qa-source").inner_text()
    assert source_text.strip().startswith("date 2024-09-23 Washington DC")
    page.wait_for_function(
        """() => { const m = document.getElementById('qa-cited'); const box = m.closest('.qa-source');
                   const a = m.getBoundingClientRect(), b = box.getBoundingClientRect();
                   return a.top >= b.top - 1 && a.top <= b.bottom; }""",
        timeout=WAIT,
    )
    # source and chat side by side
    chat_box = page.locator("#conversation").bounding_box()
    source_box = page.locator("#source").bounding_box()
    assert source_box["x"] > chat_box["x"] + chat_box["width"] - 1
    page.screenshot(path=str(screenshots / "source.png"), full_page=True)


def test_a_follow_up_question_finds_the_quote(page):
    ask(page, "Who is the president of the exile government?")
    turn = ask(page, "What did he call Azerbaijan's agreements?")
    first = turn.locator(".qa-card").first
    assert first.locator(".qa-cite").inner_text() == f"{AZERBAIJAN} ¶6"
    assert "this is capitulation" in first.locator(".qa-text").inner_text()


def test_an_off_topic_question_says_so_and_collapses_the_closest(page, screenshots):
    turn = ask(page, "How do I bake a chocolate cake?")
    assert "do not seem to answer" in turn.locator(".qa-unanswered").inner_text()
    details = turn.locator("details.qa-closest")
    assert details.get_attribute("open") is None
    assert not turn.locator(".qa-card").first.is_visible()  # collapsed
    details.locator("summary").click()
    assert turn.locator(".qa-card").first.is_visible()
    page.screenshot(path=str(screenshots / "off-topic.png"), full_page=True)


def test_upload_a_file_then_find_its_content(page, tmp_path, screenshots):
    note = tmp_path / "lighthouse.md"
    note.write_text(
        "# Lighthouse\n\nThe Skerry lighthouse was automated in 1987 and its last keeper, Tomas Brenn, moved to the mainland.\n",
        encoding="utf-8",
    )
    rejected = tmp_path / "tool.exe"
    rejected.write_bytes(b"MZ\x90\x00")
    page.locator("#documents-panel").get_by_text("Documents").first.click()
    page.locator("#upload input[type=file]").set_input_files([str(note), str(rejected)])
    page.locator("#add").click()
    status = page.locator("#upload-status .qa-upload")
    status.wait_for(timeout=WAIT)
    page.locator("#upload-status .qa-added").wait_for(timeout=WAIT)
    assert "uploads/lighthouse.md" in status.inner_text()
    # the page does not even send a file of another type (the server refuses one too: test_page.py)
    assert "uploads/lighthouse.md" in page.locator("#documents").inner_text()
    assert "tool.exe" not in page.locator("#documents").inner_text()
    page.screenshot(path=str(screenshots / "upload.png"), full_page=True)
    turn = ask(page, "When was the Skerry lighthouse automated?")
    first = turn.locator(".qa-card").first
    assert first.locator(".qa-cite").inner_text() == "lighthouse.md, § Lighthouse, ¶1"
    assert "1987" in first.locator("mark").inner_text()


def test_a_document_with_script_is_shown_as_text(page, tmp_path):
    hostile = tmp_path / "hostile.txt"
    hostile.write_text(
        "Incident report\n\nThe attacker pasted <script>window.__pwned = 1</script> and "
        '<img src=x onerror="window.__pwned = 2"> into the visitor log of the museum.\n',
        encoding="utf-8",
    )
    page.locator("#documents-panel").get_by_text("Documents").first.click()
    page.locator("#upload input[type=file]").set_input_files([str(hostile)])
    page.locator("#add").click()
    page.locator("#upload-status .qa-added").wait_for(timeout=WAIT)
    turn = ask(page, "What did the attacker paste into the visitor log of the museum?")
    first = turn.locator(".qa-card").first
    assert "<script>window.__pwned = 1</script>" in first.locator(".qa-text").inner_text()
    first.locator("a.qa-open").click()
    page.locator("#source mark#qa-cited").wait_for(timeout=WAIT)
    assert "<img src=x" in page.locator("#source .qa-source").inner_text()
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("#conversation script, #conversation img, #source script, #source img").count() == 0


def test_page_loads_no_external_resources(browser, page_url):
    """The page must work offline: every request it makes stays on the local server."""
    page = browser.new_page()
    outside: list[str] = []
    local = page_url.rstrip("/")

    def record(request):
        if not request.url.startswith((local, "data:", "blob:")):
            outside.append(request.url)

    page.on("request", record)
    page.goto(page_url, wait_until="domcontentloaded")
    page.locator("#question textarea").wait_for(timeout=WAIT)
    page.wait_for_timeout(1500)
    examples = page.get_by_text("Who is the foreign minister of the exile government?")
    assert examples.count() >= 1  # the seeds' example questions on first load
    page.close()
    assert outside == []


# -- sharing safely: the login page, a read-only page ---------------------------------


@pytest.fixture(scope="module")
def guarded_url(seed_index, real_embedder, tmp_path_factory):
    from qa.auth import Logins, read_users, set_password

    file = tmp_path_factory.mktemp("users") / "users"
    set_password(file, "alice", "right-password", rounds=4)
    app = build_app(QA(seed_index, embedder=real_embedder), read_only=True)
    port = _free_port()
    launch(app, logins=Logins(read_users(file)), read_only=True, server_name="127.0.0.1", server_port=port,
           prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_login_page_refuses_a_wrong_password_and_the_right_one_lets_you_ask(browser, guarded_url, screenshots):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(guarded_url, wait_until="domcontentloaded")
    password = page.locator("input[type=password]")
    password.wait_for(timeout=WAIT)
    assert page.locator("#question textarea").count() == 0  # nothing of the page before logging in
    page.screenshot(path=str(screenshots / "login.png"), full_page=True)
    user = page.locator("input:not([type=password])").first
    user.fill("alice")
    password.fill("wrong")
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.get_by_text(re.compile("incorrect credentials", re.I)).wait_for(timeout=WAIT)
    assert page.locator("#question textarea").count() == 0
    user.fill("alice")  # the login page clears the form after a refusal
    password.fill("right-password")
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#question textarea").wait_for(timeout=WAIT)
    turn = ask(page, "Who is the foreign minister of the exile government?")
    assert turn.locator(".qa-card .qa-cite").first.inner_text() == f"{PAKISTAN} ¶4"
    page.close()


def test_a_read_only_page_has_no_upload_and_its_server_refuses_one(browser, guarded_url):
    page = browser.new_page()
    page.goto(guarded_url, wait_until="domcontentloaded")
    page.locator("input[type=password]").wait_for(timeout=WAIT)
    page.locator("input:not([type=password])").first.fill("alice")
    page.locator("input[type=password]").fill("right-password")
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.locator("#question textarea").wait_for(timeout=WAIT)
    page.locator("#documents-panel").get_by_text("Documents").first.click()
    page.locator("#read-only").wait_for(timeout=WAIT)
    assert "read-only" in page.locator("#read-only").inner_text()
    assert page.locator("#upload, #add, input[type=file]").count() == 0
    # the logged-in browser posting a file to Gradio's upload route itself is refused too
    status = page.evaluate(
        """async () => { const form = new FormData();
                         form.append('files', new Blob(['The ferry leaves at nine.']), 'note.txt');
                         const r = await fetch('gradio_api/upload', {method: 'POST', body: form});
                         return [r.status, (await r.json()).detail]; }"""
    )
    assert status[0] == 403 and "read-only" in status[1]
    page.close()


def test_a_citation_link_opens_the_passage_in_a_new_page_and_says_when_it_no_longer_holds(browser, page, page_url, screenshots):
    from urllib.parse import urljoin

    turn = ask(page, "Which court should look into Chinese officials?")
    first = turn.locator(".qa-card").first
    passage = first.locator(".qa-text").inner_text()
    href = first.locator("a.qa-link").get_attribute("href")
    assert first.locator("a.qa-link").get_attribute("target") == "_blank"
    assert first.locator("a.qa-cite").get_attribute("href") == href
    page.screenshot(path=str(screenshots / "link.png"), full_page=True)
    other = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        other.goto(urljoin(page_url, href), wait_until="domcontentloaded")
        cited = other.locator("#source mark#qa-cited")
        cited.wait_for(timeout=WAIT)
        assert cited.inner_text() == passage
        assert f"seeds/{PAKISTAN} [2623, 2881)" in other.locator("#source .qa-source-head").inner_text()
        # another text at that range, or a document gone: said so, no other passage shown
        for bad, words in ((re.sub(r"sha=\w+", "sha=0000000000000000", href), "has changed since this link was made"),
                           (re.sub(r"doc=[^&]+", "doc=seeds%2Fgone.txt", href), "no longer in the index")):
            other.goto(urljoin(page_url, bad), wait_until="domcontentloaded")
            other.locator("#source .qa-error").wait_for(timeout=WAIT)
            assert words in other.locator("#source .qa-error").inner_text()
            assert other.locator("#source mark").count() == 0
    finally:
        other.close()


def test_copy_link_puts_the_passage_url_on_the_clipboard(browser, page_url):
    from urllib.parse import urljoin

    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=page_url.rstrip("/"))
    page = context.new_page()
    try:
        page.goto(page_url, wait_until="domcontentloaded")
        page.locator("#question textarea").wait_for(timeout=WAIT)
        first = ask(page, "Who is the foreign minister of the exile government?").locator(".qa-card").first
        first.locator("a.qa-copy").click()
        page.wait_for_function("() => document.querySelector('.qa-card a.qa-copy').textContent === 'copied'", timeout=WAIT)
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied == urljoin(page_url, first.locator("a.qa-link").get_attribute("href"))
        assert copied.startswith(page_url + "?doc=seeds%2F" + PAKISTAN)
    finally:
        context.close()


def test_the_conversation_downloads_as_json_and_csv_with_every_citation(browser, page_url, screenshots):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    try:
        page.goto(page_url, wait_until="domcontentloaded")
        page.locator("#question textarea").wait_for(timeout=WAIT)
        first = ask(page, "Who is the foreign minister of the exile government?")
        second = ask(page, "Which court should look into Chinese officials?")
        shown = [(c.locator(".qa-cite").inner_text(), c.locator("a.qa-link").get_attribute("href"))
                 for turn in (first, second) for c in turn.locator(".qa-card").all()]
        # the buttons follow the newest answer: wait until the CSV has both questions
        page.wait_for_function(
            "() => { const b = document.querySelector('#download-csv'); return b && !b.disabled; }", timeout=WAIT
        )
        page.screenshot(path=str(screenshots / "download.png"), full_page=True)
        files = {}
        for button in ("#download-json", "#download-csv"):
            with page.expect_download(timeout=WAIT) as info:
                page.locator(button).click()
            files[button] = Path(info.value.path()).read_text(encoding="utf-8")
    finally:
        page.close()
    saved = json.loads(files["#download-json"])
    assert [a["question"] for a in saved["answers"]] == [
        "Who is the foreign minister of the exile government?", "Which court should look into Chinese officials?"
    ]
    assert [(r["citation"], r["link"]) for a in saved["answers"] for r in a["results"]] == shown
    rows = list(csv.DictReader(io.StringIO(files["#download-csv"])))
    assert [(row["citation"], row["link"]) for row in rows] == shown
    assert rows[0]["citation"] == f"{PAKISTAN} ¶4" and "Salih Hudayar" in rows[0]["text"]
