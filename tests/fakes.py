"""A deterministic stand-in for the embedding model, for fast unit tests.

It follows the ``embeddings.Embedder`` protocol: a bag of lowercase words hashed
into 64 dimensions, normalised. Texts that share words get similar vectors, so
retrieval behaves plausibly, and nothing is loaded or downloaded.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _bucket(word: str, dimension: int) -> int:
    # hashlib, not hash(): Python's str hash changes from one process to the next.
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % dimension


def fake_token_offsets(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every word or punctuation mark of ``text``."""
    return [match.span() for match in _TOKEN.finditer(text)]


class FakeEmbedder:
    """Hashing bag-of-words vectors; same text, same vector, in any process."""

    def __init__(self, name: str = "fake-hash", dimension: int = 64, max_tokens: int = 32) -> None:
        self.name = name
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.encoded: list[str] = []  # every text ever encoded, for tests that count embedding work

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        self.encoded.extend(texts)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                vectors[row, _bucket(word, self.dimension)] += 1.0
        vectors += 1e-3  # so that a text without words still has a direction
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return fake_token_offsets(text)
