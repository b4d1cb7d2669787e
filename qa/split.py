"""Split extracted text into passages and sentences, keeping exact character offsets.

A paragraph is a block of text between blank lines, numbered from 1. A paragraph
longer than the model's input window becomes overlapping windows that together
cover every character, so nothing is silently truncated.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Iterator

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
    text: str, span: Span, token_offsets: TokenOffsets, *, max_tokens: int, overlap: int
) -> list[Span]:
    """Cut ``text[span]`` into windows of at most ``max_tokens`` tokens.

    Consecutive windows share ``overlap`` tokens, so their union is the whole span.
    """
    if max_tokens <= 0 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens > 0 and 0 <= overlap < max_tokens")
    offsets = token_offsets(text[span.start : span.end])
    if len(offsets) <= max_tokens:
        return [span]
    step = max_tokens - overlap
    windows: list[Span] = []
    first = 0
    while True:
        last = min(first + max_tokens, len(offsets)) - 1
        at_end = last == len(offsets) - 1
        start = span.start if first == 0 else span.start + offsets[first][0]
        end = span.end if at_end else span.start + offsets[last][1]
        windows.append(Span(start, end))
        if at_end:
            return windows
        first += step


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
    sentences: list[Span] = []
    cursor = 0
    for piece in _segmenter().segment(chunk):
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


def split_passages(
    text: str, token_offsets: TokenOffsets, *, max_tokens: int, overlap: int = 32
) -> Iterator[PassageSpan]:
    """Every passage of ``text`` with its paragraph number, window and sentences."""
    overlap = min(overlap, max_tokens // 4)
    for number, paragraph in enumerate(split_paragraphs(text), start=1):
        windows = split_windows(text, paragraph, token_offsets, max_tokens=max_tokens, overlap=overlap)
        for index, window in enumerate(windows, start=1):
            yield PassageSpan(
                paragraph=number,
                window=index,
                windows=len(windows),
                start=window.start,
                end=window.end,
                sentences=tuple(split_sentences(text, window)),
            )
