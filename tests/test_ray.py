"""Indexing on a Ray cluster (``qa index --ray``) against a local run on the same files.

A real cluster is started once for the module on loopback (``ray start --head
--node-ip-address=127.0.0.1``, 2 CPUs, its own temp folder) and stopped by the
PIDs of its processes, never with ``ray stop`` (which would stop every Ray on
the machine). The workers load the real model. ``pytest -m ray`` runs these alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ARTICLES_DIR, SEEDS_DIR
from corpus import HTML, make_docx, make_pdf

pytestmark = pytest.mark.ray

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RAY_BIN = Path(sys.executable).with_name("ray")
# Set before Ray is imported, as the driver does for a loopback head: else Ray swaps
# 127.0.0.1 for this machine's address, where the loopback head does not listen.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# The test cluster has no token; a token left in ~/.ray by some local ray.init() would
# otherwise turn token authentication on for the cluster and not for the driver.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(temp_dir: str) -> list[int]:
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in process.info["cmdline"] or ()):
                pids.append(process.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@pytest.fixture(scope="module")
def ray_cluster():
    """The address of a one-node Ray cluster on 127.0.0.1 with 2 CPUs."""
    pytest.importorskip("ray")
    import psutil

    # A short path: Ray's socket names must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="qa-ray-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    started = subprocess.run(
        [str(RAY_BIN), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--num-gpus=0", "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        processes = []
        for pid in _cluster_pids(temp_dir):
            try:
                processes.append(psutil.Process(pid))
                os.kill(pid, signal.SIGTERM)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        _, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            process.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _docs(root: Path) -> Path:
    """Seeds and articles, Markdown with headings, a PDF, a DOCX, an HTML page, a duplicate, an empty file and a headings-only one."""
    shutil.copytree(SEEDS_DIR, root / "seeds")
    shutil.copytree(ARTICLES_DIR, root / "articles")
    (root / "notes").mkdir()
    (root / "notes" / "guide.md").write_text(
        "# Install\n\nRun make run in the folder. It creates the virtual environment.\n\n"
        "# Ask\n\nType a question and press Enter. Each answer cites its paragraph.\n",
        encoding="utf-8",
    )
    shutil.copyfile(root / "notes" / "guide.md", root / "notes" / "guide-copy.md")
    (root / "notes" / "empty.txt").write_text("", encoding="utf-8")
    (root / "notes" / "titles.md").write_text("# Only a heading\n", encoding="utf-8")
    # PDF and DOCX are parsed in a child process forked from the worker, as locally.
    make_pdf(root / "notes" / "report.pdf")
    make_docx(root / "notes" / "manual.docx")
    (root / "notes" / "bees.html").write_text(HTML, encoding="utf-8")
    # A scan, read by Tesseract on the worker: its words and boxes must come back too.
    from scans import draw_page

    image, _ = draw_page(["The tidal barrier at Kestrel Bay was finished in the spring after four years of work."])
    image.save(root / "notes" / "scan.png")
    return root


def _contents(index: Path) -> dict:
    """Every passage of an index, keyed by where it is cited, with its sentences and all its vectors."""
    from embeddings.tokens import unpack
    from qa.storage import open_snapshot

    snapshot = open_snapshot(index)  # every segment through one connection
    dim = snapshot.model.dimension
    db = snapshot._db
    passages, sentences = snapshot.passage_vectors, snapshot.sentence_vectors
    out = {}
    rows = db.execute(
        "SELECT pa.path, p.id, p.paragraph, p.window, p.start, p.end, p.page, p.section, p.text, p.ocr_confidence "
        "FROM passages p JOIN paths pa ON pa.doc_id = p.doc_id"
    ).fetchall()
    for path, pid, paragraph, window, start, end, page, section, text, ocr in rows:
        sents = db.execute("SELECT id, start, end FROM sentences WHERE passage_id = ? ORDER BY start", (pid,)).fetchall()
        numbers, blob = db.execute("SELECT sentences, vectors FROM passage_tokens WHERE passage_id = ?", (pid,)).fetchone()
        token_rows, scales, _ = unpack([blob], dim)
        key = (path, paragraph, window, page)
        assert key not in out, f"{key} stored twice"
        out[key] = {
            "citation": (start, end, section, text, [(s, e) for _, s, e in sents], ocr),
            "vector": passages.vectors([pid])[0],
            "sentence_vectors": sentences.vectors([s for s, _, _ in sents]) if sents else np.zeros((0, dim)),
            "token_numbers": np.frombuffer(numbers, dtype=np.uint16),
            "tokens": token_rows.astype(np.float32) * scales[:, None],
        }
    words = db.execute(
        "SELECT pa.path, w.page, w.line, w.start, w.end, w.confidence, w.x0, w.y0, w.x1, w.y1 "
        "FROM ocr_words w JOIN paths pa ON pa.doc_id = w.doc_id ORDER BY pa.path, w.start"
    ).fetchall()
    out[("ocr words",)] = {"citation": words}
    snapshot.close()
    return out


def _tolerance(embedder) -> float:
    # The same model in the same precision on the same CPU; int8 activations are
    # quantised per batch, so a passage embedded in another batch moves by a rounding
    # step (at most 0.0011 a component on the seeds and articles where this was measured).
    # The index keeps float16: a difference of 1e-6 may round a component to the next
    # float16 on one side only, one step (at most 2^-11 below 1) apart.
    return (1e-5 if embedder.precision == "fp32" else 5e-3) + 2.0**-11


def _assert_same(local: dict, remote: dict, atol: float) -> None:
    assert sorted(local) == sorted(remote)
    for key in local:
        a, b = local[key], remote[key]
        assert a["citation"] == b["citation"], key
        if key == ("ocr words",):
            continue
        assert np.allclose(a["vector"], b["vector"], atol=atol), key
        assert np.allclose(a["sentence_vectors"], b["sentence_vectors"], atol=atol), key
        assert np.array_equal(a["token_numbers"], b["token_numbers"]), key
        assert np.allclose(a["tokens"], b["tokens"], atol=atol + 1e-2), key  # stored as int8 either way


def _report(report) -> dict:
    out = report.to_json()
    out["skipped"] = sorted((Path(s["path"]).name, s["reason"]) for s in out["skipped"])
    return out


@pytest.mark.model
def test_ray_run_commits_what_a_local_run_commits(ray_cluster, real_embedder, tmp_path, monkeypatch, capsys):
    """Same report, passages, citations, sentences and vectors; then one file changed,
    one added, one gone: only those two files are sent, and the result still matches."""
    import qa.distributed as distributed
    from qa import QA

    docs = _docs(tmp_path / "docs")
    sent: list[list[str]] = []
    real_run = distributed._run
    monkeypatch.setattr(
        distributed, "_run", lambda jobs, *a: (sent.append(sorted(j.name for j in jobs)), real_run(jobs, *a))[1]
    )
    local, remote = QA(tmp_path / "local", embedder=real_embedder), QA(tmp_path / "ray", embedder=real_embedder)

    first_local = local.index([docs])
    first_ray = remote.index([docs], ray=ray_cluster, progress=True)
    bar = capsys.readouterr().err
    files = sum(1 for p in docs.rglob("*") if p.is_file())
    assert "indexing" in bar and f"{files}/{files}" in bar and "file/s" in bar  # files done, rate, time left
    assert _report(first_ray) == _report(first_local)
    assert len(first_ray.added) == 10 and len(first_ray.skipped) == 2 and "docs/notes/scan.png" in first_ray.added
    # Every file went to the cluster but the second of the two with one content (guide-copy.md
    # comes first in file order): it is stored as another name of the content the first brought.
    every = sorted(f"docs/{p.relative_to(docs).as_posix()}" for p in docs.rglob("*") if p.is_file())
    assert sent == [[n for n in every if n != "docs/notes/guide.md"]]
    _assert_same(_contents(tmp_path / "local"), _contents(tmp_path / "ray"), _tolerance(real_embedder))
    assert len(_contents(tmp_path / "ray")[("ocr words",)]["citation"]) > 10  # the scan's words, boxes and all
    question = "Who objected to the barrier?"
    assert [h.citation for h in remote.ask(question).hits] == [h.citation for h in local.ask(question).hits]

    changed = docs / "seeds" / "000_1e317d521278b0dc.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\nA paragraph added later about the talks.\n", encoding="utf-8")
    (docs / "notes" / "new.txt").write_text("The ferry leaves at nine. It returns at five.\n", encoding="utf-8")
    (docs / "articles" / "001_morvan_exile_government.txt").unlink()
    sent.clear()
    second_local, second_ray = local.index([docs]), remote.index([docs], ray=ray_cluster)
    # The changed and the new file, and the two skipped last time, tried again as a local run tries them.
    assert sent == [["docs/notes/empty.txt", "docs/notes/new.txt", "docs/notes/titles.md", "docs/seeds/000_1e317d521278b0dc.txt"]]
    assert any(k[0] == "docs/notes/report.pdf" and k[3] == 2 for k in _contents(tmp_path / "ray"))  # pages kept
    assert _report(second_ray) == _report(second_local)
    assert second_ray.updated == ["docs/seeds/000_1e317d521278b0dc.txt"] and second_ray.added == ["docs/notes/new.txt"]
    assert second_ray.removed == ["docs/articles/001_morvan_exile_government.txt"]
    _assert_same(_contents(tmp_path / "local"), _contents(tmp_path / "ray"), _tolerance(real_embedder))

    (docs / "notes" / "empty.txt").unlink()
    (docs / "notes" / "titles.md").unlink()
    sent.clear()  # nothing changed: nothing sent, Ray not even reached
    third = remote.index([docs], ray=ray_cluster)
    assert sent == [] and third.passages_embedded == 0 and len(third.unchanged) == 10


@pytest.mark.model
def test_a_worker_killed_mid_job_is_retried_and_the_commit_is_whole(ray_cluster, real_embedder, tmp_path, monkeypatch):
    import qa.distributed as distributed
    from qa import QA

    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs / "seeds")
    shutil.copytree(ARTICLES_DIR, docs / "articles")
    for n in range(4):
        (docs / f"note{n}.txt").write_text(f"Note {n} is about the harbour. Boat {n} left at dawn.\n", encoding="utf-8")
    marker = tmp_path / "crashed"
    monkeypatch.setenv(distributed.ENV_CRASH_ONCE, str(marker))
    monkeypatch.setattr(distributed, "FILES_PER_BATCH", 2)  # several batches: one dies, the others go on

    report = QA(tmp_path / "ray", embedder=real_embedder).index([docs], ray=ray_cluster, workers=2)
    assert marker.exists()  # a worker did die with its batch
    local = QA(tmp_path / "local", embedder=real_embedder).index([docs])
    assert _report(report) == _report(local) and len(report.added) == 8
    _assert_same(_contents(tmp_path / "local"), _contents(tmp_path / "ray"), _tolerance(real_embedder))


@pytest.mark.model
def test_a_driver_killed_mid_job_leaves_the_old_generation(ray_cluster, real_embedder, tmp_path):
    from qa import QA

    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs / "seeds")
    index = tmp_path / "index"
    QA(index, embedder=real_embedder).index([docs])
    before = _contents(index)
    shutil.copytree(ARTICLES_DIR, docs / "articles")
    for n in range(6):
        (docs / f"note{n}.txt").write_text(f"Note {n} about the quay. Crane {n} lifted nets.\n", encoding="utf-8")

    child = subprocess.run(
        [sys.executable, str(HERE / "crash_ray_indexer.py"), str(index), str(docs), ray_cluster],
        env={**os.environ, "CRASH_AT_STORE": "2"}, capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-3000:]
    assert "stored 1" in child.stdout  # it died with results arriving, one already in its writer
    qa = QA(index, embedder=real_embedder)
    assert sorted({k[0] for k in _contents(index)}) == sorted({k[0] for k in before})
    _assert_same(before, _contents(index), 0.0)
    # The next run cleans up after the dead one and indexes everything.
    report = qa.index([docs], ray=ray_cluster)
    assert len(report.added) == 8 and len(report.unchanged) == 2


@pytest.mark.model
def test_a_worker_without_the_model_stops_the_job_with_one_line(ray_cluster, real_embedder, tmp_path):
    """The index's model is a folder that the driver no longer needs and the workers cannot find."""
    from embeddings import resolve_model

    from qa.cli import cli

    model = tmp_path / "model"
    shutil.copytree(resolve_model(None), model, symlinks=True)
    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs / "seeds")
    index = tmp_path / "index"
    runner = CliRunner()
    assert runner.invoke(cli, ["index", str(docs), "--index", str(index), "--model", str(model)]).exit_code == 0
    before = _contents(index)
    shutil.rmtree(model)
    (docs / "new.txt").write_text("The ferry leaves at nine.\n", encoding="utf-8")

    result = runner.invoke(cli, ["index", str(docs), "--index", str(index), "--model", str(model), "--ray", ray_cluster])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert "\n" not in line and "cannot load the model" in line and str(model) in line, line
    _assert_same(before, _contents(index), 0.0)


def test_an_unreachable_cluster_is_one_line_and_nothing_is_written(tmp_path, clean_env):
    from qa.cli import cli

    docs = tmp_path / "docs"
    shutil.copytree(SEEDS_DIR, docs)
    runner = CliRunner()
    for address, message in [
        ("127.0.0.1:1", "Error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
        ("docs/", "Error: not a Ray cluster address: 'docs/' (give HOST:PORT, ray://HOST:PORT, auto or local)"),
    ]:
        result = runner.invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index"), "--ray", address])
        assert result.exit_code == 1 and result.output.strip() == message, result.output
    result = runner.invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index")],
                           env={"QA_RAY_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert not (tmp_path / "index" / "manifest.json").exists()
    result = runner.invoke(cli, ["index", str(docs), "--index", str(tmp_path / "index"), "--workers", "2"])
    assert result.exit_code == 2 and "--workers goes with --ray" in result.output


@pytest.mark.model
def test_documents_and_vectors_travel_back_whole(real_embedder, tmp_path):
    """What a worker sends (JSON and .npz, no pickle) is the document and vectors it embedded."""
    from embeddings.tokens import pack
    from qa.workers import Job, doc_from_json, doc_to_json, vectors_from_bytes, vectors_to_bytes
    from qa.ingest import Pending, embed, split_document
    from qa.read import read_document

    path = tmp_path / "guide.md"
    path.write_text("# Install\n\nRun make run. It builds.\n\n## Use\n\n" + " ".join(f"word{i} and" for i in range(150)) + ".\n")
    extracted = read_document(path)
    doc = Pending("guide.md", str(path), "ab" * 32, 10, 20, extracted, split_document(extracted, real_embedder))
    assert any(p.span.windows > 1 for p in doc.passages) and any(p.section for p in doc.passages)
    vectors = embed([doc], real_embedder)
    back = doc_from_json(Job("guide.md", str(path), str(path), "ab" * 32, 10, 20), doc_to_json(doc))
    assert back == doc
    again = vectors_from_bytes(vectors_to_bytes(vectors))
    assert np.array_equal(again.passages, vectors.passages) and np.array_equal(again.sentences, vectors.sentences)
    assert again.tokens is not None and len(again.tokens) == len(vectors.tokens) == len(doc.passages)
    # Token vectors travel as the catalog's int8 rows: what the driver stores is what a local run stores.
    for (n1, v1), (n2, v2) in zip(again.tokens, vectors.tokens):
        assert np.array_equal(n1, n2) and pack(v1) == pack(v2) and np.allclose(v1, v2, atol=0.01)


@pytest.mark.model
def test_a_local_run_does_not_import_ray(tmp_path):
    code = (
        "import sys\n"
        "from qa.cli import cli\n"
        f"cli.main(['index', {str(SEEDS_DIR)!r}, '--index', {str(tmp_path / 'index')!r}], standalone_mode=False)\n"
        "print('ray imported' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'no ray')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QA_RAY_ADDRESS", "QA_INDEX", "QA_MODEL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "no ray", out.stdout
    assert (tmp_path / "index" / "manifest.json").exists()
