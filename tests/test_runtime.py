"""The OpenVINO runtime: same vectors as PyTorch in fp32, close ones in int8, sentences pooled
in one pass, an export cache that is safe to share, and commands that never import PyTorch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embeddings.quantize

from embeddings import ModelError, encode_passages, load_embedder, resolve_model
from embeddings.export import cache_root
from embeddings.model import SentenceTransformerEmbedder
from embeddings.runtime import RuntimeEmbedder
from embeddings import precision

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "tests" / "articles"
HEAVY = ("torch", "sentence_transformers", "transformers")
# How far a cosine score of the model in use may move from fp32's, so that only
# paragraphs this close in fp32 may swap places (measured: 0.027 with VNNI, 0.034 without).
NEAR_TIE = 0.06

TEXTS = [
    "The tidal barrier across Kestrel Bay will be finished in 2031.",
    "Who voted against it?",
    "Council members argued for three hours before the vote; the farms on the northern "
    "marshes will be flooded twice a year so that the town stays dry.",
]


@pytest.fixture(scope="module")
def torch_embedder():
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def fp32_embedder(real_embedder):
    return RuntimeEmbedder(real_embedder.folder, name=real_embedder.name, precision="fp32")


@pytest.fixture(scope="module")
def int8_embedder(real_embedder):
    return RuntimeEmbedder(real_embedder.folder, name=real_embedder.name, precision="int8")


def test_the_default_model_runs_on_openvino_in_the_precision_measured_for_this_cpu(real_embedder):
    assert isinstance(real_embedder, RuntimeEmbedder)
    assert real_embedder.backend == "openvino" and real_embedder.dimension == 384 and real_embedder.max_tokens == 254
    assert (real_embedder.folder / "model-int8.xml").is_file()
    decision = real_embedder.decision
    assert real_embedder.precision == decision["precision"]
    # Recorded with the export, for this CPU, and the precision follows from the figures by the rule.
    assert precision.read_decisions(real_embedder.folder)[precision.cpu_key(precision.cpu_identity())] == decision
    figures = decision["figures"]
    assert (decision["precision"], decision["reason"]) == precision.decide(figures)
    assert figures["int8_available"] and figures["int8_s"] > 0 and figures["fp32_s"] > 0
    assert figures["speedup"] == pytest.approx(figures["fp32_s"] / figures["int8_s"], rel=0.01)
    assert decision["cpu"] == precision.cpu_identity()


def test_runtime_fp32_vectors_are_the_pytorch_vectors(fp32_embedder, torch_embedder):
    ours = fp32_embedder.encode(TEXTS)
    theirs = torch_embedder.encode(TEXTS)
    assert ours.shape == theirs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() > 0.9999
    # Batching and padding change nothing: each text alone gives the same vector.
    alone = np.vstack([fp32_embedder.encode([t]) for t in TEXTS])
    assert np.allclose(alone, ours, atol=1e-4)


@pytest.mark.parametrize("which", ["chosen", "int8"])
def test_vectors_stay_within_the_fidelity_bound_of_fp32(which, real_embedder, int8_embedder, fp32_embedder):
    """What holds on every CPU, int8 kernels with or without VNNI: close vectors, and
    a question's nearest paragraph changes only between paragraphs that fp32 itself
    finds nearly tied (the rounding of each machine decides those)."""
    embedder = real_embedder if which == "chosen" else int8_embedder
    paragraphs = [p for f in sorted(SEEDS.glob("*.txt")) for p in f.read_text().split("\n\n") if p.strip()]
    questions = [
        "How much will the barrier cost?", "Who objected to the barrier?", "When will the barrier be finished?",
        "Where does the exile government meet?", "Who leads the government in exile?",
    ]
    ours, fp32 = embedder.encode(paragraphs + questions), fp32_embedder.encode(paragraphs + questions)
    cosine = (ours * fp32).sum(axis=1)
    assert cosine.min() > precision.BOUNDS["cosine_min"] and cosine.mean() > precision.BOUNDS["cosine_mean"], cosine
    n = len(paragraphs)
    scores, reference = ours[n:] @ ours[:n].T, fp32[n:] @ fp32[:n].T
    assert np.abs(scores - reference).max() < NEAR_TIE
    for row, top in enumerate(scores.argmax(axis=1)):
        assert reference[row, top] > reference[row].max() - NEAR_TIE, questions[row]
    # Batching and padding change nothing in int8 either.
    alone = np.vstack([embedder.encode([t]) for t in TEXTS])
    assert np.allclose(alone, embedder.encode(TEXTS), atol=1e-3)


def test_qa_precision_forces_either_model(real_embedder, monkeypatch):
    for forced in ("fp32", "int8"):
        monkeypatch.setenv("QA_PRECISION", forced)
        embedder = load_embedder()
        assert isinstance(embedder, RuntimeEmbedder) and embedder.precision == forced
        assert embedder.folder == real_embedder.folder  # the same export, its other model
        assert embedder.decision == real_embedder.decision  # shown, not applied
    monkeypatch.setenv("QA_PRECISION", "auto")
    assert load_embedder().precision == real_embedder.decision["precision"]
    monkeypatch.setenv("QA_PRECISION", "half")
    with pytest.raises(ModelError, match="QA_PRECISION must be auto, int8 or fp32, not 'half'"):
        load_embedder()


def test_an_export_without_a_decision_gets_one(tmp_path, real_embedder):
    """An export made before decisions were recorded (or on another CPU) is measured on first use."""
    folder = tmp_path / "old-export"
    shutil.copytree(real_embedder.folder, folder, ignore=shutil.ignore_patterns(precision.DECISION_FILE))
    load = lambda chosen: RuntimeEmbedder(folder, name=real_embedder.name, precision=chosen)  # noqa: E731
    decision = precision.choose(folder, load)
    assert decision["precision"] in ("int8", "fp32") and decision["figures"]["timed_tokens"] > 1000
    assert precision.recorded(folder) == decision
    figures = decision["figures"]
    # Each model's vectors against fp32 on the held-out text: measured, not assumed.
    assert 0.9 < figures["cosine_min"] <= figures["cosine_mean"] <= 1.0001
    assert 0 < figures["neighbour_agreement"] <= 1


def test_token_offsets_are_the_tokenizer_offsets(real_embedder, torch_embedder):
    text = "Kestrel Bay's barrier costs £1.2 billion."
    assert real_embedder.token_offsets(text) == torch_embedder.token_offsets(text)


def test_sentence_vectors_are_pooled_from_the_passage_pass(real_embedder):
    passage = (
        "The barrier will cost 1.2 billion pounds. Farmers on the northern marshes objected. "
        "The mayor said the town had no other choice."
    )
    second, third = passage.index("Farmers"), passage.index("The mayor")
    bounds = [(0, second - 1), (second, third - 1), (third, len(passage))]
    spans = [(0, s, e) for s, e in bounds]
    passage_vector, sentence_vectors, tokens = real_embedder.encode_passages([passage], spans)
    assert tokens is None  # only when asked for
    alone = real_embedder.encode([passage[s:e] for s, e in bounds])
    assert np.allclose(passage_vector, real_embedder.encode([passage]), atol=1e-4)
    assert np.allclose(np.linalg.norm(sentence_vectors, axis=1), 1.0, atol=1e-5)
    # Each pooled sentence is nearest to the same sentence encoded alone, not to its neighbours.
    similarity = sentence_vectors @ alone.T
    assert list(similarity.argmax(axis=1)) == [0, 1, 2]
    assert all(similarity[i, i] > 0.6 for i in range(3))
    # A span with no token of its own falls back to its passage's vector.
    _, empty, _ = real_embedder.encode_passages([passage], [(0, second - 1, second)])  # a blank
    assert np.allclose(empty[0], passage_vector[0], atol=1e-6)


def test_token_vectors_come_from_the_passage_pass_with_their_spans(real_embedder):
    passage = "Kestrel Bay's barrier will cost 212 million euros."
    vectors, _, (tokens,) = real_embedder.encode_passages([passage], (), tokens=True)
    assert np.allclose(vectors, real_embedder.encode([passage]), atol=1e-6)
    # Every token, no [CLS] or [SEP], each naming the characters it came from.
    assert tokens.tokens[:5] == ("ke", "##strel", "bay", "'", "s") and "[CLS]" not in tokens.tokens
    for token, (start, end) in zip(tokens.tokens, tokens.offsets):
        assert passage[start:end].lower() == token.removeprefix("##")
    assert np.allclose(np.linalg.norm(tokens.vectors, axis=1), 1.0, atol=1e-5)
    # The same vectors as asking for the tokens alone; the pooled vector is their context's.
    (alone,) = real_embedder.token_vectors([passage])
    assert alone.tokens == tokens.tokens and np.allclose(alone.vectors, tokens.vectors, atol=1e-5)


def test_an_embedder_without_encode_passages_encodes_each_sentence(torch_embedder):
    texts = ["One sentence. Another one.", "Alone."]
    passages, sentences, tokens = encode_passages(
        torch_embedder, texts, [(0, 0, 13), (0, 14, 26), (1, 0, 6)], tokens=True
    )
    assert np.allclose(passages, torch_embedder.encode(texts), atol=1e-5)
    assert np.allclose(sentences, torch_embedder.encode(["One sentence.", "Another one.", "Alone."]), atol=1e-5)
    assert [t.tokens for t in tokens] == [("one", "sentence", ".", "another", "one", "."), ("alone", ".")]


def _copy_model(tmp_path: Path) -> Path:
    folder = tmp_path / "my-model"
    shutil.copytree(resolve_model(None), folder)
    return folder


def test_export_goes_to_the_cache_once_and_whole(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("QA_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings.quantize, "SUBSET", 24)  # fewer calibration texts: a quicker export
    model = _copy_model(tmp_path)
    first = load_embedder(str(model))
    assert isinstance(first, RuntimeEmbedder) and first.precision == first.decision["precision"]
    exported = [p for p in cache_root().iterdir()]
    assert len(exported) == 1 and not exported[0].name.startswith(".")
    assert (exported[0] / "model.xml").is_file() and (exported[0] / "model-int8.xml").is_file()
    assert precision.recorded(exported[0]) == first.decision
    # Quantizing prints nothing on stdout, where a command's JSON goes.
    assert capfd.readouterr().out == ""
    # A second load reuses the export; changing the model's files makes a new one.
    again = load_embedder(str(model))
    assert np.allclose(again.encode(TEXTS), first.encode(TEXTS), atol=1e-6)
    assert len(list(cache_root().iterdir())) == 1
    config = model / "config.json"
    config.write_text(config.read_text())  # same bytes, new mtime
    os.utime(config, ns=(1, 1))
    load_embedder(str(model))
    assert len(list(cache_root().iterdir())) == 2


def test_a_failed_quantization_leaves_the_fp32_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("QA_MODEL_CACHE", str(tmp_path / "cache"))

    def fail(*_args, **_kwargs):
        raise RuntimeError("no int8 kernels here")

    monkeypatch.setattr(embeddings.quantize, "quantize", fail)
    embedder = load_embedder(str(_copy_model(tmp_path)))
    (exported,) = cache_root().iterdir()
    assert isinstance(embedder, RuntimeEmbedder) and embedder.precision == "fp32"
    assert (exported / "model.xml").is_file() and not (exported / "model-int8.xml").exists()
    assert embedder.decision["reason"] == "no usable int8 model in the export"
    assert "int8 quantization failed, the model runs in fp32: no int8 kernels here" in caplog.text
    assert embedder.encode(["still works"]).shape == (1, 384)


def test_a_model_the_runtime_cannot_reproduce_runs_on_pytorch(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_MODEL_CACHE", str(tmp_path / "cache"))
    model = _copy_model(tmp_path)
    pooling = model / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    pooling.write_text(json.dumps(settings))
    embedder = load_embedder(str(model))
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert not cache_root().exists() or not list(cache_root().iterdir())
    monkeypatch.setenv("QA_BACKEND", "openvino")
    with pytest.raises(ModelError, match="cannot run model .* on OpenVINO: pooling"):
        load_embedder(str(model))
    monkeypatch.setenv("QA_BACKEND", "fast")
    with pytest.raises(ModelError, match="QA_BACKEND must be auto, torch or openvino"):
        load_embedder(str(model))


def test_a_damaged_export_falls_back_to_fp32_then_to_pytorch(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("QA_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings.quantize, "SUBSET", 24)
    model = _copy_model(tmp_path)
    load_embedder(str(model))
    (exported,) = cache_root().iterdir()
    shutil.rmtree(exported / "compiled", ignore_errors=True)
    # A damaged int8 copy: the export's fp32 model runs instead, and says so
    # (int8 forced, as this CPU may have chosen fp32 and never load the int8 file).
    monkeypatch.setenv("QA_PRECISION", "int8")
    (exported / "model-int8.xml").write_text("<net>not a model</net>")
    embedder = load_embedder(str(model))
    assert isinstance(embedder, RuntimeEmbedder) and embedder.precision == "fp32"
    assert "model-int8.xml, running fp32" in caplog.text
    assert embedder.encode(["still works"]).shape == (1, 384)
    # Both damaged: PyTorch.
    (exported / "model.xml").write_text("<net>not a model</net>")
    embedder = load_embedder(str(model))
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.encode(["still works"]).shape == (1, 384)


def _run_cli(args: list[str], env: dict) -> dict:
    """Run the ``qa`` CLI in a fresh interpreter; what it printed and which heavy modules it imported."""
    probe = (
        "import json, sys\n"
        "from qa.cli import cli\n"
        "try:\n"
        f"    cli.main(args={args!r}, prog_name='qa')\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return {**report, "stdout": done.stdout}


def test_commands_never_import_pytorch_once_the_model_is_exported(tmp_path, real_embedder):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("QA_MODEL", None)
    index = str(tmp_path / "index")
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS, docs)
    # The session's real_embedder has exported the default model into the cache already.
    first = _run_cli(["index", str(docs), "--index", index], env)
    assert first["code"] == 0 and first["heavy"] == []

    asked = _run_cli(["ask", "How much will the barrier cost?", "--index", index, "--json"], env)
    assert asked["code"] == 0 and asked["heavy"] == []
    best = json.loads(asked["stdout"])["results"][0]
    assert best["doc"].endswith("000_kestrel_bay_tidal_barrier.txt") and "212 million euros" in best["text"]

    for args in (["list", "--index", index], ["show", best["citation"], "--index", index],
                 ["index", str(docs), "--index", index]):
        ran = _run_cli(args, env)
        assert ran["code"] == 0 and ran["heavy"] == [], args


def test_large_jobs_on_two_streams_give_the_same_vectors(real_embedder):
    paragraphs = [p for f in sorted(SEEDS.glob("*.txt")) for p in f.read_text().split("\n\n") if p.strip()]
    texts = (paragraphs * 8)[:100]  # more than three batches: the streamed path
    spans = [(i, 0, text.find(". ") + 1 or len(text)) for i, text in enumerate(texts)]
    streamed, sentences, tokens = real_embedder.encode_passages(texts, spans, tokens=True)
    one_by_one = [real_embedder.encode_passages([t], [(0, s, e)], tokens=True) for t, (_, s, e) in zip(texts, spans)]
    assert np.allclose(streamed, np.vstack([p for p, _, _ in one_by_one]), atol=1e-4)
    assert np.allclose(sentences, np.vstack([s for _, s, _ in one_by_one]), atol=1e-4)
    for ours, (_, _, (alone,)) in zip(tokens, one_by_one):
        assert ours.tokens == alone.tokens and np.allclose(ours.vectors, alone.vectors, atol=1e-4)


def test_token_vectors_agree_between_back_ends(real_embedder, fp32_embedder, torch_embedder):
    texts = [TEXTS[0], TEXTS[2]]
    theirs = torch_embedder.token_vectors(texts)
    for ours, tolerance in ((fp32_embedder.token_vectors(texts), 0.9999), (real_embedder.token_vectors(texts), 0.97)):
        for mine, expected in zip(ours, theirs):
            assert mine.tokens == expected.tokens and np.array_equal(mine.offsets, expected.offsets)
            assert (mine.vectors * expected.vectors).sum(axis=1).min() > tolerance
