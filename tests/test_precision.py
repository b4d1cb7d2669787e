"""The precision is chosen by measuring the machine, recorded with the export, and re-decided on another CPU.

These run without the model: the rule and the record are checked with stand-in
embedders, so they hold on any CPU. The real model's decision is checked in test_runtime.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings import precision

FAST_AND_FAITHFUL = {
    "int8_available": True, "speedup": 2.0, "int8_s": 0.1, "fp32_s": 0.2,
    "cosine_min": 0.995, "cosine_mean": 0.998, "neighbour_agreement": 0.98,
}


@pytest.mark.parametrize(
    "change, expected, why",
    [
        ({}, "int8", "int8 2.00x fp32 here, and faithful"),
        ({"speedup": 1.19}, "fp32", "int8 only 1.19x fp32 here (needs 1.2x)"),
        ({"speedup": 0.65}, "fp32", "int8 only 0.65x fp32 here (needs 1.2x)"),
        ({"cosine_min": 0.97}, "fp32", "int8 not faithful enough: cosine_min 0.9700 < 0.98"),
        ({"cosine_mean": 0.985}, "fp32", "int8 not faithful enough: cosine_mean 0.9850 < 0.99"),
        ({"neighbour_agreement": 0.8}, "fp32", "int8 not faithful enough: neighbour_agreement 0.8000 < 0.9"),
        ({"int8_available": False}, "fp32", "no usable int8 model in the export"),
    ],
)
def test_int8_only_where_clearly_faster_and_faithful(change, expected, why):
    assert precision.decide({**FAST_AND_FAITHFUL, **change}) == (expected, why)


class Stand:
    """A stand-in runtime embedder: fixed random vectors per text, plus noise of a given size, and a delay."""

    def __init__(self, label: str, *, noise: float = 0.0, delay: float = 0.0) -> None:
        self.precision = label
        self.noise, self.delay = noise, delay
        self.tokens_embedded = 0
        self.encoded = 0

    def encode(self, texts, *, batch_size: int = 32):
        import time

        self.encoded += 1
        time.sleep(self.delay * len(texts) / 40)
        self.tokens_embedded += sum(len(t.split()) + 2 for t in texts)
        rows = []
        for text in texts:
            seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
            base = np.random.default_rng(seed).normal(size=64)
            rows.append(base + np.random.default_rng(seed + 1).normal(size=64) * self.noise)
        vectors = np.array(rows, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_measure_times_and_compares_the_two_models():
    faithful = precision.measure(Stand("int8", noise=0.01, delay=0.01), Stand("fp32", delay=0.03))
    assert faithful["cosine_min"] > 0.99 and faithful["neighbour_agreement"] > 0.95
    assert faithful["speedup"] > 1.5 and faithful["timed_tokens"] > 0
    assert precision.decide(faithful)[0] == "int8"
    noisy = precision.measure(Stand("int8", noise=0.5, delay=0.01), Stand("fp32", delay=0.03))
    assert noisy["cosine_mean"] < 0.95 and precision.decide(noisy)[0] == "fp32"
    slow = precision.measure(Stand("int8", delay=0.03), Stand("fp32", delay=0.02))
    assert slow["speedup"] < 1.2 and precision.decide(slow)[0] == "fp32"


def test_the_held_out_text_is_not_calibration_text():
    from embeddings.quantize import calibration_texts

    paragraphs, questions = precision.fidelity_texts()
    assert len(paragraphs) >= 20 and len(questions) == len(paragraphs)
    calibration = " ".join(calibration_texts())
    assert not any(p[:60] in calibration for p in paragraphs)


def _loader(int8: Stand, fp32: Stand, loads: list):
    def load(label: str):
        loads.append(label)
        return int8 if label == "int8" else fp32

    return load


def test_the_decision_is_recorded_once_per_cpu_and_remade_on_another(tmp_path, monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    loads: list[str] = []
    load = _loader(Stand("int8", noise=0.01, delay=0.01), Stand("fp32", delay=0.03), loads)
    first = precision.choose(tmp_path, load)
    assert first["precision"] == "int8" and first["cpu"] == precision.cpu_identity()
    stored = json.loads((tmp_path / precision.DECISION_FILE).read_text())
    assert stored["decisions"] == {precision.cpu_key(precision.cpu_identity()): first}
    assert first["bounds"] == {**precision.BOUNDS, "speedup": precision.MIN_SPEEDUP}

    # The same CPU again: read back, nothing measured.
    loads.clear()
    assert precision.choose(tmp_path, load) == first and loads == []

    # Another CPU (here: oneDNN limited to AVX2, where int8 is slow) is measured and kept beside the first.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_identity()["isa_limit"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    other = precision.choose(tmp_path, _loader(Stand("int8", delay=0.04), Stand("fp32", delay=0.02), loads))
    assert other["precision"] == "fp32" and loads == ["fp32", "int8"]
    assert len(precision.read_decisions(tmp_path)) == 2
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert precision.recorded(tmp_path) == first


def test_without_an_int8_model_the_choice_is_fp32_unmeasured(tmp_path):
    fp32 = Stand("fp32")
    decision = precision.choose(tmp_path, lambda label: fp32)  # the runtime fell back to fp32
    assert decision["precision"] == "fp32" and decision["figures"] == {"int8_available": False}
    assert fp32.encoded == 0


def test_a_damaged_or_unwritable_record_does_not_stop_the_model(tmp_path, caplog, monkeypatch):
    (tmp_path / precision.DECISION_FILE).write_text("{not json")
    load = _loader(Stand("int8", noise=0.01, delay=0.01), Stand("fp32", delay=0.03), [])
    assert precision.choose(tmp_path, load)["precision"] == "int8"
    assert precision.recorded(tmp_path)["precision"] == "int8"  # measured again and rewritten

    def refuse(*_args, **_kwargs):
        raise PermissionError("read-only file system")

    # A cache on a read-only disk: the decision is made and used, and measured again next time.
    monkeypatch.setattr(precision.tempfile, "mkstemp", refuse)
    other = tmp_path / "readonly"
    other.mkdir()
    assert precision.choose(other, load)["precision"] == "int8"
    assert "cannot record the precision decision" in caplog.text and "read-only file system" in caplog.text
    assert precision.recorded(other) is None


# -- with the real model --------------------------------------------------------------


@pytest.mark.model
def test_qa_info_shows_the_decision(model, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from qa.cli import cli

    monkeypatch.delenv("QA_PRECISION", raising=False)
    index = str(tmp_path / "index")
    done = CliRunner().invoke(cli, ["info", "--index", index, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    decision = precision.recorded(model.folder)
    assert report["decision"] == decision and report["precision"] == model.precision == decision["precision"]
    assert report["backend"] == "openvino" and report["requested"] == "auto" and report["export"] == str(model.folder)
    plain = CliRunner().invoke(cli, ["info", "--index", index])
    assert plain.exit_code == 0
    lines = plain.stdout.splitlines()
    assert lines[0] == f"model      all-MiniLM-L6-v2 on openvino, {model.precision} (measured for this CPU)"
    assert lines[1] == f"decision   {decision['precision']}: {decision['reason']}"


@pytest.mark.model
def test_an_index_answers_alike_whichever_precision_wrote_or_reads_it(tmp_path, real_embedder):
    """The index stores vectors, not a precision: written in one, read in the other, the same passages come first.

    On the held-out text, whose questions each have one answering paragraph
    (the seeds change with the corpus; this does not).
    """
    from embeddings.runtime import RuntimeEmbedder
    from qa import QA

    paragraphs, questions = precision.fidelity_texts()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fidelity.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    runtime = {p: RuntimeEmbedder(real_embedder.folder, name=real_embedder.name, precision=p) for p in ("int8", "fp32")}
    tops = {}
    for writer in ("int8", "fp32"):
        folder = tmp_path / writer
        QA(folder, embedder=runtime[writer]).index([docs])
        for reader in ("int8", "fp32"):
            answers = [QA(folder, embedder=runtime[reader]).ask(q, k=3) for q in questions]
            tops[writer, reader] = [a.hits[0].passage.paragraph for a in answers]
    assert len({tuple(t) for t in tops.values()}) == 1, tops
    assert tops["fp32", "fp32"] == list(range(1, len(questions) + 1))  # each question finds its own paragraph
