"""Citations: the human form, parsing it back, and finding the cited text.

Human form: ``report.txt ¶2``; ``report.pdf, p. 3, ¶2`` for paged formats,
where the paragraph is counted on its page; ``guide.md, § Install, ¶4`` where
the passage lies under a heading. A window of a long paragraph adds its
character range: ``report.txt ¶2, chars 120-980``. ``#`` may be typed instead
of ``¶``; the section part is informative and may be left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable

from qa.records import Passage, format_citation
from qa.storage import Reader

_CITATION = re.compile(
    r"""^\s*(?P<doc>.+?)\s*
        (?:,\s*§\s*(?P<section>.*?)\s*)?
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


def parse_citation(text: str) -> Citation:
    match = _CITATION.match(text)
    if not match:
        raise CitationError(f"cannot read citation {text!r}; expected e.g. 'report.txt ¶4' or 'report.txt#4'")
    number = lambda key: int(match[key]) if match[key] is not None else None  # noqa: E731
    return Citation(
        doc=match["doc"].rstrip(","),
        paragraph=int(match["paragraph"]),
        page=number("page"),
        start=number("start"),
        end=number("end"),
    )


def match_document(paths: Iterable[str], ref: str) -> list[str]:
    """The stored paths ``ref`` may mean: itself if stored, else those it is a file name or path suffix of."""
    paths = sorted(set(paths))
    if ref in paths:
        return [ref]
    return [p for p in paths if p.endswith("/" + ref)]


def resolve_document(snapshot: Reader, ref: str) -> str:
    """The stored path meant by ``ref``: the exact path, or a unique file name or path suffix."""
    matches = match_document((d.path for d in snapshot.documents()), ref)
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
    section: str | None = None

    def to_json(self) -> dict:
        return {
            "doc": self.doc,
            "paragraph": self.paragraph,
            "page": self.page,
            "section": self.section,
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
            "also_in": list(c.also),
            "paragraph": c.paragraph,
            "page": c.page,
            "section": c.section,
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "ocr": c.ocr,
            "ocr_confidence": c.ocr_confidence,
            "before": [p.to_json() for p in self.before],
            "after": [p.to_json() for p in self.after],
        }


def _paragraph(snapshot: Reader, doc: str, seq: int, text: str) -> Paragraph | None:
    windows = snapshot.passages_of(doc, seq=seq)
    if not windows:
        return None
    first, start, end = windows[0], windows[0].start, windows[-1].end
    return Paragraph(doc, first.paragraph, start, end, text[start:end], first.page, first.section)


def find_cited(snapshot: Reader, citation: str) -> tuple[str, list[Passage], Citation]:
    """The stored path and the windows of the paragraph a citation names."""
    parsed = parse_citation(citation)
    doc = resolve_document(snapshot, parsed.doc)
    paged = any(p.page is not None for p in snapshot.passages_of(doc, seq=1))
    if paged and parsed.page is None:
        raise CitationError(f"{doc} has pages: cite it as '{PurePosixPath(doc).name}, p. N, ¶M'")
    windows = snapshot.passages_of(doc, paragraph=parsed.paragraph, page=parsed.page if paged else None)
    if not windows:
        where = f"{doc}, page {parsed.page}," if paged else doc
        raise CitationError(f"{where} has no paragraph {parsed.paragraph}")
    if parsed.start is not None:
        windows = [w for w in windows if (w.start, w.end) == (parsed.start, parsed.end)]
        if not windows:
            raise CitationError(f"{doc} ¶{parsed.paragraph} has no passage at chars {parsed.start}-{parsed.end}")
    return doc, windows, parsed


def _mean_ocr(windows: list[Passage]) -> float | None:
    read = [w.ocr_confidence for w in windows if w.ocr_confidence is not None]
    return round(sum(read) / len(read), 4) if read else None


def show(snapshot: Reader, citation: str, *, context: int = 1) -> Shown:
    """Find the cited passage and ``context`` paragraphs on each side."""
    doc, windows, parsed = find_cited(snapshot, citation)
    text = snapshot.document_text(doc) or ""
    first, last = windows[0], windows[-1]
    if len(windows) == 1:
        cited = first
    else:  # the whole paragraph, across its windows
        cited = Passage(
            id=first.id, doc=doc, paragraph=first.paragraph, window=1, windows=1, start=first.start,
            end=last.end, text=text[first.start : last.end], page=first.page, section=first.section,
            seq=first.seq, also=first.also, ocr_confidence=_mean_ocr(windows),
        )
    before = [_paragraph(snapshot, doc, n, text) for n in range(cited.seq - context, cited.seq) if n >= 1]
    after = [_paragraph(snapshot, doc, n, text) for n in range(cited.seq + 1, cited.seq + context + 1)]
    return Shown(
        citation=format_citation(cited),
        cited=cited,
        before=tuple(p for p in before if p),
        after=tuple(p for p in after if p),
    )
