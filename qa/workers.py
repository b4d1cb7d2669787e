"""The worker side of ``qa index --ray``: a Ray Data actor that reads, splits and embeds files.

Each actor loads the model once and runs, on each batch of files, the same
functions a local run calls (``qa.read``, ``qa.ingest.split_document``,
``qa.ingest.embed``). A document travels back to the driver as JSON (text,
pages, headings, passages with their offsets) and its vectors as ``.npz``
bytes (token vectors in the catalog's int8 form): nothing is pickled. Failures a run must stop on (no model, a file the
worker cannot see) come back as rows with status ``fatal``, not as
exceptions, so the driver can say in one line what went wrong and where.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
from dataclasses import dataclass

import numpy as np

from embeddings.tokens import pack, unpack
from qa.ingest import NO_PASSAGES, Pending, Vectors, embed, split_document
from qa.read import ExtractedText, Heading, ReadError, extract_text, read_bytes
from qa.records import OcrWord, PassageSpan, Span
from qa.storage import StoredPassage

# For the fault tests: the first worker to start a batch while this file does not exist creates it and dies.
ENV_CRASH_ONCE = "QA_RAY_CRASH_ONCE"


@dataclass(frozen=True)
class Job:
    """A file sent to the cluster."""

    name: str
    file: str  # as given, for messages
    source: str  # absolute path, read by the worker
    sha256: str
    size: int
    mtime_ns: int


class EmbedFiles:
    """A Ray Data actor: loads the model once, then reads, splits and embeds batches of files."""

    def __init__(self, model: str, dimension: int, max_tokens: int, max_bytes: int, timeout: float) -> None:
        self.max_bytes, self.timeout = max_bytes, timeout
        self.error = None
        node = socket.gethostname()
        try:
            self.embedder = _load_model(model)
        except Exception as exc:  # ModelError, or anything a broken install raises
            self.error = f"a worker on {node} cannot load the model {model!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            return
        if (self.embedder.dimension, self.embedder.max_tokens) != (dimension, max_tokens):
            self.error = (
                f"the model {model!r} on {node} gives {self.embedder.dimension} dimensions and "
                f"{self.embedder.max_tokens} tokens, the index {dimension} and {max_tokens}"
            )

    def __call__(self, batch: dict) -> dict:
        _crash_once()
        out: dict[str, list] = {"name": [], "status": [], "message": [], "doc": [], "arrays": []}

        def put(name, status, message="", doc="", arrays=b""):
            for key, value in zip(out, (name, status, message, doc, arrays)):
                out[key].append(value)

        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        if self.error:
            for row in rows:
                put(str(row["name"]), "fatal", self.error)
            return out
        pending = []
        for row in rows:
            name, source = str(row["name"]), str(row["source"])
            if not os.path.exists(source):
                put(name, "fatal", f"a worker on {socket.gethostname()} cannot see {source}: every node must read the files at the same path")
                continue
            try:
                data = read_bytes(source, max_bytes=self.max_bytes)
                if _sha256(data) != row["sha256"]:
                    put(name, "changed", "the file changed while it was being indexed; index it again")
                    continue
                extracted = extract_text(source, data, timeout=self.timeout)
            except ReadError as exc:
                put(name, "unreadable", str(exc))
                continue
            passages = split_document(extracted, self.embedder)
            if not passages:
                put(name, "empty", NO_PASSAGES)
                continue
            pending.append(Pending(name, source, str(row["sha256"]), int(row["size"]), int(row["mtime_ns"]), extracted, passages))
        if pending:
            vectors = embed(pending, self.embedder)
            p_at = s_at = 0
            for doc in pending:
                n = len(doc.passages)
                m = sum(len(p.span.sentences) for p in doc.passages)
                tokens = vectors.tokens[p_at : p_at + n] if vectors.tokens is not None else None
                piece = Vectors(vectors.passages[p_at : p_at + n], vectors.sentences[s_at : s_at + m], tokens)
                put(doc.path, "ok", "", doc_to_json(doc), vectors_to_bytes(piece))
                p_at, s_at = p_at + n, s_at + m
        return out


def _load_model(model: str):
    """The model on this worker: on its GPU when Ray gave the actor one, else as ``load_embedder`` runs it here."""
    import ray

    if ray.get_gpu_ids():
        from embeddings.model import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model, device="cuda")
    from embeddings import load_embedder

    return load_embedder(model)


def _crash_once() -> None:
    marker = os.environ.get(ENV_CRASH_ONCE)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)  # as a node lost or a worker killed by the OOM killer: no clean-up, no reply


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what travels back: JSON for the document, arrays in .npz (no pickle) ------------------


def doc_to_json(doc: Pending) -> str:
    x = doc.extracted
    return json.dumps({
        "text": x.text, "format": x.format, "encoding": x.encoding, "pages": list(x.pages),
        "headings": [[h.start, h.end, h.level, h.title] for h in x.headings],
        # OCR ran on the worker: its words and boxes are kept like the rest of the reading
        "ocr_words": [[w.page, w.line, w.start, w.end, w.confidence, w.x0, w.y0, w.x1, w.y1] for w in x.ocr_words],
        "passages": [
            [p.paragraph, p.page, p.section,
             [p.span.paragraph, p.span.window, p.span.windows, p.span.start, p.span.end,
              [[s.start, s.end] for s in p.span.sentences]]]
            for p in doc.passages
        ],
    }, ensure_ascii=False)


def doc_from_json(job: Job, text: str) -> Pending:
    d = json.loads(text)
    extracted = ExtractedText(
        d["text"], d["format"], d["encoding"], tuple(d["pages"]), tuple(Heading(*h) for h in d["headings"]),
        tuple(OcrWord(*w) for w in d["ocr_words"]),
    )
    passages = [
        StoredPassage(PassageSpan(a, b, c, s, e, tuple(Span(*x) for x in sentences)), paragraph, page, section)
        for paragraph, page, section, (a, b, c, s, e, sentences) in d["passages"]
    ]
    return Pending(job.name, job.source, job.sha256, job.size, job.mtime_ns, extracted, passages)


def vectors_to_bytes(vectors: Vectors) -> bytes:
    """The vectors as ``.npz``; token vectors as the catalog keeps them, int8 rows with a scale each.

    A quarter of float32's bytes on the network, and nothing lost: packing the
    rows the driver rebuilds (``rows * scale``) gives back the same bytes, so
    the catalog stores what a local run stores.
    """
    arrays = {"passages": vectors.passages, "sentences": vectors.sentences}
    if vectors.tokens is not None:
        dim = vectors.passages.shape[1]
        arrays["token_counts"] = np.array([len(n) for n, _ in vectors.tokens], dtype=np.int64)
        arrays["token_numbers"] = np.concatenate([n for n, _ in vectors.tokens]) if vectors.tokens else np.zeros(0, np.uint16)
        rows = np.concatenate([v for _, v in vectors.tokens]) if vectors.tokens else np.zeros((0, dim), np.float32)
        arrays["token_rows"], arrays["token_scales"], _ = unpack([pack(rows)], dim)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def vectors_from_bytes(blob: bytes) -> Vectors:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        tokens = None
        if "token_counts" in z:
            ends = np.cumsum(z["token_counts"])
            starts = ends - z["token_counts"]
            numbers = z["token_numbers"]
            rows = z["token_rows"].astype(np.float32) * z["token_scales"][:, None]
            tokens = [(numbers[a:b], rows[a:b]) for a, b in zip(starts, ends)]
        return Vectors(z["passages"], z["sentences"], tokens)
