"""HTML for the chat page. Every string that comes from a document, a question
or an error is escaped here: a document containing markup is shown as text,
never rendered or run."""

from __future__ import annotations

import hashlib
import html
import json
from urllib.parse import urlencode

from qa.confidence import ANSWER_CONFIDENCE, in_words

# How much of a very long document the source view shows around the passage.
SOURCE_WINDOW = 40_000

CSS = """
.qa-turn { margin: 0 0 1.4em 0; }
.qa-question { font-weight: 600; margin-bottom: .4em; }
.qa-searched { color: #57606a; font-size: .85em; margin: -.2em 0 .4em 0; }
.qa-note { color: #8a5a00; margin: .3em 0; }
.qa-card { border: 1px solid #d0d7de; border-radius: 8px; padding: .6em .8em; margin: .4em 0; }
.qa-cite { font-weight: 600; font-family: ui-monospace, monospace; font-size: .9em; }
a.qa-open { color: #0969da; text-decoration: none; cursor: pointer; }
a.qa-open:hover { text-decoration: underline; }
.qa-meta { color: #57606a; font-size: .85em; margin-left: .6em; }
.qa-cue { font-size: .75em; border-radius: 1em; padding: .05em .6em; margin-left: .6em; border: 1px solid; }
.qa-cue-strong { color: #1a7f37; border-color: #1a7f37; }
.qa-cue-fair { color: #8a5a00; border-color: #8a5a00; }
.qa-cue-weak { color: #6e7781; border-color: #6e7781; }
.qa-text { white-space: pre-wrap; margin-top: .3em; line-height: 1.45; }
.qa-text mark, .qa-source mark { background: #fff1a8; padding: 0 .1em; }
.qa-error { color: #b42318; }
.qa-source-head { font-weight: 600; margin-bottom: .4em; }
.qa-source { white-space: pre-wrap; line-height: 1.45; max-height: 70vh; overflow-y: auto;
             border: 1px solid #d0d7de; border-radius: 8px; padding: .6em .8em; }
.qa-source mark.qa-cited { background: #ffe08a; outline: 2px solid #d4a72c; }
.qa-docs { border-collapse: collapse; width: 100%; font-size: .9em; }
.qa-docs td, .qa-docs th { border-bottom: 1px solid #d0d7de; padding: .2em .5em; text-align: left; }
.qa-hidden { display: none !important; }
a.qa-link, a.qa-copy { color: #0969da; font-size: .8em; margin-left: .6em; cursor: pointer; }
.qa-ocr { font-size: .75em; border-radius: 1em; padding: .05em .6em; margin-left: .6em; color: #8250df;
          border: 1px dashed #8250df; cursor: help; }
/* The text view and the original page side by side; stacked where the panel is narrow. */
.qa-source-pair { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
.qa-source-pair > .qa-source { flex: 1 1 12em; min-width: 0; }
.qa-source-pair > .qa-page-view, .qa-source-pair > .qa-page-note { flex: 1.3 1 14em; min-width: 0; margin: 0; }
.qa-page-view img { max-width: 100%; max-height: 70vh; border: 1px solid #d0d7de; border-radius: 4px; cursor: zoom-in; }
/* Clicked, the page takes the panel's whole width, under the text, to be read. */
.qa-source-pair > .qa-page-view.qa-zoomed { flex-basis: 100%; }
.qa-page-view.qa-zoomed img { max-height: none; width: 100%; cursor: zoom-out; }
.qa-page-view figcaption { color: #57606a; font-size: .85em; margin-bottom: .3em; }
.qa-verdict-head { font-weight: 600; margin: .3em 0; }
.qa-verdict-exact .qa-verdict-head, .qa-verdict-near-exact .qa-verdict-head { color: #1a7f37; }
.qa-verdict-similar .qa-verdict-head { color: #8a5a00; }
.qa-verdict-not-found .qa-verdict-head { color: #b42318; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _marked(text: str, lo: int, hi: int, *, mark_attrs: str = "") -> str:
    return _e(text[:lo]) + f"<mark{mark_attrs}>" + _e(text[lo:hi]) + "</mark>" + _e(text[hi:])


def cue(confidence: float) -> tuple[str, str]:
    """Words for the calibrated chance that the passage answers (``qa.confidence``)."""
    label = in_words(confidence)
    if confidence >= 0.8:
        return "strong", label
    if confidence >= ANSWER_CONFIDENCE:
        return "fair", label
    return "weak", label


def _chance(confidence: float) -> str:
    return (
        f"confidence {confidence:.2f}: of the benchmark passages shown with this figure, about "
        f"{round(confidence * 10)} in 10 answered their question"
    )


def ocr_badge(result: dict) -> str:
    """The flag on OCR'd words: recognised in an image, not read from text, so to be checked against it."""
    if not result.get("ocr"):
        return ""
    confidence = result.get("ocr_confidence")
    figure = f" {confidence:.2f}" if confidence is not None else ""
    title = (
        "Read by OCR: Tesseract recognised these words in a scanned image, they were not read from text"
        + (f"; the mean confidence of its words is {confidence:.2f} (0 to 1)" if confidence is not None else "")
        + ". Check them against the original page."
    )
    return f'<span class="qa-ocr" title="{_e(title)}">OCR{figure}</span>'


def source_key(doc: str, start: int, end: int) -> str:
    return json.dumps({"doc": doc, "start": start, "end": end})


def fingerprint(text: str) -> str:
    """The first 16 hex digits of the passage's SHA-256: a link names the words it cites."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def passage_link(doc: str, start: int, end: int, text: str) -> str:
    """The page's relative URL that opens this passage in its source view (``?doc=&start=&end=&sha=``)."""
    return "?" + urlencode({"doc": doc, "start": start, "end": end, "sha": fingerprint(text)})


def citation_link(citation: str, doc: str, start: int, end: int, text: str | None = None) -> str:
    """A citation that opens the source view when clicked (see the page's script); with
    the passage's text, its ``href`` is the passage's link (a new tab opens it there)."""
    href = _e(passage_link(doc, start, end, text)) if text is not None else "#"
    return (
        f'<a class="qa-cite qa-open" href="{href}" data-key="{_e(source_key(doc, start, end))}" '
        f'title="Show in {_e(doc)}">{_e(citation)}</a>'
    )


def card(result: dict) -> str:
    text = result["text"]
    lo = result["highlight_start"] - result["start"]
    hi = lo + len(result["highlight"])
    level, label = cue(result["confidence"])
    also = f" · also in {_e(', '.join(result['also_in']))}" if result.get("also_in") else ""
    meta = f"{_e(result['doc'])} [{result['start']}, {result['end']}){also}"
    link = _e(passage_link(result["doc"], result["start"], result["end"], text))
    return (
        f'<div class="qa-card" data-rank="{result["rank"]}">'
        f'{citation_link(result["citation"], result["doc"], result["start"], result["end"], text)}'
        f'<a class="qa-link" href="{link}" target="_blank" rel="noopener">link</a>'
        f'<a class="qa-copy" href="{link}" title="Copy the link to this passage">copy link</a>'
        f'<span class="qa-cue qa-cue-{level}" title="{_e(_chance(result["confidence"]))}">{label}</span>'
        f'{ocr_badge(result)}'
        f'<span class="qa-meta">{meta}</span>'
        f'<div class="qa-text">{_marked(text, lo, hi)}</div></div>'
    )


def render_turn(question: str, answer: dict | None = None, error: str | None = None) -> str:
    """One question and its answer as HTML."""
    parts = [f'<div class="qa-turn"><div class="qa-question">Q: {_e(question)}</div>']
    if answer and answer.get("searched_for"):
        parts.append(f'<div class="qa-searched">Read as a follow-up: searched for “{_e(answer["searched_for"])}”</div>')
    if error:
        parts.append(f'<div class="qa-error">{_e(error)}</div>')
    elif not answer["results"]:
        parts.append('<div class="qa-note">No passage in the indexed documents matches this question.</div>')
    elif not answer["answered"]:
        parts.append(
            '<div class="qa-note qa-unanswered">The documents do not seem to answer this question.</div>'
            f'<details class="qa-closest"><summary>Show the closest passages ({len(answer["results"])})</summary>'
            + "".join(card(r) for r in answer["results"])
            + "</details>"
        )
    else:
        parts.extend(card(r) for r in answer["results"])
    parts.append("</div>")
    return "".join(parts)


def render_source(
    doc: str, text: str, start: int, end: int, citation: str | None = None, *, page_png: bytes | None = None,
    page_note: str | None = None,
) -> str:
    """The document's extracted text with ``[start, end)`` marked (``id="qa-cited"``); beside it, for a
    PDF or an image, the original page with the same characters marked (``page_png``), or why it cannot be shown."""
    lo, hi = 0, len(text)
    if len(text) > SOURCE_WINDOW:
        lo = max(0, start - SOURCE_WINDOW // 2)
        hi = min(len(text), max(end, lo + SOURCE_WINDOW))
    head = f"{_e(citation)} — " if citation else ""
    before = f"[… {lo:,} characters before …]\n\n" if lo else ""
    after = f"\n\n[… {len(text) - hi:,} characters after …]" if hi < len(text) else ""
    body = _marked(text[lo:hi], start - lo, end - lo, mark_attrs=' id="qa-cited" class="qa-cited"')
    view = f'<div class="qa-source">{_e(before)}{body}{_e(after)}</div>'
    page = _page_view(page_png, page_note)
    return (
        f'<div class="qa-source-head" data-doc="{_e(doc)}">{head}{_e(doc)} [{start}, {end})</div>'
        + (f'<div class="qa-source-pair">{view}{page}</div>' if page else view)
    )


def _page_view(page_png: bytes | None, note: str | None) -> str:
    if page_png is not None:
        import base64

        data = base64.b64encode(page_png).decode("ascii")
        return (
            '<figure class="qa-page-view"><figcaption>The original page, the cited passage marked '
            '(click to enlarge)</figcaption>'
            f'<img id="qa-page-image" alt="original page with the cited passage marked" '
            f'src="data:image/png;base64,{data}"></figure>'
        )
    return f'<div class="qa-page-note" id="qa-page-note">{_e(note)}</div>' if note else ""


def render_documents(documents) -> str:
    if not documents:
        return '<div class="qa-note">No documents are indexed yet.</div>'
    rows = "".join(
        f"<tr><td>{_e(d.path)}</td><td>{_e(d.format)}</td><td>{d.passages}</td>"
        f"<td>{_e(', '.join(d.same_as))}</td></tr>"
        for d in documents
    )
    return (
        '<table class="qa-docs"><thead><tr><th>document</th><th>format</th><th>passages</th>'
        f"<th>same content as</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_upload(report: dict | None = None, rejected: list[tuple[str, str]] = (), error: str | None = None) -> str:
    parts = ['<div class="qa-upload">']
    if error:
        parts.append(f'<div class="qa-error">{_e(error)}</div>')
    for name, reason in rejected:
        parts.append(f'<div class="qa-error">Not added: {_e(name)}: {_e(reason)}</div>')
    if report:
        for skipped in report["skipped"]:
            parts.append(f'<div class="qa-error">Not added: {_e(skipped["path"])}: {_e(skipped["reason"])}</div>')
        done = report["added"] + report["updated"]
        if done:
            parts.append(
                f'<div class="qa-added">Added {len(done)} document(s): {_e(", ".join(done))} '
                f'({report["passages_embedded"]} passages).</div>'
            )
    parts.append("</div>")
    return "".join(parts)


# -- checking a quote ------------------------------------------------------------------

_VERDICT_HEADS = {
    "exact": "Exact: the quote is at {citation}.",
    "near-exact": "Near-exact: the quote is at {citation}, up to whitespace, case, quotes or dashes.",
    "similar": "Similar ({score:.2f}): {citation} has a close but different text.",
    "not-found": "Not found: the quote is not at {citation} (best similarity {score:.2f}).",
}


def _location_card(location: dict, *, number: int | None = None) -> str:
    meta = f"{_e(location['doc'])} [{location['start']}, {location['end']}) · {_e(location['match'])} {location['score']:.2f}"
    rank = f' data-rank="{number}"' if number is not None else ""
    return (
        f'<div class="qa-card qa-found"{rank}>'
        f'{citation_link(location["citation"], location["doc"], location["start"], location["end"])}'
        f'<span class="qa-meta">{meta}</span>'
        f'<div class="qa-text">{_e(location["text"])}</div></div>'
    )


def render_verdict(verdict: dict | None = None, error: str | None = None) -> str:
    """A verdict of :meth:`qa.QA.verify` (as JSON) as HTML."""
    if error:
        return f'<div class="qa-verdict"><div class="qa-error">{_e(error)}</div></div>'
    status = verdict["status"]
    head = _VERDICT_HEADS[status].format(citation=verdict["citation"], score=verdict["score"])
    parts = [
        f'<div class="qa-verdict qa-verdict-{_e(status)}" data-status="{_e(status)}">',
        f'<div class="qa-verdict-head">{_e(head)}</div>',
    ]
    cited, match = verdict["cited"], verdict["match"]
    text = cited["text"]
    body = _marked(text, match["start"] - cited["start"], match["end"] - cited["start"]) if match else _e(text)
    parts.append(
        f'<div class="qa-card qa-cited"><span class="qa-cite">{_e(verdict["citation"])}</span>'
        f'<span class="qa-meta">{_e(cited["doc"])} [{cited["start"]}, {cited["end"]})</span>'
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
