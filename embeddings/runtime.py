"""Run an exported sentence-transformers model with OpenVINO, without PyTorch.

The model was exported once by ``embeddings.export`` into an OpenVINO IR folder
(``model.xml`` + ``model.bin``, the ``tokenizer.json`` and a ``pooling.json``).
This module loads that folder with the ``openvino`` and ``tokenizers`` packages
only, so a question is embedded in a process that never imports torch: ``qa
ask`` starts in about a second instead of ten.

On this project's 2-core CPU the OpenVINO CPU plugin, on two streams, runs
all-MiniLM-L6-v2 about 1.3 times faster than PyTorch at fp32 (6.7 s against 8.9 s
for 331 SQuAD paragraphs, quiet machine), with the same vectors (cosine >= 0.9999).
It runs the int8 copy made at export (``embeddings.quantize``) or the fp32 model,
whichever ``embeddings.precision`` measured to be better on this CPU: int8 is
about twice as fast where the CPU has int8 dot-product instructions (VNNI), and
slower than fp32 where it has not.

``encode_passages`` embeds a passage and, in the same forward pass, each of its
sentences: a sentence's vector is the mean of the passage's token embeddings
that fall inside the sentence. Sentences thus cost no extra model work, and
their vectors carry the passage's context. With ``tokens=True`` it also gives
each text's token vectors from that pass (``embeddings.tokens``).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from embeddings.tokens import TokenVectors

logger = logging.getLogger(__name__)

IR_FILE = "model.xml"
INT8_IR_FILE = "model-int8.xml"
PRECISIONS = ("int8", "fp32")
TOKENIZER_FILE = "tokenizer.json"
POOLING_FILE = "pooling.json"
# Texts of similar length share a batch, so little of it is padding.
BATCH_SIZE = 32


class RuntimeEmbedder:
    """A sentence-transformers model (Transformer + mean or CLS pooling) on OpenVINO."""

    backend = "openvino"

    def __init__(self, folder: str | Path, *, name: str, precision: str = "int8") -> None:
        import openvino as ov
        from tokenizers import Tokenizer

        folder = Path(folder)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        # An export without the int8 copy (quantizing failed there) runs fp32.
        ir = folder / INT8_IR_FILE if precision == "int8" and (folder / INT8_IR_FILE).is_file() else folder / IR_FILE
        self.precision = "int8" if ir.name == INT8_IR_FILE else "fp32"
        self.folder = folder
        settings = json.loads((folder / POOLING_FILE).read_text(encoding="utf-8"))
        self.name = name
        self.dimension = int(settings["dimension"])
        self.pooling = settings["pooling"]  # "mean" or "cls"
        max_seq_length = int(settings["max_seq_length"])
        self.max_tokens = max_seq_length - 2  # [CLS] and [SEP]

        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tokenizer.no_padding()  # we pad each batch to its own longest text
        self._tokenizer.enable_truncation(max_seq_length)
        self._plain = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._plain.no_padding()
        self._plain.no_truncation()

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        # OpenVINO keeps the compiled blob next to the IR: later starts skip compiling.
        try:
            core.set_property({"CACHE_DIR": str(folder / "compiled")})
        except Exception:  # a read-only folder only costs compile time
            logger.debug("no OpenVINO compile cache in %s", folder)
        try:
            self._model = core.compile_model(str(ir), "CPU", config)
        except Exception as exc:
            if self.precision == "fp32":
                raise
            # A damaged int8 copy: the fp32 model of the same export still gives the vectors.
            logger.warning("cannot load %s, running fp32: %s", ir, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            ir, self.precision = folder / IR_FILE, "fp32"
            self._model = core.compile_model(str(ir), "CPU", config)
        self._core, self._ir, self._config = core, str(ir), config
        self._throughput = None  # compiled on the first large job
        self._compile_lock = threading.Lock()
        self._inputs = {port.get_any_name() for port in self._model.inputs}
        self._local = threading.local()
        # Tokens through the model, without and with padding: what benchmarks divide by.
        self.tokens_embedded = self.positions_embedded = 0
        self.decision: dict | None = None  # this CPU's precision decision (embeddings.precision), if made

    # -- the Embedder protocol ---------------------------------------------------------

    def encode(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
        vectors, _, _ = self.encode_passages(texts, (), batch_size=batch_size)
        return vectors

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._plain.encode(text, add_special_tokens=False)
        return [(int(s), int(e)) for s, e in encoding.offsets]

    def encode_passages(
        self,
        texts: Sequence[str],
        spans: Sequence[tuple[int, int, int]],
        *,
        batch_size: int = BATCH_SIZE,
        tokens: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, list[TokenVectors] | None]:
        """Unit vectors for ``texts`` and for each ``(text index, start, end)`` character span,
        and with ``tokens`` each text's token vectors, all from one forward pass.

        A span's vector pools the tokens of its text that lie inside it; a span
        with no token of its own (blank, or cut off by truncation) gets its
        text's vector.
        """
        texts = list(texts)
        text_vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        span_vectors = np.zeros((len(spans), self.dimension), dtype=np.float32)
        token_vectors: list[TokenVectors] | None = [None] * len(texts) if tokens else None  # type: ignore[list-item]
        if not texts:
            return text_vectors, span_vectors, token_vectors
        by_text: dict[int, list[int]] = {}
        for row, (text_index, _, _) in enumerate(spans):
            by_text.setdefault(text_index, []).append(row)

        encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
        batches = [order[at : at + batch_size] for at in range(0, len(order), batch_size)]
        self.tokens_embedded += sum(len(e.ids) for e in encodings)
        self.positions_embedded += sum(len(b) * len(encodings[b[0]].ids) for b in batches)  # longest first

        def pool(batch: list[int], hidden: np.ndarray, mask: np.ndarray) -> None:
            for row, i in enumerate(batch):
                tokens = hidden[row, : int(mask[row].sum())]
                text_vectors[i] = tokens[0] if self.pooling == "cls" else tokens.mean(axis=0)
                if i in by_text:
                    self._pool_spans(encodings[i], tokens, text_vectors[i], spans, by_text[i], span_vectors)
                if token_vectors is not None:
                    token_vectors[i] = _token_vectors(encodings[i], tokens)

        if len(batches) < 3:
            for batch in batches:
                feed = self._feed([encodings[i] for i in batch])
                pool(batch, self._infer(feed), feed["attention_mask"])
        else:
            self._stream(batches, encodings, pool)
        return unit_rows(text_vectors), unit_rows(span_vectors), token_vectors

    def token_vectors(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE) -> list[TokenVectors]:
        """For each text, its tokens' contextual vectors (unit rows; no special tokens) and spans."""
        _, _, token_vectors = self.encode_passages(texts, (), batch_size=batch_size, tokens=True)
        return token_vectors or []

    # -- internals -----------------------------------------------------------------------

    def _stream(self, batches, encodings, pool) -> None:
        """Many batches: one single-threaded stream per core, each on its own batch.

        Two streams keep both cores busy through the parts of a forward pass that
        one stream cannot split, so large jobs (indexing) run faster than with
        one latency-tuned stream; questions keep the latency-tuned model.
        """
        with self._compile_lock:
            if self._throughput is None:
                self._throughput = self._core.compile_model(self._ir, "CPU", {**self._config, "PERFORMANCE_HINT": "THROUGHPUT"})
            streams = max(1, int(self._throughput.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # Requests taken in turn, each result pooled in this thread while the other
        # streams compute. No Python callback runs on OpenVINO's threads: a garbage
        # collection there could free a compiled model on its own worker thread,
        # which then joins itself and aborts the process.
        requests = [self._throughput.create_infer_request() for _ in range(streams)]
        pending: list[tuple | None] = [None] * streams

        def collect(slot: int) -> None:
            if pending[slot] is not None:
                batch, mask = pending[slot]
                requests[slot].wait()
                pool(batch, np.array(requests[slot].get_output_tensor(0).data, dtype=np.float32, copy=True), mask)
                pending[slot] = None

        try:
            for number, batch in enumerate(batches):
                slot = number % streams
                collect(slot)
                feed = self._feed([encodings[i] for i in batch])
                requests[slot].start_async(feed)
                pending[slot] = (batch, feed["attention_mask"])
            for slot in range(streams):
                collect(slot)
        finally:
            for slot, request in enumerate(requests):
                if pending[slot] is not None:
                    request.wait()  # never leave a request running on buffers about to be freed

    def _feed(self, encodings) -> dict[str, np.ndarray]:
        """Token ids and mask, padded to the longest text."""
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        return feed

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # one infer request per thread: a request is not shareable
            request = self._local.request = self._model.create_infer_request()
        request.infer(feed)
        # The output tensor is the request's own buffer, overwritten by its next call.
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    @staticmethod
    def _pool_spans(encoding, tokens, fallback, spans, rows, out) -> None:
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        real = (np.asarray(encoding.special_tokens_mask) == 0) & (offsets[:, 1] > offsets[:, 0])
        starts, ends = offsets[:, 0], offsets[:, 1]
        for row in rows:
            _, start, end = spans[row]
            inside = real & (starts >= start) & (ends <= end)
            out[row] = tokens[inside].mean(axis=0) if inside.any() else fallback


def _token_vectors(encoding, hidden: np.ndarray) -> TokenVectors:
    """The text's own tokens (special tokens aside) from its rows of the forward pass."""
    keep = np.asarray(encoding.special_tokens_mask[: len(hidden)]) == 0
    offsets = np.asarray(encoding.offsets[: len(hidden)], dtype=np.int64).reshape(-1, 2)[keep]
    return TokenVectors(unit_rows(hidden[keep]), offsets, tuple(t for t, k in zip(encoding.tokens, keep) if k))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero), contiguous float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)
