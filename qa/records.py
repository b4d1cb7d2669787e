"""The records that flow between stages. All frozen: a stage never edits another's output."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Span:
    """A character range ``[start, end)`` of a document's extracted text."""

    start: int
    end: int


@dataclass(frozen=True)
class PassageSpan:
    """Where a passage lies: paragraph number (1-based), window within it (1-based), range."""

    paragraph: int
    window: int
    windows: int
    start: int
    end: int
    sentences: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Document:
    """An indexed path as the catalog knows it."""

    id: int
    path: str
    sha256: str
    passages: int = 0
    format: str = "text"
    same_as: tuple[str, ...] = ()  # other paths with the same content


@dataclass(frozen=True)
class Passage:
    """A passage as stored. ``paragraph`` counts from 1 on its page for paged
    formats and in the whole document otherwise; ``seq`` always counts in the
    whole document. ``also`` names other paths with the same content."""

    id: int
    doc: str
    paragraph: int
    window: int
    windows: int
    start: int
    end: int
    text: str
    page: int | None = None
    section: str | None = None
    seq: int = 0
    also: tuple[str, ...] = ()
    ocr_confidence: float | None = None  # read by OCR: its words' mean confidence (0-1); None otherwise

    @property
    def ocr(self) -> bool:
        return self.ocr_confidence is not None


def format_citation(passage: Passage) -> str:
    """How a passage is cited: "report.txt ¶4", "report.pdf, p. 3, ¶2" (``qa.cite`` reads it back)."""
    name = PurePosixPath(passage.doc).name
    where = [name]
    if passage.section:
        where.append(f"§ {passage.section}")
    if passage.page is not None:
        where.append(f"p. {passage.page}")
    chars = f", chars {passage.start}-{passage.end}" if passage.windows > 1 else ""
    # "report.txt ¶4", but "report.pdf, p. 3, ¶2" once there is more than a name.
    return f"{', '.join(where)}{',' if len(where) > 1 else ''} ¶{passage.paragraph}{chars}"


@dataclass(frozen=True)
class Hit:
    """One ranked passage for a question."""

    rank: int
    score: float
    passage: Passage
    highlight: str
    highlight_start: int
    highlight_end: int
    similarity: float
    confidence: float = 0.0  # the calibrated chance that it answers (qa.confidence)

    @property
    def citation(self) -> str:
        return format_citation(self.passage)

    def to_json(self) -> dict:
        p = self.passage
        return {
            "rank": self.rank,
            "score": round(self.score, 4),
            "doc": p.doc,
            "paragraph": p.paragraph,
            "page": p.page,
            "section": p.section,
            "start": p.start,
            "end": p.end,
            "text": p.text,
            "highlight": self.highlight,
            "highlight_start": self.highlight_start,
            "highlight_end": self.highlight_end,
            "similarity": round(self.similarity, 4),
            "confidence": round(self.confidence, 4),
            "citation": self.citation,
            "also_in": list(p.also),
            # The words were recognised in an image, not read from text: check them against the original.
            "ocr": p.ocr,
            "ocr_confidence": p.ocr_confidence,
        }


@dataclass(frozen=True)
class Answer:
    """The passages found for one question, and whether any of them is a credible answer."""

    question: str
    answered: bool
    confidence: float
    hits: tuple[Hit, ...] = field(default_factory=tuple)
    id: str | None = None
    searched: str | None = None  # the text searched, when a follow-up added context to the question

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "question": self.question,
            "answered": self.answered,
            "confidence": round(self.confidence, 4),
            "results": [hit.to_json() for hit in self.hits],
        }
        if self.searched is not None:
            out["searched_for"] = self.searched
        return out


@dataclass(frozen=True)
class OcrWord:
    """A recognised word: its range in the extracted text, its box on the page, Tesseract's confidence."""

    page: int  # 1-based
    line: int  # numbered over the page, so boxes merge per line (``qa.pageview.regions``)
    start: int
    end: int
    confidence: float  # 0-100, as Tesseract gives it
    x0: float  # fractions of the page, y down
    y0: float
    x1: float
    y1: float

    def shifted(self, by: int) -> "OcrWord":
        return OcrWord(self.page, self.line, self.start + by, self.end + by, self.confidence,
                       self.x0, self.y0, self.x1, self.y1)


def mean_confidence(words: list[OcrWord], start: int, end: int, ends: list[int] | None = None) -> float | None:
    """The mean confidence (0-1) of the words overlapping ``[start, end)``; None when none was recognised.

    ``words`` are in text order; ``ends``, their ``end`` offsets, spares rebuilding that list per passage."""
    ends = ends if ends is not None else [w.end for w in words]
    picked = []
    for w in words[bisect_left(ends, start + 1):]:
        if w.start >= end:
            break
        picked.append(w.confidence)
    return round(sum(picked) / len(picked) / 100, 4) if picked else None
