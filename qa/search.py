"""Hybrid retrieval: lexical (FTS5 bm25) and dense (passage and sentence vectors), fused.

Signals are computed for the same candidate passages (the union of each
retriever's top hits, ``gather_signals``): bm25, the passage's cosine, its
best sentence's cosine, the largest weighted share of the question's words
found in one of its sentences (an answer is usually one sentence that repeats
some of the question), and two that speak for the whole document: the cosine
of its first passage (a title or a news lead) and the best bm25 among its
candidates. Each is standardised to z-scores over the candidates and the
z-scores are summed with the weights of ``WEIGHTS``: z-scores put bm25's
unbounded scale and cosine's narrow one on the same footing, and the weights
were chosen by bench/tune.py on every benchmark set at once (SQuAD, SciFact,
NFCorpus, the seeds' paraphrased questions), so that none of them is the one
they fit.

In that share each question word counts by its idf among the candidates,
``ln(1 + (n - df + 0.5) / (df + 0.5))`` with ``df`` the number of the ``n``
candidate passages containing it: a word that most candidates contain (the
article's subject, "Huguenot" in every Huguenot passage) says little about
which of them answers, while a word few of them contain singles the answer
out. Counting over the candidates rather than the whole index needs no corpus
statistics and measures exactly what the ranking has to tell apart.

``hybrid`` adds two more, which compare the question with each candidate
token by token (``qa.late``): over the whole passage and over its best
sentence. ``fused`` is the ranking without them, each signal weighing 1.
Every passage shown gets a calibrated confidence (``qa.confidence``).
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from qa import late as late_interaction
from qa.confidence import FEATURES as CONFIDENCE_FEATURES, confidence as calibrated, threshold
from qa.lexical import STOP_WORDS, fts_query, question_terms
from qa.records import Answer, Hit
from qa.storage import Reader

RETRIEVERS = ("hybrid", "fused", "lexical", "dense")

# How many candidates each retriever contributes before fusion.
CANDIDATES = 100



_WORD = re.compile(r"\w+")


class QueryError(Exception):
    """The question cannot be searched; the message is one line for the user."""


@dataclass(frozen=True)
class _Candidate:
    passage_id: int
    lexical: float
    passage_cosine: float
    sentence_cosine: float
    sentence: tuple[int, int]
    sentences: tuple[tuple[int, int, float], ...] = ()  # (start, end, cosine) of each sentence


def _zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    if std < 1e-9:
        return np.zeros_like(values)
    return (values - values.mean()) / std


def _best(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` ids of highest score, best first, ties by id (as ``ORDER BY bm25 LIMIT`` gives them)."""
    if len(scores) <= k:
        return sorted(scores, key=lambda i: (-scores[i], i))
    ids = np.fromiter(scores, dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th highest score
    chosen = values >= kth
    order = np.lexsort((ids[chosen], -values[chosen]))[:k]
    return ids[chosen][order].tolist()


@dataclass(frozen=True)
class LexicalSide:
    """What a question's search needs of the catalog before its vector: the ids of the
    documents it is restricted to (``Reader.ids_in``, or None) and bm25 of its matches."""

    allowed: tuple[list[int], list[int], list[int]] | None
    lexical: dict[int, float]


# SQLite leaves the GIL while it searches, so the full-text side of a question runs on
# a worker thread while the question is embedded and its vectors searched: on SciFact's
# 15k passages FTS5 takes 7 ms of a 37 ms question, which this took to 30 (bench/path.py).
_LEXICAL_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qa-lexical")
# Its own thread, so that a batch's queued full-text searches never hold it up.
_LATE_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-late")
# False runs that work in turn on the calling thread, as before (bench/path.py measures both).
OVERLAP = True


def _on(threads: ThreadPoolExecutor, work, *args) -> Future:
    if OVERLAP:
        return threads.submit(work, *args)
    done: Future = Future()
    try:
        done.set_result(work(*args))
    except Exception as exc:  # raised where the result is asked for, as from a thread
        done.set_exception(exc)
    return done


def _lexical_side(snapshot: Reader, question: str, docs: Sequence[str] | None) -> LexicalSide:
    allowed = snapshot.ids_in(docs) if docs is not None else None
    match = fts_query(question)
    if not match or (allowed is not None and not allowed[1]):
        return LexicalSide(allowed, {})
    return LexicalSide(allowed, snapshot.lexical(match, doc_ids=allowed[0] if allowed else None))


def start_lexical(snapshot: Reader, question: str, *, docs: Sequence[str] | None = None) -> "Future[LexicalSide]":
    """Start the full-text search of ``question`` (in ``docs`` only, when given) on a worker thread.

    Start it before embedding the question and hand it to ``search`` or
    ``gather_signals`` as ``lexical``: the two then overlap. Its question and
    ``docs`` must be the ones searched.
    """
    return _on(_LEXICAL_THREADS, _lexical_side, snapshot, question, docs)


def _candidates(
    snapshot: Reader, query_vector: np.ndarray, pool: int, side: "Future[LexicalSide]", restricted: bool
) -> list[_Candidate]:
    # The vector searches run while the worker thread asks FTS5 (``start_lexical``); a
    # search restricted to some documents needs their ids from it first.
    allowed = side.result().allowed if restricted else None
    allowed_passages, allowed_sentences = (allowed[1], allowed[2]) if allowed is not None else (None, None)
    if allowed is not None and not allowed_passages:
        return []
    passage_ids, _ = snapshot.passage_vectors.search(query_vector, pool, allowed=allowed_passages)
    sentence_ids, _ = snapshot.sentence_vectors.search(query_vector, pool, allowed=allowed_sentences)
    lexical = side.result().lexical
    ids = dict.fromkeys(_best(lexical, pool))
    ids.update(dict.fromkeys(int(i) for i in passage_ids))
    ids.update(dict.fromkeys(snapshot.passage_of_sentences(int(i) for i in sentence_ids).values()))
    ids = list(ids)
    if not ids:
        return []

    passage_cos = snapshot.passage_vectors.vectors(ids) @ query_vector
    sentences = snapshot.sentences(ids)
    flat = [s for i in ids for s in sentences[i]]
    sentence_cos = snapshot.sentence_vectors.vectors([s[0] for s in flat]) @ query_vector
    out: list[_Candidate] = []
    at = 0
    for position, passage_id in enumerate(ids):
        own = sentences[passage_id]
        if own:
            scores = sentence_cos[at : at + len(own)]
            best = int(np.argmax(scores))
            best_cos, best_span = float(scores[best]), (own[best][1], own[best][2])
        else:  # cannot happen for data written by the indexer; keep the passage usable
            best_cos, best_span = float(passage_cos[position]), (-1, -1)
        own_scored = tuple((s[1], s[2], float(c)) for s, c in zip(own, sentence_cos[at : at + len(own)]))
        at += len(own)
        out.append(
            _Candidate(
                passage_id, lexical.get(passage_id, 0.0), float(passage_cos[position]), best_cos, best_span, own_scored
            )
        )
    return out


# The signals each fused retriever sums, as z-scores over the candidates, and their weights.
WEIGHTS: dict[str, dict[str, float]] = {
    "fused": {"lexical": 1.0, "passage": 1.0, "sentence": 1.0, "coverage": 1.0},
    "hybrid": {
        "lexical": 2.0, "passage": 1.0, "sentence": 3.0, "coverage": 2.0, "lead": 1.0, "doc_lexical": 0.5,
        "late_whole": late_interaction.WEIGHT, "late_sentence": late_interaction.WEIGHT,
    },
}


@dataclass(frozen=True)
class Signals:
    """Everything the ranking knows of each candidate passage of one question, one array a signal."""

    candidates: list[_Candidate]
    passages: dict  # passage id -> Passage
    terms: set[str]  # the question's content words, stemmed
    values: dict[str, np.ndarray]
    late: late_interaction.LateScores | None = None


def gather_signals(
    snapshot: Reader,
    query_vector: np.ndarray,
    question: str,
    *,
    retriever: str = "hybrid",
    pool: int = CANDIDATES,
    docs: Sequence[str] | None = None,
    question_tokens: np.ndarray | None = None,
    lexical: "Future[LexicalSide] | None" = None,
) -> Signals:
    """The candidates of ``question`` and the signals ``retriever`` ranks them by.

    Signals: ``lexical`` (bm25), ``passage`` and ``sentence`` (cosines of the
    passage and of its best sentence), ``coverage`` (idf-weighted share of the
    question's words in one sentence), and with ``hybrid`` ``lead`` and
    ``doc_lexical`` (``_document_signals``) and, given token vectors,
    ``late_whole`` and ``late_sentence`` (``qa.late``). ``lexical`` is the
    question's full-text search already started (``start_lexical``, same
    question and ``docs``); without it one is started here.
    """
    if lexical is None:
        lexical = start_lexical(snapshot, question, docs=docs)
    # Only words that carry content count for coverage: "a AND" covers everything.
    terms = _stems(t for t in question_terms(question) if t not in STOP_WORDS)
    query_vector = np.asarray(query_vector, dtype=np.float32)
    candidates = _candidates(snapshot, query_vector, pool, lexical, docs is not None)
    if retriever == "lexical":
        candidates = [c for c in candidates if c.lexical > 0]
    if not candidates:
        return Signals([], {}, terms, {})
    passages = snapshot.passages(c.passage_id for c in candidates)
    values = {
        "lexical": np.array([c.lexical for c in candidates]),
        "passage": np.array([c.passage_cosine for c in candidates]),
        "sentence": np.array([c.sentence_cosine for c in candidates]),
    }
    late = late_job = None
    if retriever == "hybrid" and question_tokens is not None:
        # Token by token on a worker thread (SQLite and BLAS leave the GIL) while this one
        # finds the sentences' words: 5 ms of a SciFact question beside 3.
        late_job = _on(_LATE_THREAD, _late_scores, snapshot, question_tokens, [c.passage_id for c in candidates])
    # Every retriever: the fused ones rank by it, and the confidence reads it (``qa.confidence``).
    words = [_sentence_words(c, passages[c.passage_id]) for c in candidates]
    weights = _term_weights(terms, [set().union(*w) for w in words])
    values["coverage"] = np.array([_weighted_coverage(weights, w) for w in words])
    if retriever == "hybrid":  # the document-level signals only hybrid weighs
        _document_signals(snapshot, query_vector, candidates, values)
    if late_job is not None:
        late = late_job.result()
        if late is not None:
            values["late_whole"], values["late_sentence"] = late.whole, late.best_sentence
    return Signals(candidates, passages, terms, values, late)


def _late_scores(snapshot: Reader, question_tokens: np.ndarray, passage_ids: list[int]):
    stored = snapshot.passage_tokens(passage_ids)
    return late_interaction.late_scores(question_tokens, [stored.get(i) for i in passage_ids], snapshot.model.dimension)


def _document_signals(snapshot: Reader, query_vector: np.ndarray, candidates, values: dict) -> None:
    """``lead``, the cosine of each candidate's document's first passage (its title or lead),
    and ``doc_lexical``, the best bm25 among the candidates of its document."""
    leads = snapshot.lead_passages(c.passage_id for c in candidates)
    lead_ids = [leads.get(c.passage_id, c.passage_id) for c in candidates]
    unique = list(dict.fromkeys(lead_ids))
    cosines = dict(zip(unique, snapshot.passage_vectors.vectors(unique) @ query_vector))
    values["lead"] = np.array([float(cosines[i]) for i in lead_ids])
    owner = np.unique(np.array(lead_ids), return_inverse=True)[1]  # the first passage names the document
    best = np.full(owner.max() + 1, -np.inf)
    np.maximum.at(best, owner, values["lexical"])
    values["doc_lexical"] = best[owner]


def confidence_features(signals: Signals, i: int) -> tuple[tuple[float, ...], bool]:
    """Candidate ``i``'s values of ``qa.confidence.FEATURES``, and whether the token-by-token ones are known
    (when not, they are 0)."""
    c, values = signals.candidates[i], signals.values
    late, late_sentence = values.get("late_whole"), values.get("late_sentence")
    known = late is not None and late_sentence is not None
    features = {
        "sentence": c.sentence_cosine,
        "passage": c.passage_cosine,
        "late": float(late[i]) if known else 0.0,
        "late_sentence": float(late_sentence[i]) if known else 0.0,
        "coverage": float(values["coverage"][i]),
        "median_sentence": float(np.median(values["sentence"])),
        "median_late": float(np.median(late)) if known else 0.0,
    }
    return tuple(features[name] for name in CONFIDENCE_FEATURES), known


def passage_confidence(signals: Signals, i: int) -> float:
    """The calibrated chance that candidate ``i`` answers (``qa.confidence``)."""
    features, known = confidence_features(signals, i)
    return calibrated(features, late=known)


def fuse(signals: Signals, retriever: str, weights: dict[str, float] | None = None) -> np.ndarray:
    """One score a candidate: bm25 alone, the passage cosine alone, or the weighted sum of
    the signals' z-scores (``WEIGHTS``; a signal the candidates lack counts nothing)."""
    if retriever == "lexical":
        return signals.values["lexical"]
    if retriever == "dense":
        return signals.values["passage"]
    if weights is None:
        # Without token vectors (a model or an index that has none) hybrid ranks as fused:
        # its other weights were chosen beside the token-by-token signals.
        weights = WEIGHTS["fused" if "late_whole" not in signals.values else retriever]
    fused = np.zeros(len(signals.candidates))
    for name, weight in weights.items():
        if weight and name in signals.values:
            fused += weight * _zscore(signals.values[name])
    return fused


# How much the question's words count, beside the sentence's cosine, when
# choosing the sentence to highlight: the answer sentence usually repeats
# some of the question's words ("Salih Hudayar, ETGE Minister for Foreign Affairs ...").
# Measured on the SQuAD dev set (share of top-1 highlights holding the answer):
# 0.81 with cosine alone, 0.85 at 0.2, 0.86-0.87 anywhere from 0.4 to 1.0.
HIGHLIGHT_TERM_WEIGHT = 0.5


def _stems(words) -> set[str]:
    # A crude stem (the first five letters) is enough to match "flooded" with "floods".
    return {w[:5] for w in words}


@lru_cache(maxsize=32768)
def _words(text: str) -> frozenset[str]:
    # Cached: the same sentences come back as candidates question after question,
    # and finding their words is most of a search's own time.
    return frozenset(_stems(w.lower() for w in _WORD.findall(text)))


def _coverage(terms: set[str], text: str) -> float:
    """Share of the question's (stemmed) words that occur in ``text``."""
    if not terms:
        return 0.0
    return len(terms & _words(text)) / len(terms)


def _sentence_words(candidate: _Candidate, passage) -> list[set[str]]:
    """The (stemmed) words of each sentence of the passage."""
    return [_words(passage.text[start - passage.start : end - passage.start]) for start, end, _ in candidate.sentences]


def _term_weights(terms: set[str], passages_words: Sequence[set[str]]) -> dict[str, float]:
    """Each question word's idf among the candidate passages (given by their words), as bm25 computes it."""
    n = len(passages_words)
    df = dict.fromkeys(terms, 0)
    for words in passages_words:
        for term in terms & words:
            df[term] += 1
    return {term: float(np.log1p((n - d + 0.5) / (d + 0.5))) for term, d in df.items()}


def _weighted_coverage(weights: dict[str, float], sentences_words: Sequence[set[str]]) -> float:
    """The largest idf-weighted share of the question's words found in one of the sentences."""
    total = sum(weights.values())
    if not total:
        return 0.0
    return max((sum(weights[t] for t in weights.keys() & words) / total for words in sentences_words), default=0.0)


# With ``hybrid``, each sentence's token-by-token score (``qa.late``) counts too,
# with this weight. Share of top-1 highlights holding the answer: 0.884 -> 0.900
# on the odd-numbered SQuAD dev questions, where it was chosen (0.5: 0.893,
# 2: 0.898, 4: 0.894), and 0.880 -> 0.884 on the even-numbered ones.
HIGHLIGHT_LATE_WEIGHT = 1.0


def _highlight(candidate: _Candidate, passage, terms: set[str], late: dict[int, float] | None = None) -> tuple[int, int]:
    """The sentence of the passage that best answers: cosine plus share of question words,
    plus its token-by-token score (``late``: sentence number -> score) when given."""
    best, best_score = candidate.sentence, -1e9
    for number, (start, end, cosine) in enumerate(candidate.sentences):
        sentence = passage.text[start - passage.start : end - passage.start]
        score = cosine + HIGHLIGHT_TERM_WEIGHT * _coverage(terms, sentence)
        if late:
            score += HIGHLIGHT_LATE_WEIGHT * late.get(number, 0.0)
        if score > best_score:
            best, best_score = (start, end), score
    return best


def _one_window_per_paragraph(order, candidates, passages) -> list[int]:
    """Drop lower-ranked windows of a paragraph already shown: they repeat its text."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for i in order:
        passage = passages[candidates[i].passage_id]
        key = (passage.doc, passage.paragraph)
        if key not in seen:
            seen.add(key)
            kept.append(int(i))
    return kept


def search(
    snapshot: Reader,
    query_vector: np.ndarray,
    question: str,
    *,
    k: int = 5,
    retriever: str = "hybrid",
    pool: int = CANDIDATES,
    answer_confidence: float | None = None,
    docs: Sequence[str] | None = None,
    question_tokens: np.ndarray | None = None,
    weights: dict[str, float] | None = None,
    lexical: "Future[LexicalSide] | None" = None,
) -> Answer:
    """The ``k`` best passages for ``question`` (already embedded as ``query_vector``).

    ``docs`` (stored paths) restricts the search to those documents.
    ``question_tokens`` are the question's token vectors to compare with the
    passages' (``qa.late.question_tokens``); without them, or in an index
    without token vectors, ``hybrid`` ranks as ``fused``. ``weights`` replaces
    the retriever's own (``WEIGHTS``), for whoever measures others. ``lexical``:
    see ``gather_signals``.
    """
    if retriever not in RETRIEVERS:
        raise QueryError(f"unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}")
    if k < 1:
        raise QueryError("k must be at least 1")
    signals = gather_signals(
        snapshot, query_vector, question, retriever=retriever, pool=max(pool, k), docs=docs,
        question_tokens=question_tokens, lexical=lexical,
    )
    candidates, passages, terms, late = signals.candidates, signals.passages, signals.terms, signals.late
    if not candidates:
        return Answer(question=question, answered=False, confidence=0.0, hits=())
    fused = fuse(signals, retriever, weights)
    order = np.argsort(-fused, kind="stable")[: 4 * k]
    order = _one_window_per_paragraph(order, candidates, passages)
    hits = []
    for rank, i in enumerate(order[:k], start=1):
        c = candidates[i]
        passage = passages[c.passage_id]
        sentence_late = late.sentences(i) if late is not None else None
        start, end = _highlight(c, passage, terms, sentence_late) if c.sentence[0] >= 0 else (passage.start, passage.end)
        hits.append(
            Hit(
                rank=rank,
                score=float(fused[i]),
                passage=passage,
                highlight=passage.text[start - passage.start : end - passage.start],
                highlight_start=start,
                highlight_end=end,
                similarity=c.sentence_cosine,
                confidence=passage_confidence(signals, i),
            )
        )
    confidence = hits[0].confidence
    if answer_confidence is None:  # the threshold of the confidence model that scored it
        answer_confidence = threshold(late="late_whole" in signals.values)
    return Answer(question=question, answered=confidence >= answer_confidence, confidence=confidence, hits=tuple(hits))
