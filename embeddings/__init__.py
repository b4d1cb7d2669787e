"""Embedding models and the FAISS vector index.

This package knows nothing of documents or questions: text in, unit vectors out;
vectors in, ids and scores out.
"""

from embeddings.model import (
    DEFAULT_MODEL,
    Embedder,
    ModelError,
    canonical_model_name,
    describe,
    encode_passages,
    load_embedder,
    resolve_model,
)
from embeddings.vectors import VectorIndex

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "ModelError",
    "VectorIndex",
    "canonical_model_name",
    "describe",
    "encode_passages",
    "load_embedder",
    "resolve_model",
]
