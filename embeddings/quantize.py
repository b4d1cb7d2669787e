"""Static int8 quantization of an exported model, so that indexing runs twice as fast.

At export time (``embeddings.export``) the fp32 model is also quantized with
NNCF's post-training quantization: weights and activations of every matrix
product become int8, with activation ranges measured on calibration text, and
SmoothQuant and bias correction applied as NNCF does for transformers. A CPU's
int8 dot-product instructions (VNNI) then run the forward pass about twice as
fast as fp32; without them int8 is slower, and ``embeddings.precision`` keeps fp32.

The calibration text is ``calibration.txt`` beside this module: original prose
in many genres (news, contracts, manuals, recipes, science, fiction...), written
for this project, used as whole paragraphs and as single sentences, since both
passages and questions are embedded. None of it comes from a benchmark.

Measured on ../shared/bench/squad-dev (``bench/precision.py``, with VNNI): the int8
vectors have cosine 0.979 at worst to the fp32 ones (1st percentile 0.989, mean
0.998) and recall@1 moves by less than half a point. ``QA_PRECISION=int8`` or
``fp32`` forces either model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")
# Enough texts to cover the activation ranges; more only slows the one-time export.
SUBSET = 300


def calibration_texts(limit: int | None = None) -> list[str]:
    """Every paragraph of the calibration file, then single sentences from them, up to ``limit`` (``SUBSET``)."""
    body = CALIBRATION_FILE.read_text(encoding="utf-8")
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", body) if block.strip() and not block.startswith("#")]
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.?!])\s+(?=[A-Z\"“])", p) if len(s.split()) >= 4]
    # Every third sentence, so each paragraph gives a few and the limit is reached evenly.
    return (paragraphs + sentences[::3] + sentences[1::3] + sentences[2::3])[: limit or SUBSET]


def quantize(model, tokenizer_file: Path, max_seq_length: int):
    """An int8 copy of ``model`` (an ``openvino.Model`` whose inputs are token ids and a mask)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_seq_length)
    inputs = {port.get_any_name() for port in model.inputs}

    def feed(text: str) -> dict[str, np.ndarray]:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        items = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return {name: value for name, value in items.items() if name in inputs}

    samples = [feed(text) for text in calibration_texts()]
    # NNCF reports on stdout (its logger and progress bars): keep the command's output clean.
    # Its import sets its logger to INFO; set only the logger's level after it
    # (nncf.set_log_level would also change the levels of handlers it finds there).
    with contextlib.redirect_stdout(io.StringIO()):
        import nncf

        logging.getLogger("nncf").setLevel(logging.ERROR)
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
        )
    logger.info("quantized to int8 on %d calibration texts", len(samples))
    return quantized
