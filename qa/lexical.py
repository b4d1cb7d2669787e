"""Turn a free-text question into a safe FTS5 query.

Users type anything, including FTS5 syntax (quotes, NEAR, AND, ``*``, ``:``).
Only word tokens survive, each quoted as a literal term and joined by OR, so
no input can be parsed as an FTS5 operator.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64

# English function words that carry no topic. bm25's idf already discounts
# them, but each still adds a little score to every passage containing it and
# drags in candidates; dropping them from the question (never from the index)
# measured better on the benchmark. A question made only of them keeps them.
STOP_WORDS = frozenset(
    """a about an and are as at be been being but by can could did do does for from had has have he her
    him his how i if in into is it its me my of on or our she so than that the their them then there these
    they this those to us was we were what when where which who whom whose why will with would you your""".split()
)


def question_terms(question: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower()):
        if word not in seen:
            seen[word] = None
        if len(seen) >= MAX_TERMS:
            break
    content = [word for word in seen if word not in STOP_WORDS]
    return content or list(seen)


def fts_query(question: str) -> str | None:
    """An FTS5 MATCH expression for ``question``, or None when it has no words."""
    terms = question_terms(question)
    if not terms:
        return None
    return " OR ".join(f'"{term}"' for term in terms)
