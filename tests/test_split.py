"""Paragraphs, windows and sentences: exact offsets, nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes import fake_token_offsets
from qa.records import Span
from qa.split import split_paragraphs, split_passages, split_sentences, split_windows


def texts(text: str, spans) -> list[str]:
    return [text[s.start : s.end] for s in spans]


def covered(spans) -> set[int]:
    return {i for s in spans for i in range(s.start, s.end)}


def reference_paragraphs(text: str) -> list[tuple[int, int]]:
    """An independent oracle: maximal runs of lines that hold something besides whitespace."""
    out: list[tuple[int, int]] = []
    run: tuple[int, int] | None = None
    at = 0
    for line in text.split("\n"):
        start, end = at, at + len(line)
        at = end + 1
        if line.strip():
            run = (run[0], end) if run else (start, end)
        elif run:
            out.append(run)
            run = None
    if run:
        out.append(run)
    trimmed = []
    for start, end in out:
        chunk = text[start:end]
        lead = len(chunk) - len(chunk.lstrip())
        trimmed.append((start + lead, start + len(chunk.rstrip())))
    return trimmed


# -- paragraphs ---------------------------------------------------------------------


def test_paragraphs_are_blocks_between_blank_lines():
    text = "First paragraph,\nstill the first.\n\nSecond one.\n\n\n\nThird."
    spans = split_paragraphs(text)
    assert texts(text, spans) == ["First paragraph,\nstill the first.", "Second one.", "Third."]
    assert spans[0] == Span(0, len("First paragraph,\nstill the first."))


def test_a_single_newline_does_not_split():
    text = "line one\nline two\nline three"
    assert split_paragraphs(text) == [Span(0, len(text))]


def test_whitespace_only_line_is_blank():
    text = "alpha\n \t  \nbeta\n\u00a0\u3000\ngamma"
    assert texts(text, split_paragraphs(text)) == ["alpha", "beta", "gamma"]


def test_crlf_blank_lines_split_and_offsets_stay_exact():
    text = "one\r\ntwo\r\n\r\nthree\r\n \r\nfour\r\n"
    spans = split_paragraphs(text)
    assert texts(text, spans) == ["one\r\ntwo", "three", "four"]
    assert spans[1] == Span(text.index("three"), text.index("three") + 5)


def test_leading_and_trailing_blank_lines_are_trimmed():
    text = "\n\n  \n   hello world  \n\n \n"
    spans = split_paragraphs(text)
    assert spans == [Span(text.index("hello"), text.index("world") + 5)]


@pytest.mark.parametrize("text", ["", " ", "\n", "\n\n\n", " \t\r\n \r\n"])
def test_no_paragraphs_in_blank_text(text):
    assert split_paragraphs(text) == []
    assert list(split_passages(text, fake_token_offsets, max_tokens=8)) == []


def test_paragraphs_are_numbered_from_one_in_order():
    text = "a b c\n\nd e f\n\n\ng h i\n"
    numbers = [p.paragraph for p in split_passages(text, fake_token_offsets, max_tokens=32)]
    assert numbers == [1, 2, 3]


# -- windows ------------------------------------------------------------------------


LONG = "Preamble.\n\n" + " ".join(f"w{i}," for i in range(60)) + " end of it.\n\nAfter."


def long_paragraph():
    spans = split_paragraphs(LONG)
    assert len(spans) == 3
    return spans[1]


def test_short_paragraph_is_one_window():
    text = "just a few words here"
    span = Span(0, len(text))
    assert split_windows(text, span, fake_token_offsets, max_tokens=5, overlap=1) == [span]


@pytest.mark.parametrize("max_tokens,overlap", [(10, 2), (16, 4), (7, 1), (5, 4)])
def test_windows_cover_a_long_paragraph(max_tokens, overlap):
    span = long_paragraph()
    windows = split_windows(LONG, span, fake_token_offsets, max_tokens=max_tokens, overlap=overlap)
    assert len(windows) > 1
    assert windows[0].start == span.start
    assert windows[-1].end == span.end
    assert covered(windows) == set(range(span.start, span.end))
    for before, after in zip(windows, windows[1:]):
        assert before.start < after.start < before.end < after.end  # overlapping, moving forward
        shared = fake_token_offsets(LONG[after.start : before.end])
        assert len(shared) == overlap
    for window in windows:
        assert span.start <= window.start < window.end <= span.end
        assert len(fake_token_offsets(LONG[window.start : window.end])) <= max_tokens
        assert LONG[window.start : window.end] == LONG[window.start : window.end].strip()


def test_window_offsets_are_absolute_in_the_document():
    span = long_paragraph()
    windows = split_windows(LONG, span, fake_token_offsets, max_tokens=10, overlap=2)
    assert LONG[windows[0].start : windows[0].end].startswith("w0, w1,")
    assert LONG[windows[-1].start : windows[-1].end].endswith("end of it.")


@pytest.mark.parametrize("max_tokens,overlap", [(0, 0), (-1, 0), (1, 0), (5, 0), (5, 5), (5, 6), (5, -1)])
def test_bad_window_settings_are_refused(max_tokens, overlap):
    with pytest.raises(ValueError):
        split_windows(LONG, long_paragraph(), fake_token_offsets, max_tokens=max_tokens, overlap=overlap)


def test_split_passages_numbers_windows_of_a_paragraph():
    passages = list(split_passages(LONG, fake_token_offsets, max_tokens=12))
    middle = [p for p in passages if p.paragraph == 2]
    assert [p.paragraph for p in passages][0] == 1 and passages[-1].paragraph == 3
    assert len(middle) > 1
    assert [p.window for p in middle] == list(range(1, len(middle) + 1))
    assert {p.windows for p in middle} == {len(middle)}
    # overlap is clamped to a quarter of the window: 12 // 4 = 3 shared tokens
    assert len(fake_token_offsets(LONG[middle[1].start : middle[0].end])) == 3


# -- sentences ----------------------------------------------------------------------


def test_sentence_offsets_are_exact():
    text = "Intro.\n\n  First sentence here.   Second one follows!\nThird, on a new line?  "
    span = split_paragraphs(text)[1]
    sentences = split_sentences(text, span)
    assert texts(text, sentences) == ["First sentence here.", "Second one follows!", "Third, on a new line?"]
    for s in sentences:
        assert span.start <= s.start < s.end <= span.end


def test_sentence_with_abbreviation_and_no_final_stop():
    text = "Dr. Smith met Mr. Jones at 3 p.m. on Friday. They talked for hours"
    sentences = split_sentences(text, Span(0, len(text)))
    assert texts(text, sentences)[-1] == "They talked for hours"
    assert "".join(texts(text, sentences)).replace(" ", "") == text.replace(" ", "")


def test_one_sentence_passage_is_its_own_sentence():
    text = "no punctuation at all"
    assert split_sentences(text, Span(0, len(text))) == [Span(0, len(text))]


# -- properties over arbitrary text ---------------------------------------------------

_pieces = st.one_of(
    st.sampled_from(["\n\n", "\n \t\n", "\r\n\r\n", "\n", "\r\n", " ", "  ", "\t"]),
    st.sampled_from([". ", "! ", "? ", ", ", "...", "Dr. ", "e.g. ", "\"", "(", ")"]),
    st.sampled_from(["alpha", "Beta", "x", "42", "café", "straße", "中文", "🙂", "snake_case", "Mr"]),
    st.sampled_from(["\u00a0", "\u2028", "\u3000", "\x0b", "\x0c", "\x1c", "\x85", "\u0301", "\x00"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4),
)
# Text built from pieces, so blank lines, sentence ends and long paragraphs are common.
arbitrary_text = st.one_of(
    st.lists(_pieces, max_size=120).map("".join),
    st.text(max_size=200),
)

property_settings = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(text=arbitrary_text)
def test_paragraphs_match_the_reference(text):
    spans = split_paragraphs(text)
    assert [(s.start, s.end) for s in spans] == reference_paragraphs(text)


@property_settings
@given(text=arbitrary_text, max_tokens=st.integers(min_value=4, max_value=12))
def test_passages_are_exact_and_cover_every_paragraph(text, max_tokens):
    passages = list(split_passages(text, fake_token_offsets, max_tokens=max_tokens))
    paragraphs = split_paragraphs(text)

    numbers = []
    for p in passages:
        assert 0 <= p.start < p.end <= len(text)
        body = text[p.start : p.end]
        assert body == body.strip() and body
        assert len(fake_token_offsets(body)) <= max_tokens
        assert 1 <= p.window <= p.windows
        if not numbers or numbers[-1] != p.paragraph:
            numbers.append(p.paragraph)
    assert numbers == list(range(1, len(paragraphs) + 1))

    for number, paragraph in enumerate(paragraphs, start=1):
        windows = [p for p in passages if p.paragraph == number]
        assert [w.window for w in windows] == list(range(1, len(windows) + 1))
        assert all(w.windows == len(windows) for w in windows)
        assert windows[0].start == paragraph.start and windows[-1].end == paragraph.end
        for before, after in zip(windows, windows[1:]):
            assert before.start < after.start < before.end <= after.end
        assert covered(windows) == set(range(paragraph.start, paragraph.end))


@property_settings
@given(text=arbitrary_text, max_tokens=st.integers(min_value=4, max_value=12))
def test_sentences_lie_inside_their_passage(text, max_tokens):
    for p in split_passages(text, fake_token_offsets, max_tokens=max_tokens):
        assert p.sentences
        previous_end = p.start
        for s in p.sentences:
            assert previous_end <= s.start < s.end <= p.end
            sentence = text[s.start : s.end]
            assert sentence == sentence.strip()
            previous_end = s.end
        # every visible character of the passage belongs to one of its sentences
        visible = {i for i in range(p.start, p.end) if not text[i].isspace()}
        assert visible <= covered(p.sentences)


def test_windows_need_an_overlap_so_they_cover_the_span():
    """Without shared tokens the whitespace between two windows would be in neither."""
    text = "one two three four five six"
    with pytest.raises(ValueError):
        split_windows(text, Span(0, len(text)), fake_token_offsets, max_tokens=2, overlap=0)


def test_windows_end_and_start_at_sentence_boundaries():
    text = " ".join(f"Sentence number {i} has six tokens." for i in range(12))
    span = Span(0, len(text))
    sentences = split_sentences(text, span)
    windows = split_windows(text, span, fake_token_offsets, max_tokens=20, overlap=8, sentences=sentences)
    assert len(windows) > 2
    starts = {s.start for s in sentences}
    ends = {s.end for s in sentences}
    for window in windows:
        assert window.start in starts and window.end in ends
        assert len(fake_token_offsets(text[window.start : window.end])) <= 20
    assert covered(windows) == set(range(span.start, span.end))
    for before, after in zip(windows, windows[1:]):
        assert before.start < after.start < before.end  # one whole sentence repeated
