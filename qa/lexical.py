"""Turn a free-text question into a safe FTS5 query.

Users type anything, including FTS5 syntax (quotes, NEAR, AND, ``*``, ``:``).
Only word tokens survive, each quoted as a literal term and joined by OR, so
no input can be parsed as an FTS5 operator.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 64


def question_terms(question: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(question.lower()):
        if word not in seen:
            seen[word] = None
        if len(seen) >= MAX_TERMS:
            break
    return list(seen)


def fts_query(question: str) -> str | None:
    """An FTS5 MATCH expression for ``question``, or None when it has no words."""
    terms = question_terms(question)
    if not terms:
        return None
    return " OR ".join(f'"{term}"' for term in terms)
