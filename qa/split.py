"""Split extracted text into passages and sentences, keeping exact character offsets.

A paragraph is a block of text between blank lines, numbered from 1. A paragraph
longer than the model's input window becomes overlapping windows that together
cover every character, so nothing is silently truncated.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from functools import lru_cache
from typing import Callable, Iterator, Sequence

from qa.records import PassageSpan, Span

# A blank line: a newline, optional horizontal whitespace, another newline.
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")

TokenOffsets = Callable[[str], list[tuple[int, int]]]


def split_paragraphs(text: str) -> list[Span]:
    """Non-empty blocks between blank lines, trimmed of surrounding whitespace."""
    spans: list[Span] = []
    start = 0
    for match in _BLANK_LINE.finditer(text):
        _append_trimmed(text, start, match.start(), spans)
        start = match.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, out: list[Span]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append(Span(start, end))


def split_windows(
    text: str,
    span: Span,
    token_offsets: TokenOffsets,
    *,
    max_tokens: int,
    overlap: int,
    sentences: Sequence[Span] = (),
) -> list[Span]:
    """Cut ``text[span]`` into windows of at most ``max_tokens`` tokens.

    Consecutive windows share between 1 and ``overlap`` tokens, so their union is
    the whole span. Given the span's ``sentences``, a window ends at a sentence
    end and the next starts at a sentence start wherever the limits allow, so
    windows cut no sentence in two unless one sentence is itself too long.
    """
    if max_tokens < 2 or not 1 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 2 and 1 <= overlap < max_tokens")
    offsets = token_offsets(text[span.start : span.end])
    count = len(offsets)
    if count <= max_tokens:
        return [span]
    token_starts = [start for start, _ in offsets]
    # Token positions where a sentence begins (never the very first token).
    boundaries = sorted({bisect_left(token_starts, s.start - span.start) for s in sentences} - {0, count})
    windows: list[Span] = []
    first = 0
    while True:
        last = min(first + max_tokens, count)  # exclusive
        if last < count:
            # End before the last sentence that starts in the window's second half.
            cut = bisect_right(boundaries, last) - 1
            if cut >= 0 and boundaries[cut] > first + max_tokens // 2:
                last = boundaries[cut]
        start = span.start if first == 0 else span.start + offsets[first][0]
        end = span.end if last == count else span.start + offsets[last - 1][1]
        windows.append(Span(start, end))
        if last == count:
            return windows
        # Repeat the end of this window: from a sentence start if one lies within
        # ``overlap`` tokens of the end, else exactly ``overlap`` tokens.
        at = bisect_left(boundaries, last - overlap)
        nxt = boundaries[at] if at < len(boundaries) and boundaries[at] < last else last - overlap
        first = max(nxt, first + 1)


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str, span: Span) -> list[Span]:
    """Sentences of ``text[span]`` as exact, trimmed ranges of ``text``.

    pysbd finds the boundaries; each sentence is then located in the source, so
    the offsets stay exact whatever the segmenter does with whitespace.
    """
    chunk = text[span.start : span.end]
    # pysbd ends a sentence at every line break; hard-wrapped text (and PDF
    # lines) would be cut mid-sentence. Same-length spaces keep offsets exact.
    chunk = chunk.replace("\r", " ").replace("\n", " ")
    sentences: list[Span] = []
    cursor = 0
    # ``processor().process()`` is what ``segment()`` runs before it searches every
    # sentence back with a regex of its own; we locate sentences with str.find
    # below, so skipping that search gives the same sentences in two thirds the time.
    for piece in _segmenter().processor(chunk).process() if chunk else ():
        piece = piece.strip()
        if not piece:
            continue
        found = chunk.find(piece, cursor)
        if found < 0:
            # The segmenter altered the text; fall back to the rest as one sentence.
            break
        sentences.append(Span(span.start + found, span.start + found + len(piece)))
        cursor = found + len(piece)
    rest = chunk[cursor:]
    if rest.strip():
        lead = len(rest) - len(rest.lstrip())
        tail = len(rest.rstrip())
        sentences.append(Span(span.start + cursor + lead, span.start + cursor + tail))
    return sentences or [span]


def _clip(text: str, sentences: Sequence[Span], window: Span) -> tuple[Span, ...]:
    """The parts of ``sentences`` inside ``window``, trimmed of whitespace."""
    clipped = []
    for sentence in sentences:
        start, end = max(sentence.start, window.start), min(sentence.end, window.end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            clipped.append(Span(start, end))
    return tuple(clipped) or (window,)


def split_passages(
    text: str,
    token_offsets: TokenOffsets,
    *,
    max_tokens: int,
    overlap: int | None = None,
    headings: Sequence[Span] = (),
) -> Iterator[PassageSpan]:
    """Every passage of ``text`` with its paragraph number, window and sentences.

    ``overlap`` (default a quarter of the window) bounds how many tokens
    consecutive windows of one paragraph share. A block that is only a heading
    (one of ``headings``) is not a paragraph: it names the section of the
    paragraphs below it instead, and is not counted.
    """
    overlap = max(1, min(overlap or max_tokens // 4, max_tokens // 4))
    heading_starts = [h.start for h in headings]  # in text order

    def is_heading(p: Span) -> bool:
        at = bisect_right(heading_starts, p.start) - 1
        return at >= 0 and p.end <= headings[at].end

    paragraphs = [p for p in split_paragraphs(text) if not is_heading(p)]
    for number, paragraph in enumerate(paragraphs, start=1):
        sentences = split_sentences(text, paragraph)
        windows = split_windows(
            text, paragraph, token_offsets, max_tokens=max_tokens, overlap=overlap, sentences=sentences
        )
        for index, window in enumerate(windows, start=1):
            yield PassageSpan(
                paragraph=number,
                window=index,
                windows=len(windows),
                start=window.start,
                end=window.end,
                sentences=_clip(text, sentences, window),
            )
