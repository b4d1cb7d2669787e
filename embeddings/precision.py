"""Choose int8 or fp32 for an exported model by measuring this machine, and remember the choice.

int8 is twice as fast as fp32 only on CPUs with int8 dot-product instructions
(AVX-512 VNNI, AVX-VNNI, AMX). Without them oneDNN falls back to slower int8
kernels: on an AVX2-only CPU the int8 model was slower than fp32, and its
rounding differed enough to swap near-tied nearest neighbours. So the choice
is measured, once per CPU: both models embed a fixed held-out text
(``fidelity.txt``, never used for calibration), int8 is timed against fp32
on it, alternately, and its vectors are compared with fp32's. int8 is used only
where it is clearly faster (``MIN_SPEEDUP``) and faithful (``BOUNDS``).

The decision and its figures are kept in ``precision.json`` in the export
folder, keyed by a CPU fingerprint (model name, the ISA flags that decide the
kernels, and any ISA limit set for oneDNN), so a cache copied to or shared with
another machine, or a run with ``ONEDNN_MAX_CPU_ISA``, is measured again.
An export made before this module (no such file) simply gets measured on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DECISION_FILE = "precision.json"
FIDELITY_FILE = Path(__file__).with_name("fidelity.txt")
# int8 must beat fp32 by this much: a smaller gain is within timing noise and
# not worth int8's rounding.
MIN_SPEEDUP = 1.2
# int8 vectors against fp32 on the held-out text: per-text cosine, and how often
# the nearest neighbour (a question's paragraph, any text's closest other text) is the same.
BOUNDS = {"cosine_min": 0.98, "cosine_mean": 0.99, "neighbour_agreement": 0.9}
ROUNDS = 2  # timed passes of each model, alternating; the faster counts
# The flags that decide which int8 and fp32 kernels oneDNN runs.
_ISA_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "avx_vnni_int8", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve",
)
# oneDNN reads these to dispatch to an older ISA than the CPU has (see README, "How the model runs").
_ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OV_CPU_MAX_ISA")


def cpu_identity() -> dict:
    """What decides the kernels: the CPU model, its relevant ISA flags, any ISA limit in force."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        info = ""
    if found := re.search(r"^model name\s*:\s*(.+)$", info, re.M):
        model = found.group(1).strip()
    if found := re.search(r"^(?:flags|Features)\s*:\s*(.+)$", info, re.M):
        flags = set(found.group(1).split())
    limits = {name: os.environ[name] for name in _ISA_LIMITS if os.environ.get(name)}
    return {"model": model, "flags": [f for f in _ISA_FLAGS if f in flags], "isa_limit": limits}


def cpu_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def fidelity_texts() -> tuple[list[str], list[str]]:
    """The held-out paragraphs and questions of ``fidelity.txt``."""
    body = FIDELITY_FILE.read_text(encoding="utf-8")
    prose, _, questions = body.partition("\n## questions\n")
    paragraphs = [" ".join(b.split()) for b in re.split(r"\n\s*\n", prose) if b.strip() and not b.startswith("#")]
    return paragraphs, [q.strip() for q in questions.splitlines() if q.strip()]


def decide(figures: dict) -> tuple[str, str]:
    """``(precision, reason)`` from measured figures: int8 only when clearly faster and faithful."""
    if not figures.get("int8_available"):
        return "fp32", "no usable int8 model in the export"
    short = [f"{key} {figures[key]:.4f} < {bound}" for key, bound in BOUNDS.items() if figures[key] < bound]
    if short:
        return "fp32", "int8 not faithful enough: " + ", ".join(short)
    if figures["speedup"] < MIN_SPEEDUP:
        return "fp32", f"int8 only {figures['speedup']:.2f}x fp32 here (needs {MIN_SPEEDUP}x)"
    return "int8", f"int8 {figures['speedup']:.2f}x fp32 here, and faithful"


def measure(int8, fp32) -> dict:
    """Speed and fidelity of the ``int8`` runtime against ``fp32`` (two embedders of one export)."""
    paragraphs, questions = fidelity_texts()
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.?!])\s+(?=[A-Z])", p) if len(s.split()) >= 4]
    texts = paragraphs + sentences + questions
    # This pass also warms both models up (compiling the two-stream model) before the timing.
    a, b = int8.encode(texts), fp32.encode(texts)
    cosine = (a * b).sum(axis=1)
    n, q = len(paragraphs), len(texts) - len(questions)
    asked = lambda v: (v[q:] @ v[:n].T).argmax(axis=1)  # noqa: E731 - each question's nearest paragraph
    nearest = lambda v: np.where(np.eye(len(v), dtype=bool), -2.0, v @ v.T).argmax(axis=1)  # noqa: E731
    agree = np.concatenate([asked(a) == asked(b), nearest(a) == nearest(b)])
    # Timed on paragraphs and questions in small batches: the two-stream path that indexing takes.
    sample = paragraphs + questions
    seconds = {"int8": [], "fp32": []}
    counted = fp32.tokens_embedded
    for _ in range(ROUNDS):
        for label, embedder in (("int8", int8), ("fp32", fp32)):
            started = time.perf_counter()
            embedder.encode(sample, batch_size=8)
            seconds[label].append(time.perf_counter() - started)
    tokens = (fp32.tokens_embedded - counted) // ROUNDS
    best = {label: min(values) for label, values in seconds.items()}
    return {
        "int8_available": True,
        "speedup": round(best["fp32"] / best["int8"], 3),
        "int8_s": round(best["int8"], 4),
        "fp32_s": round(best["fp32"], 4),
        "int8_tokens_per_s": round(tokens / best["int8"]),
        "fp32_tokens_per_s": round(tokens / best["fp32"]),
        "timed_tokens": tokens,
        "rounds": ROUNDS,
        "cosine_min": round(float(cosine.min()), 5),
        "cosine_mean": round(float(cosine.mean()), 5),
        "neighbour_agreement": round(float(agree.mean()), 4),
        "texts": len(texts),
    }


def read_decisions(folder: Path) -> dict:
    """Every decision recorded in ``folder``, by CPU key; {} when none or unreadable."""
    try:
        stored = json.loads((folder / DECISION_FILE).read_text(encoding="utf-8"))
        return dict(stored.get("decisions") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def recorded(folder: Path) -> dict | None:
    """This CPU's decision recorded in ``folder``, if any."""
    return read_decisions(folder).get(cpu_key(cpu_identity()))


def choose(folder: Path, load) -> dict:
    """This CPU's decision for the export in ``folder``: the recorded one, else measured and recorded.

    ``load(precision)`` gives a runtime embedder of the export in that precision.
    """
    identity = cpu_identity()
    key = cpu_key(identity)
    known = read_decisions(folder).get(key)
    if known and known.get("precision") in ("int8", "fp32"):
        return known
    fp32, int8 = load("fp32"), load("int8")
    figures = measure(int8, fp32) if int8.precision == "int8" else {"int8_available": False}
    precision, reason = decide(figures)
    decision = {
        "precision": precision,
        "reason": reason,
        "figures": figures,
        "bounds": {**BOUNDS, "speedup": MIN_SPEEDUP},
        "cpu": identity,
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    logger.info("precision for this CPU: %s (%s)", precision, reason)
    _record(folder, key, decision)
    return decision


def _record(folder: Path, key: str, decision: dict) -> None:
    """Add ``decision`` to the folder's file, written aside and renamed so readers see it whole."""
    decisions = {**read_decisions(folder), key: decision}
    try:
        handle, staging = tempfile.mkstemp(prefix=".precision-", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"version": 1, "decisions": decisions}, out, indent=2)
        os.replace(staging, folder / DECISION_FILE)
    except OSError as exc:  # a read-only cache: measured again by the next process, nothing lost
        logger.warning("cannot record the precision decision in %s (it is measured again next time): %s", folder, exc)
