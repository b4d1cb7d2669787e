"""Ask questions of your own documents; every answer is a cited passage, nothing is generated."""

from qa.cite import CitationError
from qa.library import QA
from qa.records import Answer, Document, Hit, Passage
from qa.search import QueryError
from qa.storage import IndexCorrupt, IndexLocked, IndexMissing, ModelMismatch, StoreError

__all__ = [
    "QA",
    "Answer",
    "CitationError",
    "Document",
    "Hit",
    "IndexCorrupt",
    "IndexLocked",
    "IndexMissing",
    "ModelMismatch",
    "Passage",
    "QueryError",
    "StoreError",
]
