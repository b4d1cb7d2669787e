"""Answers written out for other tools: JSON lines, one JSON document, or CSV.

``qa batch`` and the page's conversation download write through these, so a
script reading one can read the other: the same keys, the same columns, one
CSV row a cited passage (a question with no passage still gets its row).
"""

from __future__ import annotations

import csv
import json
from typing import IO, Iterable

from qa.render import passage_link

CSV_COLUMNS = [
    "id", "question", "answered", "confidence", "rank", "score", "doc", "paragraph",
    "page", "section", "start", "end", "citation", "ocr", "ocr_confidence", "highlight", "text",
]
# The page knows where it is served, so its downloads carry each passage's link.
LINK_COLUMN = "link"


def with_links(answer: dict) -> dict:
    """``answer`` with each result's ``link``: the page's relative URL that opens that passage."""
    results = [
        {**r, LINK_COLUMN: passage_link(r["doc"], r["start"], r["end"], r["text"])} for r in answer.get("results") or []
    ]
    return {**answer, "results": results}


def csv_rows(answer: dict) -> Iterable[dict]:
    base = {key: answer.get(key) for key in ("id", "question", "answered", "confidence")}
    for result in answer.get("results") or [{}]:
        yield {**base, **result}


class AnswerWriter:
    """Writes answers to ``out`` one at a time as ``jsonl`` or ``csv``."""

    def __init__(self, out: IO[str], fmt: str, *, links: bool = False):
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown format {fmt!r}: expected jsonl or csv")
        self.out = out
        self.csv = None
        if fmt == "csv":
            columns = CSV_COLUMNS + [LINK_COLUMN] if links else CSV_COLUMNS
            self.csv = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, answer: dict) -> None:
        if self.csv is None:
            self.out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        else:
            self.csv.writerows(csv_rows(answer))


def conversation_json(answers: list[dict], *, index: str) -> str:
    """One JSON document: the index asked and every answer in order, with its citations and links."""
    return json.dumps({"index": index, "answers": answers}, ensure_ascii=False, indent=1)
