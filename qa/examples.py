"""Example questions for the chat page, fitting whatever is indexed.

A file ``questions.txt`` in the index folder (one question a line; blank lines
and lines starting with ``#`` are skipped) gives them; the chat page writes one
when it indexes the seed articles on first use. Without it, one question is
made for each of the first documents from the document's own words: its title
when its first paragraph is one (short, one line, no closing full stop), else
the first name (a run of capitalised words) of its opening, else its file name.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from qa.followup import names_in

logger = logging.getLogger(__name__)

EXAMPLES_FILE = "questions.txt"
# Where the chat page takes the seeds' examples from (qa/seed_questions.txt).
SEED_EXAMPLES = Path(__file__).resolve().parent / "seed_questions.txt"
MAX_TITLE_CHARS = 100


def read_examples(path: str | Path) -> list[str]:
    """The questions of a ``questions.txt`` file, in order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _subject(opening: str, path: str) -> str:
    first = opening.strip()
    if first and len(first) <= MAX_TITLE_CHARS and "\n" not in first and not first.endswith("."):
        return first
    names = [n for n in names_in(first) if " " in n] or names_in(first)
    return names[0] if names else PurePosixPath(path).stem.replace("_", " ")


def example_questions(qa, limit: int = 4) -> list[str]:
    """Up to ``limit`` questions to offer on the page for the index of ``qa`` (a :class:`qa.QA`)."""
    own = qa.index_dir / EXAMPLES_FILE
    if own.is_file():
        try:
            return read_examples(own)[:limit]
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("cannot read %s, making examples from the documents: %s", own, exc)
    if not qa.exists():
        return []
    snapshot = qa.snapshot()
    questions: list[str] = []
    for document in snapshot.documents():
        if document.same_as and any(p < document.path for p in document.same_as):
            continue  # one content under several paths: once
        passages = snapshot.passages_of(document.path)
        if not passages:
            continue
        question = f"What is said about {_subject(passages[0].text, document.path)}?"
        if question not in questions:
            questions.append(question)
        if len(questions) >= limit:
            break
    return questions
