"""Reading one committed generation of an index: catalog queries, lexical search, vectors."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from embeddings import VectorIndex
from embeddings.segments import Segment, SegmentedVectors
from qa.storage.manifest import (
    REBUILD,
    IndexCorrupt,
    ModelInfo,
    generation_of,
    check_file,
    file_identity,
    read_manifest,
)
from qa.records import Document, OcrWord, Passage
from qa.storage.segments import attach, connect, global_idf, removed_ids

# A heading's words count, but less than the passage's own: a section title is
# shared by every passage under it, so it says less about which one answers.
_BM25 = "bm25(passages_fts, 0.5, 1.0)"


class Snapshot:
    """One committed generation, opened read-only. Safe to share between threads."""

    def __init__(self, folder: str | os.PathLike, *, verify: bool = True) -> None:
        self.folder = Path(folder)
        # A writer may commit (and delete the files just read about) while this
        # opens; then the manifest has changed and the newer generation is opened.
        for attempt in range(5):
            manifest = read_manifest(self.folder)
            try:
                self._open(manifest, verify)
                return
            except (IndexCorrupt, OSError, sqlite3.Error):
                if attempt < 4 and generation_of(self.folder) != manifest["generation"]:
                    continue
                raise

    def _open(self, manifest: dict, verify: bool) -> None:
        self.manifest = manifest
        live = self.folder / manifest["files"]["live"]
        checked = [(live, manifest["checksums"]["live"])]
        for segment in manifest["segments"]:
            checked += [(self.folder / segment["files"][key], segment["checksums"][key]) for key in segment["files"]]
        for path, expected in checked:
            check_file(path, expected, verify=verify)
        info = self.manifest["model"]
        self.model = ModelInfo(info["name"], info["dimension"], info["max_tokens"])
        self._db = connect(live, read_only=True)
        self._lock = threading.Lock()
        try:
            self._schemas = attach(self._db, self.folder, [s["files"]["catalog"] for s in manifest["segments"]])
            removed_passages, removed_sentences = removed_ids(self._db)
            self._removed = frozenset(removed_passages)
            self.passage_vectors, self.sentence_vectors = (
                SegmentedVectors(self.model.dimension, [
                    Segment(_load_vectors(self.folder / s["files"][kind], self.model.dimension), *s["ids"][kind])
                    for s in manifest["segments"]
                ], excluded)
                for kind, excluded in (("passages", removed_passages), ("sentences", removed_sentences))
            )
            counts = self.manifest["counts"]
            if len(self.passage_vectors) != counts["passages"] or len(self.sentence_vectors) != counts["sentences"]:
                raise IndexCorrupt(f"index {self.folder}: vector counts do not match the catalog; {REBUILD}")
        except (RuntimeError, ValueError) as exc:
            self._db.close()
            raise IndexCorrupt(f"cannot read vectors in {self.folder} ({str(exc).splitlines()[0]}); {REBUILD}") from exc
        except (IndexCorrupt, sqlite3.Error):
            self._db.close()
            raise
        self._rows: list[int] | None = None  # passages in each segment's full-text index, read when first needed
        self._vocab: set[str] = set()  # segments whose term dictionary is open (``_rows_with``)

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- documents ---------------------------------------------------------------

    def documents(self) -> list[Document]:
        """Every stored path; paths with the same content name each other in ``same_as``."""
        rows = self._query(
            "SELECT pa.path, d.id, d.sha256, d.format, "
            "(SELECT COUNT(*) FROM passages p WHERE p.doc_id = d.id) "
            "FROM paths pa JOIN documents d ON d.id = pa.doc_id ORDER BY pa.path"
        )
        by_doc: dict[int, list[str]] = {}
        for path, doc_id, *_ in rows:
            by_doc.setdefault(doc_id, []).append(path)
        return [
            Document(
                id=doc_id, path=path, sha256=sha, passages=count, format=fmt,
                same_as=tuple(p for p in by_doc[doc_id] if p != path),
            )
            for path, doc_id, sha, fmt, count in rows
        ]

    def _doc_id(self, path: str) -> int | None:
        rows = self._query("SELECT doc_id FROM paths WHERE path = ?", (path,))
        return rows[0][0] if rows else None

    def document_text(self, path: str) -> str | None:
        rows = self._query(
            "SELECT d.text FROM documents d JOIN paths pa ON pa.doc_id = d.id WHERE pa.path = ?", (path,)
        )
        return rows[0][0] if rows else None

    def source_of(self, path: str) -> tuple[str | None, str] | None:
        """``(file the document was read from, its SHA-256 then)`` for the stored ``path``."""
        rows = self._query(
            "SELECT pa.source, d.sha256 FROM paths pa JOIN documents d ON d.id = pa.doc_id WHERE pa.path = ?", (path,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def ocr_words(self, path: str, page: int | None = None) -> list[OcrWord]:
        """The words of the document at ``path`` that OCR read (on ``page``), in text order, with their boxes."""
        doc_id = self._doc_id(path)
        if doc_id is None:
            return []
        sql = "SELECT page, line, start, end, confidence, x0, y0, x1, y1 FROM ocr_words WHERE doc_id = ?"
        params: list = [doc_id]
        if page is not None:
            sql += " AND page = ?"
            params.append(page)
        return [OcrWord(*row) for row in self._query(sql + " ORDER BY start", params)]

    # -- passages ----------------------------------------------------------------

    # A document stored under several paths is named by the first; ``also`` lists the rest.
    _PASSAGE_SQL = (
        "SELECT p.id, (SELECT group_concat(path, char(31)) FROM "
        "(SELECT path FROM paths WHERE doc_id = p.doc_id ORDER BY path)), "
        "p.seq, p.paragraph, p.window, p.windows, p.start, p.end, p.text, p.page, p.section, p.ocr_confidence "
        "FROM passages p "
    )

    @staticmethod
    def _passage(row: tuple, doc: str | None = None) -> Passage:
        pid, paths, seq, paragraph, window, windows, start, end, text, page, section, ocr = row
        names = (paths or "").split("\x1f")
        if doc is not None and doc in names:
            names.remove(doc)
            names.insert(0, doc)
        return Passage(
            id=pid, doc=names[0], paragraph=paragraph, window=window, windows=windows, start=start, end=end,
            text=text, page=page, section=section, seq=seq, also=tuple(names[1:]), ocr_confidence=ocr,
        )

    def _query_in(self, sql: str, values: Iterable, cast=int) -> Iterator[tuple]:
        """Rows of ``sql`` whose ``{ids}`` placeholder is filled in chunks (SQLite caps parameters).

        ``cast`` turns each value into what SQLite binds (numpy integers it does not).
        """
        values = [cast(v) for v in values]
        for chunk in range(0, len(values), 500):
            part = values[chunk : chunk + 500]
            yield from self._query(sql.format(ids=",".join("?" * len(part))), part)

    def passages(self, ids: Iterable[int]) -> dict[int, Passage]:
        rows = self._query_in(self._PASSAGE_SQL + "WHERE p.id IN ({ids})", ids)
        return {row[0]: self._passage(row) for row in rows}

    def passages_of(
        self, doc: str, paragraph: int | None = None, *, seq: int | None = None, page: int | None = None
    ) -> list[Passage]:
        """Passages of the document at path ``doc`` in text order, optionally narrowed."""
        doc_id = self._doc_id(doc)
        if doc_id is None:
            return []
        sql = self._PASSAGE_SQL + "WHERE p.doc_id = ?"
        params: list = [doc_id]
        for column, value in (("seq", seq), ("paragraph", paragraph), ("page", page)):
            if value is not None:
                sql += f" AND p.{column} = ?"
                params.append(value)
        rows = self._query(sql + " ORDER BY p.seq, p.window", params)
        return [self._passage(row, doc) for row in rows]

    def sentences(self, passage_ids: Iterable[int]) -> dict[int, list[tuple[int, int, int]]]:
        """``passage id -> [(sentence id, start, end), ...]`` in text order."""
        ids = list(passage_ids)
        out: dict[int, list[tuple[int, int, int]]] = {int(i): [] for i in ids}
        sql = "SELECT passage_id, id, start, end FROM sentences WHERE passage_id IN ({ids}) ORDER BY id"
        for passage_id, sentence_id, start, end in self._query_in(sql, ids):
            out[passage_id].append((sentence_id, start, end))
        return out

    def passage_tokens(self, passage_ids: Iterable[int]) -> dict[int, tuple[bytes, bytes]]:
        """``passage id -> (sentence numbers, packed token vectors)`` for late interaction (``qa.late``)."""
        sql = "SELECT passage_id, sentences, vectors FROM passage_tokens WHERE passage_id IN ({ids})"
        return {row[0]: (row[1], row[2]) for row in self._query_in(sql, passage_ids)}

    def lead_passages(self, passage_ids: Iterable[int]) -> dict[int, int]:
        """``passage id -> id of the first passage of its document`` (its title or opening)."""
        # A document's passages are stored in text order, so its first has the smallest id;
        # grouped rather than a correlated subquery, which over several segments' view
        # read every segment's passages once per candidate (100 ms a question at 100k).
        doc_of = dict(self._query_in("SELECT id, doc_id FROM passages WHERE id IN ({ids})", passage_ids))
        first = dict(self._query_in(
            "SELECT doc_id, MIN(id) FROM passages WHERE doc_id IN ({ids}) GROUP BY doc_id", set(doc_of.values())
        ))
        return {pid: first[doc] for pid, doc in doc_of.items()}

    def passage_of_sentences(self, sentence_ids: Iterable[int]) -> dict[int, int]:
        return dict(self._query_in("SELECT id, passage_id FROM sentences WHERE id IN ({ids})", sentence_ids))

    # -- lexical -----------------------------------------------------------------

    def ids_in(self, docs: Iterable[str]) -> tuple[list[int], list[int], list[int]]:
        """Document, passage and sentence ids of the documents at paths ``docs``."""
        doc_ids = sorted({row[0] for row in self._query_in("SELECT doc_id FROM paths WHERE path IN ({ids})", docs, str)})
        passage_ids = [r[0] for r in self._query_in("SELECT id FROM passages WHERE doc_id IN ({ids})", doc_ids)]
        sentence_ids = [
            r[0]
            for r in self._query_in(
                "SELECT s.id FROM sentences s JOIN passages p ON p.id = s.passage_id WHERE p.doc_id IN ({ids})", doc_ids
            )
        ]
        return doc_ids, passage_ids, sentence_ids

    def lexical(self, match: str, doc_ids: Sequence[int] | None = None) -> dict[int, float]:
        """``passage id -> bm25`` of every live passage matching an FTS5 MATCH expression; larger is better.

        ``doc_ids`` restricts to those documents. One segment: all matches in one
        query, because FTS5 scores every match to order them anyway, and because
        scoring chosen passages with ``rowid IN (...)`` starts the query again for
        each of them (20 ms a question on SciFact's 15k passages, against 7 for
        every match). Several segments: see ``_lexical_segments``.
        """
        if not self._schemas:
            return {}
        if len(self._schemas) == 1:
            sql = f"SELECT rowid, -{_BM25} FROM {self._schemas[0]}.passages_fts WHERE passages_fts MATCH ?"
            params: list = [match]
            if doc_ids is not None:
                sql += f" AND rowid IN (SELECT id FROM passages WHERE doc_id IN ({','.join('?' * len(doc_ids))}))"
                params.extend(int(i) for i in doc_ids)
            found = dict(self._query(sql, params))
        else:
            found = self._lexical_segments(match)
            if doc_ids is not None:
                allowed = {r[0] for r in self._query_in("SELECT id FROM passages WHERE doc_id IN ({ids})", doc_ids)}
                found = {pid: score for pid, score in found.items() if pid in allowed}
        if self._removed:
            found = {pid: score for pid, score in found.items() if pid not in self._removed}
        return found

    def _lexical_segments(self, match: str) -> dict[int, float]:
        """bm25 over several segments, with the index-wide idf of each term.

        Each segment's FTS5 table knows only its own rows, and a term's idf from
        a small segment says little (in a segment of three passages a word in
        two of them has none at all), so a document just added would rank by
        its commit's luck. FTS5's bm25 is a sum over the query's terms of the
        term's idf times a factor of its frequency in the passage, so in each
        small segment every term is queried alone and its scores rescaled by its
        idf over all segments (rows and matches summed, removed documents
        counted until merged, as Lucene counts them). A segment holding most of
        the index (``DOMINANT``) is asked the whole query at once, as with one
        segment, and only counts each term's matches: its own idf is within a
        little of the index's, and asking it term by term cost twice the whole
        question path at 100,000 passages. Only the length normalisation stays
        per segment.
        """
        if self._rows is None:
            self._rows = [self._query(f"SELECT COUNT(*) FROM {s}.passages")[0][0] for s in self._schemas]
        total_rows = sum(self._rows)
        terms = match.split(" OR ")
        scores: dict[int, float] = {}
        hits = dict.fromkeys(terms, 0)
        small: list[tuple[int, dict[str, list]]] = []  # each small segment's rows, and its matches by term
        for schema, rows in zip(self._schemas, self._rows):
            if rows >= DOMINANT * total_rows:
                for pid, score in self._query(
                    f"SELECT rowid, -{_BM25} FROM {schema}.passages_fts WHERE passages_fts MATCH ?", (match,)
                ):
                    scores[pid] = scores.get(pid, 0.0) + score
                for term in terms:
                    hits[term] += self._rows_with(schema, term)
                continue
            found = {
                term: self._query(f"SELECT rowid, -{_BM25} FROM {schema}.passages_fts WHERE passages_fts MATCH ?",
                                  (term,))
                for term in terms
            }
            for term, matched in found.items():
                hits[term] += len(matched)
            small.append((rows, found))
        for rows, found in small:
            for term, matched in found.items():
                if not matched:
                    continue
                scale = global_idf(total_rows, hits[term]) / global_idf(rows, len(matched))
                for pid, score in matched:
                    scores[pid] = scores.get(pid, 0.0) + score * scale
        return scores

    def _rows_with(self, schema: str, term: str) -> int:
        """How many of a segment's rows hold ``term`` (a quoted FTS5 term), as bm25's idf counts them.

        Read from the segment's term dictionary (``fts5vocab``) when the term is
        one token once stemmed, in microseconds; a term the tokenizer cuts in
        two (``x_y``) is a phrase, and its rows are counted by a query.
        """
        with self._lock:
            if not self._vocab:
                self._db.execute("CREATE VIRTUAL TABLE temp.qa_terms USING fts5(t, tokenize="
                                 "'porter unicode61 remove_diacritics 2')")
                self._db.execute("CREATE VIRTUAL TABLE temp.qa_terms_v USING fts5vocab(temp, qa_terms, 'instance')")
            if schema not in self._vocab:
                self._db.execute(f"CREATE VIRTUAL TABLE temp.qa_vocab_{schema} USING fts5vocab({schema}, passages_fts, 'row')")
                self._vocab.add(schema)
            self._db.execute("INSERT INTO temp.qa_terms(rowid, t) VALUES (1, ?)", (term.strip('"'),))
            tokens = [row[0] for row in self._db.execute("SELECT term FROM temp.qa_terms_v")]
            self._db.execute("DELETE FROM temp.qa_terms")
            if len(tokens) == 1:
                row = self._db.execute(f"SELECT doc FROM temp.qa_vocab_{schema} WHERE term = ?", tokens).fetchone()
                return row[0] if row else 0
        return self._query(f"SELECT COUNT(*) FROM {schema}.passages_fts WHERE passages_fts MATCH ?", (term,))[0][0]


# A segment with at least this share of the index's rows is asked the whole query at once.
DOMINANT = 0.8

_LOADED: "weakref.WeakValueDictionary[tuple, VectorIndex]" = weakref.WeakValueDictionary()
_LOADED_GUARD = threading.Lock()


def _load_vectors(path: Path, dimension: int) -> VectorIndex:
    """A segment's vector file, loaded once per process while some snapshot still holds it.

    Segments are never written again, so the generation a commit makes shares
    the vectors of every segment it kept with the one before: reopening after
    adding one document then reads that document's vectors, not the index's.
    """
    key = (*file_identity(path), dimension)
    with _LOADED_GUARD:
        found = _LOADED.get(key)
    if found is None:
        found = VectorIndex.load(path, dimension)
        with _LOADED_GUARD:
            _LOADED[key] = found
    return found


def open_snapshot(folder: str | os.PathLike, *, verify: bool = True) -> Snapshot:
    return Snapshot(folder, verify=verify)


