"""A tantivy full-text index of passages: the lexical side the catalog's FTS5 table has today.

Not used by the index yet (issue 15 measures whether it should be: see
``bench/lexical_quality.py`` and ``bench/lexical.py``); ``tantivy`` is in the
``bench`` extra, so this module imports it only when a :class:`FullText` is made.

The analysis follows the FTS5 table (``porter unicode61 remove_diacritics 2``,
``qa/storage/writer.py``) as far as tantivy allows: words split on anything
not a letter or digit, lower case, diacritics folded to ASCII, then stemmed.
One difference remains: tantivy's English stemmer is Snowball's (Porter's
second algorithm), which stems a few words otherwise ("used" is "use", where
FTS5's Porter makes it "us" and matches "US"; "generously" is "generous", not
"gener"). On the seeds' questions 46 of 47 match the same passages.

Scores are bm25 as tantivy computes it (Lucene's: idf ``ln(1 + (N - n + 0.5) /
(n + 0.5))``, k1 1.2, b 0.75), a passage's section and text each scored over its
own length and summed, the section weighted 0.5 as ``Snapshot.lexical`` weights
it (``bm25(passages_fts, 0.5, 1.0)``). FTS5 instead adds the weighted term
counts of both columns into one bm25 over the passage's whole length, and its
idf ``log((N - n + 0.5) / (n + 0.5))`` is nought for a word in half the
passages or more, so the two rank alike but not identically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence


ANALYZER = "qa_stem"
# The weights of ``Snapshot.lexical``'s bm25: a heading is shared by every
# passage under it, so its words say less about which one answers.
FIELD_WEIGHTS = {"section": 0.5, "text": 1.0}
# The writer's memory for documents not yet written as a segment; tantivy's
# own floor is 15 MB a thread.
_HEAP_BYTES = 128_000_000


def catalog_passages(snapshot) -> Iterable[tuple[int, int, str | None, str]]:
    """``(passage id, document id, section, text)`` of every live passage of a committed index
    (a :class:`qa.storage.Snapshot`, over all its segments): what :meth:`FullText.add` takes."""
    yield from snapshot._query(
        "SELECT id, doc_id, section, text FROM passages WHERE doc_id IN (SELECT doc_id FROM paths) ORDER BY id"
    )


def _analyzer(tantivy):
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema(tantivy):
    builder = tantivy.SchemaBuilder()
    # ``fast`` gives a hit's passage id without reading a stored document.
    builder.add_integer_field("passage", indexed=True, fast=True)
    builder.add_integer_field("doc", indexed=True, fast=True)
    for field in FIELD_WEIGHTS:
        # Positions, not only counts: a question word the analyzer splits in two
        # ("covid_19") is a phrase, as FTS5 reads it.
        builder.add_text_field(field, tokenizer_name=ANALYZER, index_option="position")
    return builder.build()


class FullText:
    """Passages' section and text, searchable by bm25. ``folder`` None keeps it in memory.

    Writes go through :meth:`add` and :meth:`delete` and are seen by
    :meth:`lexical` after :meth:`commit`, as one whole generation (tantivy's
    commit point, written last like ``manifest.json``).
    """

    def __init__(
        self, folder: str | os.PathLike | None = None, *, threads: int = 0, weights: Mapping[str, float] = FIELD_WEIGHTS
    ) -> None:
        """``weights`` scale each field's bm25 at query time (0 leaves a field out); the
        benchmark tries others than ``Snapshot.lexical``'s."""
        import tantivy

        if set(weights) - set(FIELD_WEIGHTS) or any(w < 0 for w in weights.values()):
            raise ValueError(f"weights are for the fields {sorted(FIELD_WEIGHTS)}, none negative: {dict(weights)}")
        self.weights = {field: float(w) for field, w in weights.items() if w > 0}

        self._t = tantivy
        self.folder = Path(folder) if folder is not None else None
        schema = _schema(tantivy)
        if self.folder is None:
            self._index = tantivy.Index(schema)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(schema, path=str(self.folder), reuse=True)
        self._schema = self._index.schema
        self._analyzer = _analyzer(tantivy)
        # Tokenizers are not stored with an index: registered at every open.
        self._index.register_tokenizer(ANALYZER, self._analyzer)
        self._threads = threads  # 0: tantivy picks from the machine's cores
        self._writer = None
        self._searcher = self._index.searcher()

    def _writing(self):
        if self._writer is None:
            self._writer = self._index.writer(heap_size=_HEAP_BYTES, num_threads=self._threads)
        return self._writer

    def add(self, passages: Iterable[tuple[int, int, str | None, str]]) -> int:
        """Queue ``(passage id, document id, section, text)`` rows; returns how many."""
        writer = self._writing()
        n = 0
        for passage_id, doc_id, section, text in passages:
            doc = self._t.Document(passage=int(passage_id), doc=int(doc_id), text=text)
            if section:
                doc.add_text("section", section)
            writer.add_document(doc)
            n += 1
        return n

    def delete(self, passage_ids: Iterable[int]) -> None:
        """Queue the removal of these passages (of rows added before; not of rows added after)."""
        ids = [int(i) for i in passage_ids]
        if ids:
            self._writing().delete_documents_by_query(self._t.Query.term_set_query(self._schema, "passage", ids))

    def commit(self) -> None:
        """Make every queued add and delete visible at once; until then readers see the last commit."""
        if self._writer is None:
            return
        self._writer.commit()
        self._index.reload()
        self._searcher = self._index.searcher()

    def close(self) -> None:
        """Drop uncommitted changes and wait for segment merges to finish."""
        if self._writer is not None:
            self._writer.rollback()
            self._writer.wait_merging_threads()
            self._writer = None

    def __len__(self) -> int:
        return self._searcher.num_docs

    def _term_query(self, term: str):
        """Every field's clause for one question word, or None when it has no token.

        A word the analyzer splits (``foo_bar``) is a phrase, as FTS5 reads a
        quoted string of several tokens."""
        tokens = self._analyzer.analyze(term)
        if not tokens:
            return []
        t = self._t
        clauses = []
        for field, weight in self.weights.items():
            if len(tokens) == 1:
                query = t.Query.term_query(self._schema, field, tokens[0], index_option="freq")
            else:
                query = t.Query.phrase_query(self._schema, field, tokens)
            clauses.append(query if weight == 1.0 else t.Query.boost_query(query, weight))
        return clauses

    def query(self, match_terms: Sequence[str], doc_ids: Sequence[int] | None = None):
        """The OR of ``match_terms`` (``qa.lexical.question_terms``), or None when none has a token."""
        t = self._t
        clauses = [(t.Occur.Should, q) for term in dict.fromkeys(match_terms) for q in self._term_query(term)]
        if not clauses:
            return None
        query = t.Query.boolean_query(clauses)
        if doc_ids is not None:
            # Filtering adds nothing to a score: the filter is a constant 0.
            only = t.Query.const_score_query(t.Query.term_set_query(self._schema, "doc", [int(i) for i in doc_ids]), 0.0)
            query = t.Query.boolean_query([(t.Occur.Must, query), (t.Occur.Must, only)])
        return query

    def lexical(
        self, match_terms: Sequence[str], doc_ids: Sequence[int] | None = None, *, limit: int | None = None
    ) -> dict[int, float]:
        """``passage id -> bm25`` of every passage matching any of ``match_terms``; larger is better.

        The contract of ``Snapshot.lexical``, given words instead of an FTS5
        expression. ``limit`` keeps only the ``limit`` best (ties by tantivy's
        order), which lets tantivy skip blocks of postings that cannot enter
        them (block-max WAND); without it every match is scored and returned.
        """
        if doc_ids is not None and not doc_ids:
            return {}
        query = self.query(match_terms, doc_ids)
        searcher = self._searcher
        if query is None or searcher.num_docs == 0:
            return {}
        if limit is not None and limit <= 0:
            return {}
        wanted = searcher.num_docs if limit is None else min(limit, searcher.num_docs)
        return self._ids(searcher.search(query, wanted, count=False).hits)

    def scores(self, match_terms: Sequence[str], passage_ids: Sequence[int]) -> dict[int, float]:
        """``passage id -> bm25`` of those of ``passage_ids`` that match: the same scores
        :meth:`lexical` gives them. With ``lexical(..., limit=N)`` this gives what the search
        needs of every match (the best N, then the bm25 of the dense candidates outside them)
        while tantivy still skips postings."""
        ids = [int(i) for i in dict.fromkeys(passage_ids)]
        query = self.query(match_terms)
        if not ids or query is None:
            return {}
        t = self._t
        only = t.Query.const_score_query(t.Query.term_set_query(self._schema, "passage", ids), 0.0)
        query = t.Query.boolean_query([(t.Occur.Must, query), (t.Occur.Must, only)])
        return self._ids(self._searcher.search(query, len(ids), count=False).hits)

    def _ids(self, hits) -> dict[int, float]:
        if not hits:
            return {}
        ids = self._searcher.fast_field_values("passage", [address for _, address in hits])
        return {int(i): float(score) for i, (score, _) in zip(ids, hits)}
