"""Late interaction: question and passages compared token by token.

Besides one vector a passage and one a sentence, the index keeps the model's
vector of every content token of every passage (stop words and punctuation
aside), taken from the same forward pass that embeds the passage, so each
carries its passage's context. A question's content tokens come from the
forward pass that embeds the question. Each question token finds its most
similar token of a passage, and the mean of those best matches scores the
passage (MaxSim, as in ColBERT, here with the sentence model's own token
vectors: no second model). Two scores a candidate: over the whole passage, and
over its best sentence alone (the best of the sentences' own MaxSim).

``qa.search`` adds both, as z-scores over the candidates, to the fused score of
``hybrid``, each with weight ``WEIGHT`` (the others' are in ``qa.search.WEIGHTS``).
When it was added, with the other signals at 1: on
../shared/bench/squad-dev (bench/quality.py) this took recall@1 from 0.882 to
0.911 on the odd-numbered questions, where the weight was chosen (sums of 4 to
10 for the two gave 0.910-0.911), and from 0.876 to 0.904 on the even-numbered
ones, which only checked the choice. Scoring whole passages and best sentences
together did better than either alone (odd 0.904, 0.906).

Stored, a token costs ``4 + dimension`` bytes (int8 with a scale,
``embeddings.tokens``) and 2 for its sentence number: about 390 bytes with the
default model, some 35 KB a passage of 150 words.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

from embeddings.tokens import TokenVectors, split
from qa.lexical import STOP_WORDS

# Each late-interaction signal's weight in the fused score, where every other signal weighs 1.
WEIGHT = 3.0
# The sentence number of a token outside every sentence (a section heading given as context).
NO_SENTENCE = np.iinfo(np.uint16).max


_blas: ThreadpoolController | None = None


def _one_blas_thread():
    """A context in which numpy's BLAS runs on the calling thread alone.

    Left to itself it starts threads for the product of a question's tokens with
    the candidates', and they contend with the model's and FAISS's threads: on 2
    cores a question took 35 ms instead of 15 (bench/speed.py's machine). The
    limit is process-wide: two questions at once may leave it at one thread,
    which is what this process wants anyway.
    """
    global _blas
    if _blas is None:  # looks through the loaded libraries once
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


_local = threading.local()
# Rows converted to float32 at a time, in a buffer each thread keeps: a fresh
# buffer for all of them (some 20 MB) cost more in page faults than the product.
_CHUNK = 2048


def _products(question: np.ndarray, blobs: Sequence[bytes], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """``question @ rows.T`` (cosines) of every row of the packed ``blobs`` in turn, and each blob's row count.

    The int8 rows are converted into the buffer straight from the blobs, a chunk
    at a time, and the products scaled by the rows' scales afterwards: stacking
    the blobs first cost another copy of them all (1.8 ms a SciFact question).
    """
    parts = [split(blob, dimension) for blob in blobs]
    counts = np.array([len(scales) for scales, _ in parts], dtype=np.int64)
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.shape != (_CHUNK, dimension):
        buffer = _local.buffer = np.empty((_CHUNK, dimension), dtype=np.float32)
    out = np.empty((len(question), int(counts.sum())), dtype=np.float32)
    done = filled = 0  # columns of ``out`` written; rows waiting in the buffer

    def flush():
        np.matmul(question, buffer[:filled].T, out=out[:, done : done + filled])

    with _one_blas_thread():
        for _, rows in parts:
            at = 0
            while at < len(rows):
                take = min(len(rows) - at, _CHUNK - filled)
                np.copyto(buffer[filled : filled + take], rows[at : at + take], casting="unsafe")
                filled += take
                at += take
                if filled == _CHUNK:
                    flush()
                    done, filled = done + filled, 0
        if filled:
            flush()
    out *= np.concatenate([scales for scales, _ in parts]) if parts else np.zeros(0, dtype=np.float32)
    return out, counts


def _is_content(token: str) -> bool:
    return token.lower() not in STOP_WORDS and any(ch.isalnum() for ch in token)


def passage_tokens(tokens: TokenVectors, sentences: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The rows to store for a passage: its content tokens' sentence numbers and vectors.

    ``sentences`` are ``[start, end)`` ranges in the embedded text, in order; a
    token belongs to the one that holds it whole.
    """
    kept = tokens.select([_is_content(t) for t in tokens.tokens])
    numbers = np.full(len(kept), NO_SENTENCE, dtype=np.uint16)
    if len(kept) and sentences:
        bounds = np.asarray(sentences, dtype=np.int64).reshape(-1, 2)
        at = np.searchsorted(bounds[:, 0], kept.offsets[:, 0], side="right") - 1
        inside = (at >= 0) & (kept.offsets[:, 1] <= bounds[np.maximum(at, 0), 1])
        numbers[inside] = at[inside]
    return numbers, kept.vectors


def question_tokens(tokens: TokenVectors) -> np.ndarray:
    """The question's vectors to match: its whole-word content tokens (all of them if it has none)."""
    keep = np.array([t.isalnum() and t.lower() not in STOP_WORDS for t in tokens.tokens], dtype=bool)
    return tokens.vectors[keep] if keep.any() else tokens.vectors


@dataclass(frozen=True)
class LateScores:
    """Token-by-token scores of candidate passages: whole, best sentence, and each sentence."""

    whole: np.ndarray  # one per candidate
    best_sentence: np.ndarray  # one per candidate
    _runs: tuple[np.ndarray, np.ndarray, np.ndarray]  # candidate, sentence number, score of each run

    def sentences(self, candidate: int) -> dict[int, float]:
        """``sentence number -> score`` for one candidate (empty when it has no tokens)."""
        owner, number, score = self._runs
        mine = owner == candidate
        return {int(n): float(v) for n, v in zip(number[mine], score[mine]) if n != NO_SENTENCE}


def late_scores(question: np.ndarray, stored: Sequence[tuple[bytes, bytes] | None], dimension: int) -> LateScores | None:
    """MaxSim of ``question``'s token vectors with each passage, and with each passage's sentences.

    ``stored`` holds each passage's ``(sentence numbers, packed vectors)`` as the
    index keeps them, or None. A passage without tokens gets the lowest score
    of the others; None when no passage has any.
    """
    present = [i for i, s in enumerate(stored) if s is not None and s[1]]
    if not present or not len(question):
        return None
    similarity, counts = _products(np.asarray(question, dtype=np.float32), [stored[i][1] for i in present], dimension)
    numbers = np.concatenate([np.frombuffer(stored[i][0], dtype=np.uint16) for i in present])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    whole = np.maximum.reduceat(similarity, starts, axis=1).mean(axis=0)
    # Runs of tokens of one sentence of one passage.
    owner = np.repeat(np.arange(len(present)), counts)
    change = np.ones(len(owner), dtype=bool)
    change[1:] = (owner[1:] != owner[:-1]) | (numbers[1:] != numbers[:-1])
    runs = np.flatnonzero(change)
    run_scores = np.maximum.reduceat(similarity, runs, axis=1).mean(axis=0)
    in_sentence = numbers[runs] != NO_SENTENCE
    best = np.full(len(present), -np.inf)
    np.maximum.at(best, owner[runs][in_sentence], run_scores[in_sentence])
    best = np.where(np.isfinite(best), best, whole)

    def spread(values: np.ndarray) -> np.ndarray:
        out = np.full(len(stored), values.min(), dtype=np.float64)
        out[present] = values
        return out

    candidate = np.asarray(present)[owner[runs]]
    return LateScores(spread(whole), spread(best), (candidate, numbers[runs], run_scores))
