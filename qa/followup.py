"""Follow-up questions, answered without a generative model.

"Who is the president of the exile government?" then "What did he call
Azerbaijan's agreements?": the second question alone does not say who "he" is. When a question
leans on the previous one (a pronoun or a demonstrative), the names in the
previous answer's highlighted sentence are added to the text that is searched,
lexically and densely. The user still sees their own question; nothing is
rewritten for display.
"""

from __future__ import annotations

import re

from qa.records import Answer

# Words that point back to something said before.
ANAPHORA = frozenset(
    """he she him her his hers they them their theirs it its this that these those there then
    former latter same such""".split()
)
_WORD = re.compile(r"\w+")
# Capitalised words and runs of them ("Mamtimin Ala", "East Turkistan Government").
_NAME = re.compile(r"\b[A-Z][a-z][\w’'-]*(?:\s+[A-Z][a-z][\w’'-]*)*")
# Capitalised for other reasons than being a name: calendar words, openers.
_NOT_NAMES = frozenset(
    """the a an in on at of for and but or if when what who which this that it he she they about every
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july
    august september october november december""".split()
)


def is_follow_up(question: str) -> bool:
    return any(word in ANAPHORA for word in _WORD.findall(question.lower()))


def names_in(text: str) -> list[str]:
    """Capitalised words of ``text``, without calendar words and without a lone
    capitalised word that only opens the sentence (all-capitals datelines are skipped too)."""
    names: dict[str, None] = {}
    for match in _NAME.finditer(text):
        words = [w.removesuffix("'s").removesuffix("’s") for w in match[0].split()]
        words = [w for w in words if w.lower() not in _NOT_NAMES]
        if not words or (match.start() == 0 and len(words) == 1 and text.count(words[0]) == 1):
            continue
        names.setdefault(" ".join(words), None)
    return list(names)


def contextualize(question: str, previous: Answer | None) -> str:
    """The text to search for ``question`` asked right after ``previous``."""
    if previous is None or not previous.hits or not is_follow_up(question):
        return question
    names = [n for n in names_in(previous.hits[0].highlight) if n.lower() not in question.lower()]
    if not names:
        return question
    return f"{question} ({', '.join(names)})"
