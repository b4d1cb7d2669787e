"""Late interaction: re-rank the first few passages word by word.

The fused score (``qa.search``) compares the question with whole passages and
sentences, one vector each. For the first ``DEPTH`` passages this stage also
looks word by word: each content word of the question (stop words, punctuation
and word pieces aside) finds its most similar token in the passage's
highlighted sentence, comparing the model's contextual token vectors, and the
mean of those best matches is the late-interaction score (MaxSim, as in
ColBERT, here with the sentence model's own token vectors: no other model). The
sentences' tokens are computed at question time, in one forward pass with the
question's; nothing more is stored in the index.

Measured on ../shared/bench/squad-dev (int8 model): recall@1 0.882 -> 0.898 on
the odd-numbered questions, where the text (highlighted sentence, the sentence
with 200 characters either side, or the whole passage), ``DEPTH`` and
``WEIGHT`` were chosen, and 0.876 -> 0.889 on the even-numbered ones, which
only checked the choice. The sentence with its neighbours did 0.5 points better
on the odd half but cost twice the time; whole passages cost four times more. A
question costs about 12 ms more (bench/speed.py: p50 25.5 ms against 13.0).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from qa.lexical import STOP_WORDS

# Passages re-ranked; each adds its highlighted sentence to the question's forward pass.
DEPTH = 5
# The late-interaction score's weight, in z-scores over those passages, beside the fused score.
WEIGHT = 2.0
# Texts whose token vectors are kept between questions (a sentence: about 30 KB).
CACHE_SIZE = 1024


class LateInteraction:
    """Scores texts for a question by MaxSim over the embedder's token vectors."""

    def __init__(self, embedder) -> None:
        self._embedder = embedder
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def available(embedder) -> bool:
        return callable(getattr(embedder, "token_vectors", None))

    def scores(self, question: str, texts: Sequence[str]) -> np.ndarray:
        """Mean over the question's content tokens of the best cosine with any token of each text."""
        with self._lock:
            found = {text: self._cache[text] for text in texts if text in self._cache}
            for text in found:
                self._cache.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        # The question and the texts not seen before: one forward pass.
        (question_vectors, tokens), *computed = self._embedder.token_vectors([question, *missing])
        if missing:
            fresh = {text: vectors.astype(np.float16) for text, (vectors, _) in zip(missing, computed)}
            found.update(fresh)
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        content = np.array([t.isalnum() and t.lower() not in STOP_WORDS for t in tokens], dtype=bool)
        if content.any():
            question_vectors = question_vectors[content]
        if len(question_vectors) == 0:
            return np.zeros(len(texts), dtype=np.float32)
        return np.array(
            [float((question_vectors @ found[text].astype(np.float32).T).max(axis=1).mean()) if len(found[text]) else 0.0
             for text in texts],
            dtype=np.float32,
        )


def rerank(fused: np.ndarray, late: np.ndarray, weight: float = WEIGHT) -> np.ndarray:
    """New scores for passages already in fused order, the first ``len(late)`` re-ranked.

    Those get ``fused + weight * z(late)``; every later one gets the smallest
    such bonus, so it stays below all of them and the scores still fall with rank.
    """
    fused = np.asarray(fused, dtype=np.float64)
    if len(late) < 2:
        return fused.copy()
    late = np.asarray(late, dtype=np.float64)
    spread = late.std()
    bonus = weight * (late - late.mean()) / spread if spread > 1e-9 else np.zeros_like(late)
    out = fused + bonus.min()
    out[: len(late)] = fused[: len(late)] + bonus
    return out
