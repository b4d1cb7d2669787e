"""Citations: the human form, parsing it back, and finding the cited text.

Human form: ``report.txt ¶2`` (``report.pdf, p. 3, ¶2`` for paged formats); a
window of a long paragraph adds its character range: ``report.txt ¶2, chars
120-980``. ``#`` may be typed instead of ``¶``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from qa.records import Passage
from qa.store import Snapshot

_CITATION = re.compile(
    r"""^\s*(?P<doc>.+?)\s*
        (?:,\s*p\.?\s*(?P<page>\d+)\s*)?
        ,?\s*[¶#]\s*(?P<paragraph>\d+)
        (?:\s*,?\s*chars?\s*(?P<start>\d+)\s*[-–]\s*(?P<end>\d+))?\s*$""",
    re.VERBOSE,
)


class CitationError(Exception):
    """A citation cannot be parsed or does not point into the index."""


@dataclass(frozen=True)
class Citation:
    doc: str
    paragraph: int
    page: int | None = None
    start: int | None = None
    end: int | None = None


def format_citation(passage: Passage) -> str:
    name = PurePosixPath(passage.doc).name
    page = f", p. {passage.page}" if passage.page is not None else ""
    chars = f", chars {passage.start}-{passage.end}" if passage.windows > 1 else ""
    return f"{name}{page} ¶{passage.paragraph}{chars}"


def parse_citation(text: str) -> Citation:
    match = _CITATION.match(text)
    if not match:
        raise CitationError(f"cannot read citation {text!r}; expected e.g. 'report.txt ¶4' or 'report.txt#4'")
    number = lambda key: int(match[key]) if match[key] is not None else None  # noqa: E731
    return Citation(
        doc=match["doc"],
        paragraph=int(match["paragraph"]),
        page=number("page"),
        start=number("start"),
        end=number("end"),
    )


def resolve_document(snapshot: Snapshot, ref: str) -> str:
    """The stored path meant by ``ref``: the exact path, or a unique file name or path suffix."""
    paths = [d.path for d in snapshot.documents()]
    if ref in paths:
        return ref
    matches = [p for p in paths if p.endswith("/" + ref) or PurePosixPath(p).name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CitationError(f"no indexed document matches {ref!r} (see qa list)")
    raise CitationError(f"{ref!r} is ambiguous: {', '.join(sorted(matches))}")


@dataclass(frozen=True)
class Paragraph:
    doc: str
    paragraph: int
    start: int
    end: int
    text: str
    page: int | None = None

    def to_json(self) -> dict:
        return {
            "doc": self.doc,
            "paragraph": self.paragraph,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "text": self.text,
        }


@dataclass(frozen=True)
class Shown:
    """A cited passage with the paragraphs around it."""

    citation: str
    cited: Passage
    before: tuple[Paragraph, ...]
    after: tuple[Paragraph, ...]

    def to_json(self) -> dict:
        c = self.cited
        return {
            "citation": self.citation,
            "doc": c.doc,
            "paragraph": c.paragraph,
            "page": c.page,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "before": [p.to_json() for p in self.before],
            "after": [p.to_json() for p in self.after],
        }


def _paragraph(snapshot: Snapshot, doc: str, number: int, text: str) -> Paragraph | None:
    windows = snapshot.passages_of(doc, number)
    if not windows:
        return None
    start, end = windows[0].start, windows[-1].end
    return Paragraph(doc, number, start, end, text[start:end], windows[0].page)


def show(snapshot: Snapshot, citation: str, *, context: int = 1) -> Shown:
    """Find the cited passage and ``context`` paragraphs on each side."""
    parsed = parse_citation(citation)
    doc = resolve_document(snapshot, parsed.doc)
    windows = snapshot.passages_of(doc, parsed.paragraph)
    if not windows:
        count = snapshot.paragraph_count(doc)
        raise CitationError(f"{doc} has no paragraph {parsed.paragraph} (it has {count})")
    text = snapshot.document_text(doc) or ""
    if parsed.start is not None:
        chosen = [w for w in windows if (w.start, w.end) == (parsed.start, parsed.end)]
        if not chosen:
            raise CitationError(f"{doc} ¶{parsed.paragraph} has no passage at chars {parsed.start}-{parsed.end}")
        cited = chosen[0]
    elif len(windows) == 1:
        cited = windows[0]
    else:  # the whole paragraph, across its windows
        first, last = windows[0], windows[-1]
        cited = Passage(
            id=first.id, doc=doc, paragraph=first.paragraph, window=1, windows=1,
            start=first.start, end=last.end, text=text[first.start : last.end], page=first.page,
        )
    if parsed.page is not None and cited.page is not None and parsed.page != cited.page:
        raise CitationError(f"{doc} ¶{parsed.paragraph} is on page {cited.page}, not page {parsed.page}")
    before = [_paragraph(snapshot, doc, n, text) for n in range(parsed.paragraph - context, parsed.paragraph) if n >= 1]
    after = [_paragraph(snapshot, doc, n, text) for n in range(parsed.paragraph + 1, parsed.paragraph + context + 1)]
    return Shown(
        citation=format_citation(cited),
        cited=cited,
        before=tuple(p for p in before if p),
        after=tuple(p for p in after if p),
    )
