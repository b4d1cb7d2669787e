"""The Gradio chat page over one :class:`qa.QA`: a chat with cited passages,
the source beside it, follow-up questions, a document filter, uploads, quote
checking, and the named API endpoints ``/ask`` and ``/verify``.

The HTML itself is made (and escaped) in :mod:`qa.render`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

# The page must work with no network: no analytics or update checks.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from qa.examples import example_questions  # noqa: E402
from qa.export import AnswerWriter, conversation_json, with_links  # noqa: E402
from qa.library import QA  # noqa: E402
from qa.read import FORMATS  # noqa: E402
from qa.render import (  # noqa: E402,F401  (render_turn and render_verdict are part of this module's API)
    CSS,
    render_documents,
    render_source,
    render_turn,
    source_key as source_key_of,
    render_upload,
    render_verdict,
)

logger = logging.getLogger(__name__)

UPLOAD_TYPES = sorted(FORMATS)
UPLOAD_MAX_BYTES = 20 * 1024 * 1024
UPLOADS = "uploads"  # folder inside the index where uploaded files are kept
QUEUE_CONCURRENCY = 2
QUEUE_SIZE = 64

# Clicking a citation anywhere on the page asks the server for its source; the
# source view then scrolls the cited passage into view.
JS = """
() => {
  document.addEventListener('click', (event) => {
    const copy = event.target.closest('a.qa-copy');
    if (copy) {
      event.preventDefault();
      const url = new URL(copy.getAttribute('href'), window.location.href).href;
      const done = () => { copy.textContent = 'copied'; setTimeout(() => { copy.textContent = 'copy link'; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(url).then(done); return; }
      const box = document.createElement('textarea');  // plain HTTP beyond localhost has no clipboard API
      box.value = url; document.body.appendChild(box); box.select(); document.execCommand('copy'); box.remove(); done();
      return;
    }
    const pageImage = event.target.closest('#qa-page-image');
    if (pageImage) { pageImage.closest('.qa-page-view').classList.toggle('qa-zoomed'); return; }
    const link = event.target.closest('a.qa-open');
    // A plain click opens the source beside the chat; ctrl/middle click opens the link in a new tab.
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    const box = document.querySelector('#source-key textarea');
    if (!box) return;
    box.value = link.dataset.key;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => document.querySelector('#source-open').click(), 50);
  });
}
"""
SCROLL_TO_CITED = "() => { const m = document.getElementById('qa-cited'); if (m) m.scrollIntoView({block: 'center'}); }"
SCROLL_TO_LAST_TURN = (
    "() => { const t = document.querySelectorAll('#conversation .qa-turn'); "
    "if (t.length) t[t.length - 1].scrollIntoView({block: 'nearest'}); }"
)


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _safe_name(name: str) -> str:
    """A file name that cannot leave the uploads folder."""
    base = Path(name).name.strip().lstrip(".")
    return re.sub(r"[^\w.\- ]", "_", base) or "upload"


def new_chat() -> dict:
    return {"turns": [], "previous": None, "answers": []}


def conversation_files(answers: list[dict], index: str) -> tuple[str | None, str | None]:
    """The conversation written as JSON and as CSV, for the page's download buttons.

    Each download is a new pair of files in the system's temp folder (Gradio serves
    files from there, behind the login when there is one); none before the first answer.
    """
    if not answers:
        return None, None
    folder = Path(tempfile.mkdtemp(prefix="qa-conversation-"))
    json_path, csv_path = folder / "conversation.json", folder / "conversation.csv"
    json_path.write_text(conversation_json(answers, index=index), encoding="utf-8")
    with open(csv_path, "w", encoding="utf-8", newline="") as out:
        writer = AnswerWriter(out, "csv", links=True)
        for answer in answers:
            writer.write(answer)
    return str(json_path), str(csv_path)


def build_app(qa: QA, *, read_only: bool = False) -> gr.Blocks:
    """The page; with ``read_only`` it has no upload controls and no event that writes the index."""
    def ask_api(question: str, k: int = 5) -> dict:
        """Answer one question: the same JSON object as one line of `qa batch`."""
        return qa.ask(question, k=int(k), id="1").to_json()

    def respond(question: str, k: float, docs: list[str] | None, chat: dict):
        question = (question or "").strip()
        chat = chat or new_chat()
        answers = chat.get("answers", [])
        if not question:
            return chat, "".join(chat["turns"]), "", gr.update(), gr.update()
        try:
            answer = qa.ask(question, k=int(k), docs=docs or None, previous=chat["previous"])
            shown = answer.to_json()
            turn, previous = render_turn(question, shown), answer
            answers = answers + [with_links({**shown, "id": str(len(answers) + 1)})]
        except Exception as exc:  # a one-line message on the page, the details in the log
            logger.exception("question failed")
            turn, previous = render_turn(question, error=_one_line(exc)), chat["previous"]
        chat = {"turns": chat["turns"] + [turn], "previous": previous, "answers": answers}
        return chat, "".join(chat["turns"]), "", *downloads(answers)

    def new_conversation():
        return new_chat(), "", *downloads([])

    def downloads(answers: list[dict]):
        json_path, csv_path = conversation_files(answers, str(qa.index_dir))
        return (gr.update(value=json_path, interactive=json_path is not None),
                gr.update(value=csv_path, interactive=csv_path is not None))

    def open_source(key: str) -> str:
        try:
            where = json.loads(key)
            doc, start, end = str(where["doc"]), int(where["start"]), int(where["end"])
            snapshot = qa.snapshot()
            text = snapshot.document_text(doc)
            if text is None or not 0 <= start < end <= len(text):
                return render_upload(error=f"{doc} is no longer in the index.")
            cited = [p for p in snapshot.passages_of(doc) if p.start <= start and end <= p.end]
            citation = None
            if cited:
                from qa.cite import format_citation

                citation = format_citation(cited[0])
            page_png = page_note = None
            if cited and cited[0].page is not None and FORMATS.get(Path(doc).suffix.lower()) in ("pdf", "image"):
                from qa.pageview import PageViewError, original_range

                try:
                    image, _ = original_range(snapshot, doc, cited[0].page, start, end, scale=1.5)
                    out = io.BytesIO()
                    image.save(out, format="PNG")
                    page_png = out.getvalue()
                except PageViewError as exc:
                    page_note = str(exc)
            return render_source(doc, text, start, end, citation, page_png=page_png, page_note=page_note)
        except Exception as exc:
            logger.exception("opening a source failed")
            return render_upload(error=_one_line(exc))

    def open_link(request: gr.Request):
        """The passage a link names (``?doc=&start=&end=&sha=``), if it is still there unchanged."""
        from qa.render import fingerprint

        params = request.query_params if request is not None else {}
        if "doc" not in params:
            return gr.update()
        try:
            doc, start, end, sha = str(params["doc"]), int(params["start"]), int(params["end"]), str(params["sha"])
        except (KeyError, ValueError):
            return render_upload(error="This link is incomplete: it needs doc, start, end and sha.")
        try:
            text = qa.snapshot().document_text(doc)
        except Exception as exc:
            logger.exception("opening a link failed")
            return render_upload(error=_one_line(exc))
        if text is None:
            return render_upload(error=f"{doc} is no longer in the index: the passage this link names cannot be shown.")
        if 0 <= start < end <= len(text) and fingerprint(text[start:end]) == sha:
            return open_source(source_key_of(doc, start, end))
        return render_upload(
            error=f"{doc} has changed since this link was made: the cited words are no longer at [{start}, {end})."
        )

    def documents_view():
        try:
            documents = qa.documents() if qa.exists() else []
        except Exception as exc:
            logger.exception("listing documents failed")
            return render_upload(error=_one_line(exc)), gr.update()
        return render_documents(documents), gr.update(choices=[d.path for d in documents])

    def add_files(files, progress=gr.Progress(track_tqdm=True)):
        rejected: list[tuple[str, str]] = []
        folder = qa.index_dir / UPLOADS
        accepted = []
        for path in files or []:
            name = _safe_name(os.path.basename(str(path)))
            suffix = Path(name).suffix.lower()
            if suffix not in FORMATS:
                rejected.append((name, f"type {suffix or '(none)'} is not accepted; use {', '.join(UPLOAD_TYPES)}"))
            elif os.path.getsize(path) > UPLOAD_MAX_BYTES:
                rejected.append((name, f"larger than the {UPLOAD_MAX_BYTES // 2**20} MiB upload limit"))
            else:
                accepted.append((path, name))
        report = None
        if accepted:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                for path, name in accepted:
                    shutil.copyfile(path, folder / name)
                report = qa.index([folder], progress=True).to_json()
            except Exception as exc:
                logger.exception("indexing uploads failed")
                return (render_upload(rejected=rejected, error=_one_line(exc)), *documents_view())
        elif not rejected:
            rejected.append(("(nothing)", "choose one or more files first"))
        return (render_upload(report, rejected), *documents_view())

    def verify_api(quote: str, citation: str) -> dict:
        """Check a quote against a citation: the same JSON object as `qa verify --json`."""
        from qa.cite import CitationError
        from qa.search import QueryError
        from qa.storage import StoreError

        try:
            return qa.verify(quote, citation).to_json()
        except (CitationError, QueryError, StoreError) as exc:  # the caller sees the one-line reason
            raise gr.Error(_one_line(exc)) from exc

    def check_quote(quote: str, citation: str) -> str:
        quote, citation = (quote or "").strip(), (citation or "").strip()
        if not quote or not citation:
            return render_verdict(error="Type a quote and the citation it is attributed to.")
        try:
            return render_verdict(qa.verify(quote, citation).to_json())
        except Exception as exc:  # a one-line message on the page, the details in the log
            logger.exception("checking a quote failed")
            return render_verdict(error=_one_line(exc))

    with gr.Blocks(title="Ask your documents") as app:
        gr.Markdown(
            "## Ask your documents\nEvery answer is a passage quoted from the indexed documents, with its "
            "citation (document, page, paragraph, character range). Nothing is generated. "
            "Click a citation to see it in its document."
        )
        chat = gr.State(new_chat())
        with gr.Row():
            with gr.Column(scale=3):
                conversation = gr.HTML(elem_id="conversation")
                with gr.Row():
                    question = gr.Textbox(
                        label="Question", placeholder="Ask a question…", scale=5, elem_id="question"
                    )
                    ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                try:
                    examples = example_questions(qa)
                except Exception:  # a page without examples still answers
                    logger.exception("making example questions failed")
                    examples = []
                if examples:
                    gr.Examples([[q] for q in examples], inputs=question, label="Try")
                with gr.Row():
                    download_json = gr.DownloadButton(
                        "Download conversation (JSON)", interactive=False, elem_id="download-json", size="sm"
                    )
                    download_csv = gr.DownloadButton(
                        "Download conversation (CSV)", interactive=False, elem_id="download-csv", size="sm"
                    )
                with gr.Accordion("Settings", open=False):
                    k = gr.Slider(1, 20, value=5, step=1, label="Passages per answer", elem_id="k")
                    docs_filter = gr.Dropdown(
                        choices=[], value=[], multiselect=True, label="Search only in (empty: all documents)",
                        elem_id="docs-filter",
                    )
                    clear = gr.Button("New conversation", elem_id="new-conversation")
            with gr.Column(scale=2):
                source = gr.HTML(
                    '<div class="qa-note">Click a citation to see the passage in its document.</div>',
                    elem_id="source",
                )
        source_key = gr.Textbox(elem_id="source-key", elem_classes=["qa-hidden"], show_label=False)
        source_open = gr.Button("open source", elem_id="source-open", elem_classes=["qa-hidden"])

        with gr.Accordion("Documents", open=False, elem_id="documents-panel"):
            documents = gr.HTML(elem_id="documents")
            if read_only:
                gr.HTML('<div class="qa-note">This page is read-only: documents cannot be added here.</div>',
                        elem_id="read-only")
            else:
                files = gr.File(
                    file_count="multiple", file_types=UPLOAD_TYPES, label="Add documents", elem_id="upload"
                )
                add = gr.Button("Add to the index", elem_id="add")
                upload_status = gr.HTML(elem_id="upload-status")

        with gr.Accordion("Check a quote", open=False, elem_id="check-panel"):
            gr.Markdown("Is this text really at that citation? If not, where is it?")
            with gr.Row():
                quote_box = gr.Textbox(label="Quote", placeholder="The exact words…", scale=3, elem_id="quote")
                citation_box = gr.Textbox(label="Citation", placeholder="report.txt ¶4", scale=2, elem_id="citation")
            check = gr.Button("Check", elem_id="check")
            verdict_html = gr.HTML(elem_id="verdict")

        for trigger in (ask.click, question.submit):
            trigger(
                respond, [question, k, docs_filter, chat], [chat, conversation, question, download_json, download_csv],
                api_visibility="private",
            ).then(None, js=SCROLL_TO_LAST_TURN)
        clear.click(
            new_conversation, None, [chat, conversation, download_json, download_csv], api_visibility="private"
        )
        source_open.click(open_source, [source_key], [source], api_visibility="private").then(
            None, js=SCROLL_TO_CITED
        )
        # One upload at a time: a second waits in the queue instead of meeting the index lock.
        if not read_only:
            add.click(
                add_files, [files], [upload_status, documents, docs_filter], api_visibility="private",
                concurrency_limit=1,
            )
        for trigger in (check.click, quote_box.submit, citation_box.submit):
            trigger(check_quote, [quote_box, citation_box], [verdict_html], api_visibility="private")
        app.load(documents_view, None, [documents, docs_filter], api_visibility="private")
        app.load(open_link, None, [source], api_visibility="private").then(None, js=SCROLL_TO_CITED)
        gr.api(ask_api, api_name="ask")
        gr.api(verify_api, api_name="verify")
    # Two questions at a time per event on 2 cores: measured with bench/load.py,
    # more in parallel only makes everyone wait together. A full queue answers
    # at once (HTTP 503) instead of piling up minutes of backlog.
    app.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_SIZE)
    return app


def launch(app: gr.Blocks, *, logins=None, read_only: bool = False, **kwargs):
    """Launch with the page's own styles and script, local fonts only (the page works offline).

    ``logins`` (a :class:`qa.auth.Logins`) puts every route behind Gradio's login
    page and :class:`qa.auth.LoginRequired`; ``read_only`` also closes Gradio's
    upload route (pair it with ``build_app(read_only=True)``).
    """
    from starlette.middleware import Middleware

    from qa.auth import LoginRequired

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    kwargs.setdefault("max_file_size", UPLOAD_MAX_BYTES)
    if logins is not None or read_only:
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [
            *app_kwargs.get("middleware", []), Middleware(LoginRequired, logins=logins, read_only=read_only)
        ]
        kwargs["app_kwargs"] = app_kwargs
    if logins is not None:
        # The gate sits in this Python server: no Node front end serving files beside it.
        kwargs.update(auth=logins.login, ssr_mode=False)
    return app.launch(css=CSS, theme=theme, js=JS, **kwargs)
