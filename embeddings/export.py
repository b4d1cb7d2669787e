"""Export a sentence-transformers model once, for ``embeddings.runtime``.

The first time a model is used, it is loaded with sentence-transformers (which
needs PyTorch), converted to OpenVINO's IR format and saved in a cache folder
keyed by the model's files; every later process loads the IR directly. Nothing
is downloaded: the model must already be on disk.

Beside the fp32 model an int8 copy is saved (``embeddings.quantize``), which the
runtime uses by default; if quantizing fails, the fp32 model alone is saved.

Only models this project can run exactly are exported: a Transformer followed
by mean or CLS pooling and optionally Normalize, with a fast tokenizer
(``tokenizer.json``). Anything else (a Dense layer, max pooling, prompts) keeps
running on PyTorch.

The cache is ``$QA_MODEL_CACHE``, else ``$XDG_CACHE_HOME/qa/models``, else
``~/.cache/qa/models``. A folder appears there only complete (written aside,
then renamed), so a crash or two processes exporting at once leave no half model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

from embeddings.runtime import INT8_IR_FILE, IR_FILE, POOLING_FILE, TOKENIZER_FILE

logger = logging.getLogger(__name__)

ENV_CACHE = "QA_MODEL_CACHE"
# Bump when the exported layout or the conversion changes: old folders are then ignored.
EXPORT_VERSION = 2
_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


class NotExportable(Exception):
    """The model has a part the runtime cannot reproduce; use PyTorch."""


def cache_root() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "qa" / "models"


def fingerprint(model_dir: Path) -> str:
    """A key that changes when any file of the model folder, or the OpenVINO version, changes."""
    import openvino

    digest = hashlib.sha256(f"v{EXPORT_VERSION} openvino {openvino.__version__}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir).as_posix()} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def cached_folder(name: str, model_dir: Path) -> Path:
    """Where the export of model ``name`` (files in ``model_dir``) lives."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[-60:] or "model"
    return cache_root() / f"{slug}-{fingerprint(model_dir)}"


def pooling_settings(model_dir: Path) -> dict:
    """What the runtime needs to know of the model, read from its sentence-transformers files.

    Raises NotExportable for anything but Transformer + mean/CLS pooling (+ Normalize).
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file() or not (model_dir / TOKENIZER_FILE).is_file():
        raise NotExportable("no modules.json or tokenizer.json")
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [m.get("type", "") for m in modules]
    if kinds not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]) or modules[0].get("path"):
        raise NotExportable(f"modules {kinds}")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    modes = {key for key, value in pooling.items() if key.startswith("pooling_mode_") and value}
    if modes == {"pooling_mode_mean_tokens"}:
        mode = "mean"
    elif modes == {"pooling_mode_cls_token"}:
        mode = "cls"
    else:
        raise NotExportable(f"pooling {sorted(modes)}")
    if pooling.get("include_prompt") is False:
        raise NotExportable("pooling excludes a prompt")
    config = {}
    if (model_dir / "sentence_bert_config.json").is_file():
        config = json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))
    if config.get("do_lower_case"):
        raise NotExportable("lower-casing outside the tokenizer")
    return {
        "pooling": mode,
        "dimension": int(pooling["word_embedding_dimension"]),
        "max_seq_length": int(config.get("max_seq_length") or 512),
    }


def export(model, model_dir: Path, destination: Path) -> Path:
    """Convert a loaded ``SentenceTransformer`` whose files are ``model_dir`` into ``destination``."""
    import openvino as ov
    import torch

    settings = pooling_settings(model_dir)
    settings["max_seq_length"] = int(model.max_seq_length)
    transformer = model[0].auto_model.eval()
    wants_types = "token_type_ids" in model.tokenizer.model_input_names

    class LastHidden(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if wants_types else [])
    example = {name: torch.ones(2, 8, dtype=torch.long) for name in names}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about shape checks it freezes; the inputs are declared dynamic below.
        warnings.simplefilter("ignore")
        converted = ov.convert_model(
            LastHidden(transformer),
            example_input=example,
            input=[(name, [-1, -1], ov.Type.i64) for name in names],
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=destination.parent))
    try:
        ov.save_model(converted, str(staging / IR_FILE), compress_to_fp16=False)
        shutil.copyfile(model_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        _save_int8(converted, staging, settings["max_seq_length"])
        (staging / POOLING_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        try:
            os.rename(staging, destination)
        except OSError:
            if not (destination / POOLING_FILE).is_file():  # not another process's finished export
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s to %s", model_dir, destination)
    return destination


def _save_int8(converted, staging: Path, max_seq_length: int) -> None:
    """Save the int8 copy beside the fp32 model; without it the runtime runs fp32."""
    import openvino as ov

    from embeddings.quantize import quantize

    try:
        quantized = quantize(converted, staging / TOKENIZER_FILE, max_seq_length)
    except Exception as exc:  # noqa: BLE001 - fp32 still works, only slower
        logger.warning("int8 quantization failed, the model runs in fp32: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return
    ov.save_model(quantized, str(staging / INT8_IR_FILE), compress_to_fp16=False)
