"""Checking a quotation against its citation, and finding where it really is.

A verdict describes the cited place:

- ``exact``: the quote occurs verbatim in the cited passage;
- ``near-exact``: it occurs once whitespace runs, letter case, typographic
  quotes (‘’ “” „ ′ ″ « »), dashes (‐ ‑ ‒ – — ― −, spaces around a dash
  optional) and the ellipsis (… = ...) are normalised;
- ``similar``: some run of words of the cited passage has a character-level
  similarity of at least :data:`SIMILAR_RATIO` (0.8) with the quote (difflib's
  ``SequenceMatcher.ratio`` on the normalised texts, ``2·matches / total
  length``);
- ``not-found``: none of the above.

Surface similarity, not embedding cosine, is the measure on purpose: a quote is
about the words. A faithful paraphrase has a high cosine but is not a quote,
while a misquote with a word changed still scores about 0.97 here.

When the quote is not at the cited place (anything but exact or near-exact),
every indexed document's full text is searched for it, verbatim first, then
normalised; the cited document first. Only when it occurs nowhere are the
retriever's closest passages asked for, each reported with its most similar
run of words. Every location carries exact offsets into its document's
extracted text: ``document_text[start:end] == location.text``, and a citation
of the paragraph (or window) where it begins. Text that begins in no passage
(a Markdown heading, which names a section rather than being a paragraph)
cannot be cited and is not reported.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from typing import Callable, Iterator

from qa.cite import format_citation, show
from qa.records import Answer, Passage
from qa.search import QueryError
from qa.storage import Reader

STATUSES = ("exact", "near-exact", "similar", "not-found")

# A run of words at least this similar to the quote counts as "similar".
# Measured on the 16 SQuAD dev articles (bench/) with random sentences of six
# words or more: against an unrelated paragraph the best run scores 0.34
# (median; 99th percentile 0.49), against the sentence's own paragraph with the
# sentence cut out 0.40 (median; max 0.72 over 200 samples); the sentence with
# one word replaced scores 0.97 (1st percentile 0.91), with two replaced 0.95
# (1st percentile 0.80).
SIMILAR_RATIO = 0.8

# Runs of words scored in full by best_window, after ranking by shared words.
_CANDIDATE_RUNS = 6

# How many other locations a verdict lists at most.
LIMIT = 5

_SINGLE_QUOTES = "'‘’‚‛′`´"
_DOUBLE_QUOTES = '"“”„‟″«»'
_DASHES = "-‐‑‒–—―−"
_FOLD = str.maketrans(
    {**{c: "'" for c in _SINGLE_QUOTES}, **{c: '"' for c in _DOUBLE_QUOTES}, **{c: "-" for c in _DASHES}, "…": "..."}
)
_AROUND_DASH = re.compile(r"\s*([" + re.escape(_DASHES) + r"])\s*")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Location:
    """Where text matching the quote lies: ``document_text[start:end] == text``."""

    doc: str
    paragraph: int
    start: int
    end: int
    text: str
    match: str  # exact | near-exact | similar | closest
    score: float
    citation: str
    page: int | None = None

    def to_json(self) -> dict:
        return {
            "doc": self.doc,
            "paragraph": self.paragraph,
            "page": self.page,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "match": self.match,
            "score": round(self.score, 4),
            "citation": self.citation,
        }


@dataclass(frozen=True)
class Verdict:
    """Whether ``quote`` is at ``cited``, and where else it appears."""

    quote: str
    status: str  # one of STATUSES
    score: float  # 1.0 for exact and near-exact; the best word-run similarity otherwise
    cited: Passage  # the passage (or whole paragraph) the citation points to
    citation: str  # the cited passage's citation, in canonical form
    match: Location | None = None  # the matching text at the cited place, unless not-found
    found: tuple[Location, ...] = ()  # other places, when it is not (exactly) at the cited one

    @property
    def at_citation(self) -> bool:
        return self.status in ("exact", "near-exact")

    def to_json(self) -> dict:
        c = self.cited
        return {
            "quote": self.quote,
            "status": self.status,
            "score": round(self.score, 4),
            "citation": self.citation,
            "cited": {
                "doc": c.doc, "paragraph": c.paragraph, "page": c.page,
                "start": c.start, "end": c.end, "text": c.text,
            },
            "match": self.match.to_json() if self.match else None,
            "found": [location.to_json() for location in self.found],
        }


# -- matching ------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The form in which near-exact texts are equal (used for similarity scores too)."""
    folded = text.translate(_FOLD).casefold()
    return " ".join(_AROUND_DASH.sub(r"\1", folded).split())


def near_pattern(quote: str) -> re.Pattern:
    """A regex that matches ``quote`` in a text up to the normalisations of :func:`normalise`.

    A regex over the original text (rather than a search in a normalised copy)
    gives exact offsets for free.
    """
    quote = _AROUND_DASH.sub(r"\1", quote.strip())
    parts = []
    for token in re.finditer(r"\s+|\.\.\.|.", quote, flags=re.S):
        t = token.group()
        if t.isspace():
            parts.append(r"\s+")
        elif t in ("...", "…"):
            parts.append(r"(?:\.\.\.|…)")
        elif t in _SINGLE_QUOTES:
            parts.append("[" + re.escape(_SINGLE_QUOTES) + "]")
        elif t in _DOUBLE_QUOTES:
            parts.append("[" + re.escape(_DOUBLE_QUOTES) + "]")
        elif t in _DASHES:
            parts.append(r"\s*[" + re.escape(_DASHES) + r"]\s*")
        else:
            parts.append(re.escape(t))
    return re.compile("".join(parts), flags=re.IGNORECASE)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    # A quote that starts or ends with a dash may pull in the spaces around it.
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def find_exact(text: str, quote: str) -> Iterator[tuple[int, int]]:
    at = text.find(quote)
    while at >= 0:
        yield at, at + len(quote)
        at = text.find(quote, at + 1)


def find_near(text: str, pattern: re.Pattern) -> Iterator[tuple[int, int]]:
    for match in pattern.finditer(text):
        yield _trim(text, *match.span())


def best_window(text: str, quote: str) -> tuple[float, int, int]:
    """``(ratio, start, end)`` of the run of whole words of ``text`` most similar to ``quote``.

    difflib's ratio costs a fraction of a millisecond a window, too much for
    every window of a long paragraph; so runs of the quote's length in words
    are ranked by how many of the quote's words they share (a sliding count),
    only the best few are scored, and the best of those is refined by moving
    its ends a word at a time while the ratio improves.
    """
    target = normalise(quote)
    spans = [m.span() for m in _WORD.finditer(text)]
    if not spans or not target:
        return 0.0, 0, 0
    tokens = [normalise(text[a:b]) for a, b in spans]
    wanted = Counter(target.split())
    n = min(len(target.split()), len(spans))

    # shared[i]: words the run spans[i : i + n] shares with the quote (as multisets)
    have: Counter = Counter()
    shared_now = 0
    shared = []
    for i, token in enumerate(tokens):
        have[token] += 1
        if have[token] <= wanted[token]:
            shared_now += 1
        if i >= n:
            old = tokens[i - n]
            if have[old] <= wanted[old]:
                shared_now -= 1
            have[old] -= 1
        if i >= n - 1:
            shared.append(shared_now)
    starts = sorted(range(len(shared)), key=lambda i: -shared[i])[:_CANDIDATE_RUNS]

    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(target)  # difflib caches what it learns about seq2
    cache: dict[tuple[int, int], float] = {}

    def score(i: int, j: int) -> float:
        if (i, j) not in cache:
            matcher.set_seq1(normalise(text[spans[i][0] : spans[j][1]]))
            cache[i, j] = matcher.ratio()
        return cache[i, j]

    best, bi, bj = max((score(i, i + n - 1), i, i + n - 1) for i in starts)
    while True:  # hill-climb: move either end by a word while that helps
        moves = [(bi - 1, bj), (bi + 1, bj), (bi, bj - 1), (bi, bj + 1)]
        step = max(((score(i, j), i, j) for i, j in moves if 0 <= i <= j < len(spans)), default=(-1.0, 0, 0))
        if step[0] <= best:
            return best, spans[bi][0], spans[bj][1]
        best, bi, bj = step


# -- locations -----------------------------------------------------------------------


class _DocumentPassages:
    """A document's passages, to name the paragraph (and window) that holds a range."""

    def __init__(self, snapshot: Reader, doc: str) -> None:
        self.passages = snapshot.passages_of(doc)
        self.starts = [p.start for p in self.passages]

    def locate(self, start: int, end: int) -> tuple[int, int | None, str] | None:
        """``(paragraph, page, citation)`` of the paragraph where ``[start, end)`` begins.

        None when it begins in no passage (in a heading, say): such text cannot be cited.
        """
        at = bisect_right(self.starts, start) - 1
        if at < 0 or start >= self.passages[at].end:
            return None
        passage = self.passages[at]
        windows = [p for p in self.passages if p.seq == passage.seq]
        holder = next((w for w in windows if w.start <= start and end <= w.end), None)
        if holder is None:  # across windows (or paragraphs): cite the whole paragraph, which names no chars
            holder = replace(windows[0], window=1, windows=1, end=windows[-1].end)
        return passage.paragraph, passage.page, format_citation(holder)


def _location(
    text: str, doc: str, where: _DocumentPassages, start: int, end: int, match: str, score: float
) -> Location | None:
    place = where.locate(start, end)
    if place is None:
        return None
    paragraph, page, citation = place
    return Location(doc, paragraph, start, end, text[start:end], match, score, citation, page)


def _elsewhere(snapshot: Reader, quote: str, cited: Passage, limit: int) -> list[Location]:
    """Verbatim occurrences in any document (the cited one first), else normalised ones."""
    # One content stored under several paths is searched once, under the path cited if it is one.
    by_content: dict[str, str] = {}
    for d in sorted(snapshot.documents(), key=lambda d: d.path != cited.doc):
        by_content.setdefault(d.sha256, d.path)
    paths = list(by_content.values())  # the cited document first
    pattern = near_pattern(quote)

    def outside(doc: str, start: int, end: int) -> bool:
        return not (doc == cited.doc and cited.start <= start and end <= cited.end)

    for kind, finder in (("exact", lambda t: find_exact(t, quote)), ("near-exact", lambda t: find_near(t, pattern))):
        found: list[Location] = []
        for doc in paths:
            text = snapshot.document_text(doc) or ""
            where = None
            for start, end in finder(text):
                if not outside(doc, start, end):
                    continue
                where = where or _DocumentPassages(snapshot, doc)
                location = _location(text, doc, where, start, end, kind, 1.0)
                if location is not None:
                    found.append(location)
                if len(found) >= limit:
                    return found
        if found:
            return found
    return []


def _closest(
    quote: str,
    cited: Passage,
    ask: Callable[[str, int], Answer],
    limit: int,
    similar_ratio: float,
    cited_score: float,
) -> list[Location]:
    """The retriever's passages for the quote, with their most similar run of words.

    A passage holding a run at least ``similar_ratio`` similar is reported as
    that run ("similar"); only when no passage has one are the passages
    themselves reported, in the retriever's order ("closest"). When the cited
    place was similar already, only more similar places are worth naming.
    """
    similar: list[Location] = []
    closest: list[Location] = []
    for hit in ask(quote, limit + 1).hits:
        p = hit.passage
        ratio, lo, hi = best_window(p.text, quote)
        if ratio >= similar_ratio:
            start, end, text, kind, out = p.start + lo, p.start + hi, p.text[lo:hi], "similar", similar
        else:
            start, end, text, kind, out = p.start, p.end, p.text, "closest", closest
        if cited.doc in (p.doc, *p.also) and cited.start <= start and end <= cited.end:
            continue  # the cited place, judged already
        # a passage's text is its document's text[start:end], so a slice of it keeps offsets exact
        out.append(Location(p.doc, p.paragraph, start, end, text, kind, ratio, format_citation(p), p.page))
    similar.sort(key=lambda location: -location.score)
    if cited_score >= similar_ratio:
        return [location for location in similar if location.score > cited_score][:limit]
    return (similar or closest)[:limit]


# -- the verdict ---------------------------------------------------------------------


def verify(
    snapshot: Reader,
    quote: str,
    citation: str,
    *,
    ask: Callable[[str, int], Answer] | None = None,
    limit: int = LIMIT,
    similar_ratio: float = SIMILAR_RATIO,
) -> Verdict:
    """Judge whether ``quote`` is at ``citation``; if not, where it is.

    ``ask(question, k)`` is the retriever used when the quote occurs nowhere
    verbatim or normalised; without it, no closest passages are reported.
    Raises :class:`qa.cite.CitationError` for a citation that cannot be read or
    points nowhere, :class:`QueryError` for an empty quote.
    """
    if not isinstance(quote, str) or not quote.strip():
        raise QueryError("the quote is empty")
    quote = quote.strip()
    shown = show(snapshot, citation, context=0)
    cited = shown.cited
    doc_text = snapshot.document_text(cited.doc) or ""
    where = _DocumentPassages(snapshot, cited.doc)

    def at(start: int, end: int, kind: str, score: float) -> Location:
        return _location(doc_text, cited.doc, where, cited.start + start, cited.start + end, kind, score)

    status, score, match = "not-found", 0.0, None
    exact = next(find_exact(cited.text, quote), None)
    if exact:
        status, score, match = "exact", 1.0, at(*exact, "exact", 1.0)
    else:
        near = next(find_near(cited.text, near_pattern(quote)), None)
        if near:
            status, score, match = "near-exact", 1.0, at(*near, "near-exact", 1.0)
        else:
            score, lo, hi = best_window(cited.text, quote)
            if score >= similar_ratio:
                status, match = "similar", at(lo, hi, "similar", score)

    found: list[Location] = []
    if status not in ("exact", "near-exact"):
        found = _elsewhere(snapshot, quote, cited, limit)
        if not found and ask is not None:
            found = _closest(quote, cited, ask, limit, similar_ratio, score)
    return Verdict(quote, status, score, cited, shown.citation, match, tuple(found))
