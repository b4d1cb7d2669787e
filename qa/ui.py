"""The Gradio chat page, and its ``/ask`` API endpoint, over one :class:`qa.QA`.

Every piece of document text is HTML-escaped before it reaches the page: a
document that contains markup is shown as text, never rendered or run.
"""

from __future__ import annotations

import html
import logging
import os

# The page must work with no network: no analytics or update checks.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from qa.library import QA  # noqa: E402

logger = logging.getLogger(__name__)

EXAMPLES = [
    "When will the tidal barrier be finished?",
    "How many homes were flooded in January?",
    "Who is the president of the exile government?",
    "What did Kostal say about President Aldan?",
]

CSS = """
.qa-turn { margin: 0 0 1.2em 0; }
.qa-question { font-weight: 600; margin-bottom: .4em; }
.qa-note { color: #8a5a00; margin: .3em 0; }
.qa-card { border: 1px solid #d0d7de; border-radius: 8px; padding: .6em .8em; margin: .4em 0; }
.qa-cite { font-weight: 600; font-family: ui-monospace, monospace; font-size: .9em; }
.qa-meta { color: #57606a; font-size: .85em; margin-left: .6em; }
.qa-text { white-space: pre-wrap; margin-top: .3em; line-height: 1.45; }
.qa-text mark { background: #fff1a8; padding: 0 .1em; }
.qa-error { color: #b42318; }
"""


def _card(result: dict) -> str:
    text = result["text"]
    lo = result["highlight_start"] - result["start"]
    hi = lo + len(result["highlight"])
    body = html.escape(text[:lo]) + "<mark>" + html.escape(text[lo:hi]) + "</mark>" + html.escape(text[hi:])
    meta = f"{html.escape(result['doc'])} [{result['start']}, {result['end']}) · score {result['score']:.2f}"
    return (
        f'<div class="qa-card" data-rank="{result["rank"]}">'
        f'<span class="qa-cite">{html.escape(result["citation"])}</span>'
        f'<span class="qa-meta">{meta}</span>'
        f'<div class="qa-text">{body}</div></div>'
    )


def render_turn(question: str, answer: dict | None = None, error: str | None = None) -> str:
    """One question and its answer as HTML; every string from outside is escaped."""
    parts = [f'<div class="qa-turn"><div class="qa-question">Q: {html.escape(question)}</div>']
    if error:
        parts.append(f'<div class="qa-error">{html.escape(error)}</div>')
    elif not answer["results"]:
        parts.append('<div class="qa-note">No passage in the indexed documents matches this question.</div>')
    else:
        if not answer["answered"]:
            parts.append(
                '<div class="qa-note">No passage looks like a good answer. The closest passages are:</div>'
            )
        parts.extend(_card(r) for r in answer["results"])
    parts.append("</div>")
    return "".join(parts)


# -- checking a quote ------------------------------------------------------------------

CSS += """
.qa-verdict-head { font-weight: 600; margin: .3em 0; }
.qa-verdict-exact .qa-verdict-head, .qa-verdict-near-exact .qa-verdict-head { color: #1a7f37; }
.qa-verdict-similar .qa-verdict-head { color: #8a5a00; }
.qa-verdict-not-found .qa-verdict-head { color: #b42318; }
"""

_VERDICT_HEADS = {
    "exact": "Exact: the quote is at {citation}.",
    "near-exact": "Near-exact: the quote is at {citation}, up to whitespace, case, quotes or dashes.",
    "similar": "Similar ({score:.2f}): {citation} has a close but different text.",
    "not-found": "Not found: the quote is not at {citation} (best similarity {score:.2f}).",
}


def _location_card(location: dict, *, number: int | None = None) -> str:
    meta = (
        f"{html.escape(location['doc'])} [{location['start']}, {location['end']}) · "
        f"{html.escape(location['match'])} {location['score']:.2f}"
    )
    rank = f' data-rank="{number}"' if number is not None else ""
    return (
        f'<div class="qa-card qa-found"{rank}>'
        f'<span class="qa-cite">{html.escape(location["citation"])}</span>'
        f'<span class="qa-meta">{meta}</span>'
        f'<div class="qa-text">{html.escape(location["text"])}</div></div>'
    )


def render_verdict(verdict: dict | None = None, error: str | None = None) -> str:
    """A verdict of :meth:`qa.QA.verify` (as JSON) as HTML; every string from outside is escaped."""
    if error:
        return f'<div class="qa-verdict"><div class="qa-error">{html.escape(error)}</div></div>'
    status = verdict["status"]
    head = _VERDICT_HEADS[status].format(citation=verdict["citation"], score=verdict["score"])
    parts = [
        f'<div class="qa-verdict qa-verdict-{html.escape(status)}" data-status="{html.escape(status)}">',
        f'<div class="qa-verdict-head">{html.escape(head)}</div>',
    ]
    cited, match = verdict["cited"], verdict["match"]
    text = cited["text"]
    if match:  # the cited passage, with the matching text marked
        lo, hi = match["start"] - cited["start"], match["end"] - cited["start"]
        body = html.escape(text[:lo]) + "<mark>" + html.escape(text[lo:hi]) + "</mark>" + html.escape(text[hi:])
    else:
        body = html.escape(text)
    parts.append(
        f'<div class="qa-card qa-cited"><span class="qa-cite">{html.escape(verdict["citation"])}</span>'
        f'<span class="qa-meta">{html.escape(cited["doc"])} [{cited["start"]}, {cited["end"]})</span>'
        f'<div class="qa-text">{body}</div></div>'
    )
    found = verdict["found"]
    if status not in ("exact", "near-exact"):
        kinds = {f["match"] for f in found}
        if not found:
            note = "It is not in the indexed documents."
        elif kinds & {"exact", "near-exact"}:
            note = "It is at:"
        elif "similar" in kinds:
            note = "It is in no indexed document as quoted; similar text is at:"
        else:
            note = "It is not in the indexed documents; the closest passages are:"
        parts.append(f'<div class="qa-note">{note}</div>')
        parts.extend(_location_card(f, number=n) for n, f in enumerate(found, start=1))
    parts.append("</div>")
    return "".join(parts)


def build_app(qa: QA) -> gr.Blocks:
    def ask_api(question: str, k: int = 5) -> dict:
        """Answer one question: the same JSON object as one line of `qa batch`."""
        answer = qa.ask(question, k=int(k), id="1").to_json()
        return answer

    def respond(question: str, k: float, turns: list[str]):
        question = (question or "").strip()
        if not question:
            return turns, "".join(reversed(turns)) or "", ""
        try:
            turn = render_turn(question, qa.ask(question, k=int(k)).to_json())
        except Exception as exc:  # a one-line message on the page, the details in the log
            logger.exception("question failed")
            turn = render_turn(question, error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        turns = turns + [turn]
        return turns, "".join(reversed(turns)), ""

    def verify_api(quote: str, citation: str) -> dict:
        """Check a quote against a citation: the same JSON object as `qa verify --json`."""
        from qa.cite import CitationError
        from qa.search import QueryError
        from qa.store import StoreError

        try:
            return qa.verify(quote, citation).to_json()
        except (CitationError, QueryError, StoreError) as exc:  # the caller sees the one-line reason
            raise gr.Error(str(exc).splitlines()[0]) from exc

    def check_quote(quote: str, citation: str) -> str:
        quote, citation = (quote or "").strip(), (citation or "").strip()
        if not quote or not citation:
            return render_verdict(error="Type a quote and the citation it is attributed to.")
        try:
            return render_verdict(qa.verify(quote, citation).to_json())
        except Exception as exc:  # a one-line message on the page, the details in the log
            logger.exception("checking a quote failed")
            return render_verdict(error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    with gr.Blocks(title="Ask your documents") as app:
        gr.Markdown(
            "## Ask your documents\nEvery answer is a passage quoted from the indexed documents, "
            "with its citation (document, paragraph, character range). Nothing is generated."
        )
        turns = gr.State([])
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder="Ask a question…", scale=5, elem_id="question")
            k = gr.Slider(1, 20, value=5, step=1, label="Passages", scale=1, elem_id="k")
        ask = gr.Button("Ask", variant="primary", elem_id="ask")
        gr.Examples(EXAMPLES, inputs=question)
        conversation = gr.HTML(elem_id="conversation")
        for trigger in (ask.click, question.submit):
            trigger(respond, [question, k, turns], [turns, conversation, question], api_visibility="private")
        gr.api(ask_api, api_name="ask")

        gr.Markdown("### Check a quote\nIs this text really at that citation? If not, where is it?")
        with gr.Row():
            quote_box = gr.Textbox(label="Quote", placeholder="The exact words…", scale=3, elem_id="quote")
            citation_box = gr.Textbox(
                label="Citation", placeholder="report.txt ¶4", scale=2, elem_id="citation"
            )
        check = gr.Button("Check", elem_id="check")
        verdict_html = gr.HTML(elem_id="verdict")
        for trigger in (check.click, quote_box.submit, citation_box.submit):
            trigger(check_quote, [quote_box, citation_box], [verdict_html], api_visibility="private")
        gr.api(verify_api, api_name="verify")
    return app


def launch(app: gr.Blocks, **kwargs):
    """Launch with the page's own styles and local fonts only (the page works offline)."""
    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    return app.launch(css=CSS, theme=theme, **kwargs)
