"""Reliability: crashes, damaged files, readers during writes, hostile input, the web page, fuzzed files, load.

1. Crash safety: a child indexer (``tests/crash_indexer.py``, fake embedder) is
   SIGKILLed at random moments and at named steps of its run, commit included;
   the index must open as the old or the new set of documents, whole.
2. Corruption beyond ``test_store.py``: damage at a file's edges, every bit of
   the manifest, files of another generation or another index.
3. Readers during writes, and two writers at once.
4. Hostile questions: the real model, the CLI, and property-based tests.
5. The web page: no file outside the app is served, document text is escaped,
   50 concurrent ``/ask`` calls all succeed.
6. Ingest fuzzing: mutated files of every format.

Figures (trials survived, inputs tried, latencies) are printed; see them with
``pytest -rP`` or ``-s``. The long versions run with ``--runslow`` or ``QA_SLOW=1``.
"""

from __future__ import annotations

import html
import importlib.util
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corpus as gen
import qa.storage.snapshot as snapshot_module
from indexfiles import catalog_counts, generation_names, index_file, manifest_of
from qa.storage.segments import SEGMENT_SCHEMA
from conftest import CORPUS, ARTICLES_DIR
from embeddings import VectorIndex
from fakes import FakeEmbedder, fake_token_offsets
from qa import QA, IndexCorrupt, IndexLocked, QueryError, StoreError
from qa.cli import cli
from qa.ingest import locate
from qa.lexical import fts_query
from qa.read import ExtractedText, Heading
from qa.records import Span
from qa.split import split_passages
from qa.storage import open_snapshot

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CHILD = TESTS / "crash_indexer.py"
SEED = int(os.environ.get("QA_RELIABILITY_SEED", "20240611"))
PROBE = "When were the tidal barrier gates tested?"


# -- what a whole index looks like --------------------------------------------------------


def checked_signature(index: Path) -> dict[str, tuple]:
    """Open ``index`` as a user would and check it is whole; ``{doc: (text, passages)}``.

    Whole means: the manifest's counts equal the catalog's rows and the FAISS
    files' ``ntotal``; every passage is its document's ``text[start:end]``; a
    question's hits are exact too.
    """
    qa = QA(index, embedder=FakeEmbedder())
    snap = qa.snapshot()
    m = snap.manifest
    assert catalog_counts(index) == m["counts"]
    for kind, vectors in (("passages", snap.passage_vectors), ("sentences", snap.sentence_vectors)):
        stored = sum(faiss.read_index(str(index / s["files"][kind])).ntotal for s in m["segments"])
        assert stored - len(vectors.excluded) == m["counts"][kind] == len(vectors)
    signature = {}
    for doc in snap.documents():
        text = snap.document_text(doc.path)
        passages = snap.passages_of(doc.path)
        assert len(passages) == doc.passages
        for p in passages:
            assert text[p.start : p.end] == p.text, (doc.path, p.start, p.end)
        signature[doc.path] = (text, tuple((p.start, p.end, p.page, p.section) for p in passages))
    assert len(signature) == m["counts"]["documents"]
    for hit in qa.ask(PROBE, k=5).hits:
        p = hit.passage
        assert signature[p.doc][0][p.start : p.end] == p.text
    return signature


def differences(signature: dict, old: dict, new: dict) -> str:
    """Why ``signature`` is neither ``old`` nor ``new``, for a failure message."""
    parts = []
    for name, other in (("old", old), ("new", new)):
        missing = sorted(set(other) - set(signature))
        extra = sorted(set(signature) - set(other))
        changed = sorted(d for d in set(other) & set(signature) if other[d] != signature[d])
        parts.append(f"vs {name}: missing {missing[:5]}, extra {extra[:5]}, changed {changed[:5]}")
    return "; ".join(parts)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message


# =========================================================================================
# 1. Crash safety
# =========================================================================================


def note_text(i: int, version: str) -> str:
    paragraphs = [
        f"Note {i} ({version}) from the harbour log. The tidal barrier gates were tested on day {i}.",
        f"The river rose {i * 7 % 31} centimetres near the lighthouse. Keepers counted {i * 3} ships at dawn.",
        f"Version {version} of note {i} ends here. " + " ".join(f"w{version}{i}x{n}" for n in range(i % 5 * 9)),
    ]
    return "\n\n".join(paragraphs[: 2 + i % 2]) + "\n"


def write_first_version(docs: Path) -> None:
    gen.build_good(docs)  # a PDF, a DOCX, an HTML page, Markdown, five encoded text files
    for i in range(24):
        (docs / f"note_{i:02d}.txt").write_text(note_text(i, "one"), encoding="utf-8")


def write_second_version(docs: Path) -> None:
    """Change 8 notes, delete 5, add 12, edit the HTML page and the guide, copy the DOCX."""
    for i in range(0, 24, 3):
        (docs / f"note_{i:02d}.txt").write_text(note_text(i, "two"), encoding="utf-8")
    for i in (1, 4, 7, 10, 13):
        (docs / f"note_{i:02d}.txt").unlink()
    for i in range(24, 36):
        (docs / f"note_{i:02d}.txt").write_text(note_text(i, "two"), encoding="utf-8")
    (docs / "bees.html").write_text(gen.HTML.replace("heather", "clover"), encoding="utf-8")
    (docs / "guide.md").write_text(gen.MARKDOWN + "\nA closing paragraph of the second version.\n", encoding="utf-8")
    shutil.copyfile(docs / "manual.docx", docs / "manual_copy.docx")


@dataclass
class ChildRun:
    returncode: int
    seconds: float  # from "ready" to exit
    stdout: str
    stderr: str
    index: Path


def run_child(workdir: Path, template: Path, docs: Path, *, kill_after: float | None = None,
              env: dict | None = None, timeout: float = 120) -> ChildRun:
    """Copy ``template`` to ``workdir/index`` and let the child index ``docs`` into it.

    With ``kill_after``, the child's process group (the indexer and any parser
    child it forked) gets SIGKILL that many seconds after the child is ready.
    """
    index = workdir / "index"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, index)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CRASH_")}
    child_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(index), str(docs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env, start_new_session=True,
    )
    began = time.perf_counter()
    try:
        ready = proc.stdout.readline()
        began = time.perf_counter()
        if ready.strip() == "ready":
            try:
                proc.wait(timeout=timeout if kill_after is None else kill_after)
            except subprocess.TimeoutExpired:
                if kill_after is None:
                    raise
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        seconds = time.perf_counter() - began
    finally:
        # The group outlives the indexer when it killed itself while a parser child ran.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
    out, err = proc.communicate(timeout=timeout)
    assert ready.strip() == "ready", f"the child did not start: {err[-3000:]}"
    return ChildRun(proc.returncode, seconds, out, err, index)


@dataclass
class CrashWorld:
    docs: Path  # the folder, in its second version
    template: Path  # an index of its first version: one committed generation
    old: dict  # the template's signature
    new: dict  # the signature once the second version is indexed
    seconds: float  # an uninterrupted child run, from "ready" to exit
    commit_at: float  # when, in such a run, the new catalog is committed (the commit begins)
    calls: dict  # step -> calls in an uninterrupted run


@pytest.fixture(scope="module")
def crash_world(tmp_path_factory) -> CrashWorld:
    base = tmp_path_factory.mktemp("crash")
    docs = base / "docs"
    write_first_version(docs)
    template = base / "template"
    report = QA(template, embedder=FakeEmbedder()).index([docs])
    assert len(report.added) == 33 and not report.skipped, report
    old = checked_signature(template)
    write_second_version(docs)
    reference = base / "reference"
    shutil.copytree(template, reference)
    report = QA(reference, embedder=FakeEmbedder()).index([docs])
    assert (len(report.added), len(report.updated), len(report.removed)) == (13, 10, 5), report
    new = checked_signature(reference)
    assert set(old) != set(new)
    runs, timings = [], []
    for i in range(2):
        counts_file = base / f"calls{i}.json"
        run = run_child(base / f"calibrate{i}", template, docs, env={"CRASH_COUNT": str(counts_file)})
        assert run.returncode == 0, run.stderr[-3000:]
        assert checked_signature(run.index) == new  # the child does what the library does
        runs.append(run)
        timings.append(json.loads(counts_file.read_text(encoding="utf-8")))
    # The second run: the first one pays for cold caches.
    seconds, commit_at = runs[1].seconds, timings[1]["first"]["sqlite_commit"]
    return CrashWorld(docs, template, old, new, seconds, commit_at, timings[-1]["calls"])


def crash_trial(world: CrashWorld, workdir: Path, *, kill_after: float | None = None,
                crash_at: str | None = None) -> tuple[str, float]:
    """One run of the child, killed; ("old" | "new" | "finished" when the kill came too late, seconds run)."""
    run = run_child(workdir, world.template, world.docs, kill_after=kill_after,
                    env={"CRASH_AT": crash_at} if crash_at else None)
    killed = run.returncode == -signal.SIGKILL
    if crash_at is not None:
        assert killed, f"{crash_at}: the child was not killed (exit {run.returncode}): {run.stderr[-3000:]}"
    elif not killed:
        assert run.returncode == 0, run.stderr[-3000:]
    # Readable, whole, and all old or all new.
    signature = checked_signature(run.index)
    assert signature in (world.old, world.new), differences(signature, world.old, world.new)
    state = "old" if signature == world.old else "new"
    # A normal run then finishes the job and leaves nothing but the live generation.
    QA(run.index, embedder=FakeEmbedder()).index([world.docs])
    assert checked_signature(run.index) == world.new
    generation = manifest_of(run.index)["generation"]
    assert generation == 2
    assert sorted(p.name for p in run.index.iterdir()) == generation_names(run.index)
    shutil.rmtree(workdir)
    return (state if killed else "finished"), run.seconds


def random_kills(world: CrashWorld, tmp_path: Path, kills: int) -> Counter:
    """SIGKILL the child at random moments: every other one anywhere in the run, the rest in its last
    part, from just before the commit begins (a commit is a small part of a run; uniform moments
    alone would rarely land in it). Moments are fractions of the run's length, which is re-measured
    whenever a run finishes before its kill (the machine may have sped up since the calibration)."""
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    tries = 0
    length, commit = world.seconds, world.commit_at / world.seconds
    while outcomes["old"] + outcomes["new"] < kills:
        tries += 1
        assert tries <= 6 * kills, f"the child finished before most kills: {outcomes}"
        fraction = rng.uniform(0.0 if tries % 2 else 0.9 * commit, 1.05)
        state, seconds = crash_trial(world, tmp_path / f"trial{tries}", kill_after=fraction * length)
        outcomes[state] += 1
        if state == "finished":
            length = seconds
    survived = outcomes["old"] + outcomes["new"]
    print(
        f"\ncrash safety: {survived}/{survived} runs SIGKILLed at random moments survived (a run takes "
        f"{world.seconds * 1000:.0f} ms, its commit begins at {world.commit_at * 1000:.0f} ms): "
        f"{outcomes['old']} opened as the old documents, {outcomes['new']} as the new; "
        f"{outcomes['finished']} more runs finished before their kill"
    )
    return outcomes


def test_sigkill_at_random_moments_leaves_the_old_or_the_new_index(crash_world, tmp_path):
    outcomes = random_kills(crash_world, tmp_path, kills=5)
    assert outcomes["old"] + outcomes["new"] >= 5


@pytest.mark.slow
def test_sigkill_at_many_random_moments(crash_world, tmp_path):
    outcomes = random_kills(crash_world, tmp_path, kills=60)
    assert outcomes["old"] + outcomes["new"] >= 60


# Named kill points: the writer's steps, from the first parse to the removal of the old files.
# "N" counts calls in the indexer process; the full sweep in the slow test covers every call.
KILL_POINTS = [
    "add_document:5:after",     # half-way through storing documents
    "sqlite_commit:1:after",    # the new catalog is committed, no vectors written
    "write_index:1:torn",       # the passage vectors half written
    "json_dump:1:torn",         # the staged manifest half written
    "os_replace:1",             # everything staged; the manifest not yet replaced
    "os_replace:1:after",       # the commit point passed; the old files still there
    "unlink:1:after",           # one file of the old generation removed
]


@pytest.mark.parametrize("crash_at", KILL_POINTS)
def test_sigkill_at_a_named_step_leaves_the_old_or_the_new_index(crash_world, tmp_path, crash_at):
    state, _ = crash_trial(crash_world, tmp_path / "trial", crash_at=crash_at)
    before_commit = KILL_POINTS.index(crash_at) < KILL_POINTS.index("os_replace:1:after")
    assert state == ("old" if before_commit else "new")


def every_kill_point(calls: dict) -> list[str]:
    points = []
    for step, count in sorted(calls.items()):
        picks = sorted({1, count, *np.linspace(1, count, 8).round().astype(int).tolist()}) if count else []
        for n in picks:
            moments = ["before", "after"] + (["torn"] if step in ("write_index", "json_dump") else [])
            points += [f"{step}:{n}:{moment}" for moment in moments]
    return points


@pytest.mark.slow
def test_sigkill_at_every_named_step(crash_world, tmp_path):
    points = every_kill_point(crash_world.calls)
    assert len(points) >= 50
    outcomes = Counter()
    for number, point in enumerate(points):
        outcomes[crash_trial(crash_world, tmp_path / f"trial{number}", crash_at=point)[0]] += 1
    print(f"\ncrash safety: {len(points)}/{len(points)} named kill points survived "
          f"({outcomes['old']} old, {outcomes['new']} new); steps and calls: {crash_world.calls}")
    assert outcomes["old"] and outcomes["new"]


def test_a_killed_indexer_does_not_leave_the_index_locked(crash_world, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(crash_world.template, index)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRASH_")}
    env.update(CRASH_HANG_PARSE="1", CRASH_AT="parser_started:1:after")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(index), str(crash_world.docs)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # not communicate(): the orphaned parser keeps the pipe open
            lines.append(line)
            if line.startswith("parser "):
                break
        assert proc.wait(timeout=30) == -signal.SIGKILL, lines
        assert checked_signature(index) == crash_world.old
        QA(index, embedder=FakeEmbedder()).index([crash_world.docs])  # the indexer is dead: this must go ahead
        assert checked_signature(index) == crash_world.new
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned parser child, still in the child's group
        except ProcessLookupError:
            pass
        proc.wait()
        proc.stdout.close()


# =========================================================================================
# 2. Corruption (test_store.py covers a flipped middle byte and a half-truncated file)
# =========================================================================================


@pytest.fixture
def indexed(fake_qa, corpus):
    report = fake_qa.index([corpus])
    assert len(report.added) == len(CORPUS)
    return fake_qa


def assert_corrupt_with_rebuild_hint(index: Path) -> str:
    with pytest.raises(IndexCorrupt) as info:
        QA(index, embedder=FakeEmbedder()).ask(PROBE)
    message = str(info.value)
    assert one_line(message), message
    assert "qa index" in message, f"no rebuild hint in: {message}"
    return message


EDGE_DAMAGE = {
    "empty": lambda data: b"",
    "last-byte-dropped": lambda data: data[:-1],
    "first-byte-flipped": lambda data: bytes([data[0] ^ 0xFF]) + data[1:],
    "last-byte-flipped": lambda data: data[:-1] + bytes([data[-1] ^ 0x01]),
    "one-byte-appended": lambda data: data + b"\n",
}


@pytest.mark.parametrize("damage", list(EDGE_DAMAGE))
@pytest.mark.parametrize("key", ["catalog", "passages", "sentences", "manifest"])
def test_damage_at_the_edges_of_a_file_is_detected(indexed, key, damage):
    path = index_file(indexed.index_dir, key)
    data = path.read_bytes()
    damaged = EDGE_DAMAGE[damage](data)
    if key == "manifest" and damage == "one-byte-appended":
        # JSON allows a trailing newline: the manifest means the same, so the index must just work
        path.write_bytes(damaged)
        assert QA(indexed.index_dir, embedder=FakeEmbedder()).ask(PROBE).to_json() == indexed.ask(PROBE).to_json()
        return
    path.write_bytes(damaged)
    assert_corrupt_with_rebuild_hint(indexed.index_dir)


def flipped_manifests(original: bytes, every_bit: bool, rng: random.Random):
    for at in range(len(original)):
        bits = range(8) if every_bit else [rng.randrange(8)]
        for bit in bits:
            data = bytearray(original)
            data[at] ^= 1 << bit
            yield at, bit, bytes(data)


def manifest_flip_sweep(indexed, every_bit: bool) -> Counter:
    """Flip bits of the manifest one at a time; the index must fail loudly or answer exactly as before."""
    index = indexed.index_dir
    path = index / "manifest.json"
    original = path.read_bytes()
    expected = (indexed.ask(PROBE, k=5).to_json(), [d.path for d in indexed.documents()])
    outcomes: Counter = Counter()
    for at, bit, data in flipped_manifests(original, every_bit, random.Random(SEED)):
        path.write_bytes(data)
        try:
            qa = QA(index, embedder=FakeEmbedder())
            got = (qa.ask(PROBE, k=5).to_json(), [d.path for d in qa.documents()])
        except StoreError as exc:
            assert one_line(str(exc)), (at, bit, str(exc))
            outcomes[type(exc).__name__] += 1
            continue
        except Exception as exc:  # loud, if not tidy: test_manifest_missing_a_field_... pins these
            outcomes[f"raw {type(exc).__name__}"] += 1
            continue
        assert got == expected, f"a flip of bit {bit} at byte {at} changed the answer: {data[max(0, at - 30):at + 30]!r}"
        outcomes["same answer"] += 1
    path.write_bytes(original)
    print(f"\nmanifest bit flips: {sum(outcomes.values())} tried: {dict(outcomes)}")
    return outcomes


def test_manifest_bit_flips_never_change_an_answer_silently(indexed):
    outcomes = manifest_flip_sweep(indexed, every_bit=False)
    assert outcomes["IndexCorrupt"] > 0 and sum(outcomes.values()) == len((indexed.index_dir / "manifest.json").read_bytes())


@pytest.mark.slow
def test_every_single_bit_flip_of_the_manifest(indexed):
    outcomes = manifest_flip_sweep(indexed, every_bit=True)
    assert outcomes["IndexCorrupt"] > 0


def test_every_truncation_of_the_manifest_is_corrupt(indexed):
    path = indexed.index_dir / "manifest.json"
    original = path.read_bytes()
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(IndexCorrupt) as info:
            QA(indexed.index_dir, embedder=FakeEmbedder()).documents()
        assert one_line(str(info.value)) and "qa index" in str(info.value)


def _drop(manifest: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]


@pytest.mark.parametrize(
    "change",
    ["files", "checksums", "model", "counts", "files.live", "checksums.live", "counts.sentences",
     "model.dimension", "files=list", "model=null", "segments", "next_ids", "segments.0.checksums",
     "segments.0.files.passages", "segments.0.ids"],
)
def test_manifest_missing_a_field_is_index_corrupt(indexed, change):
    index = indexed.index_dir
    m = manifest_of(index)
    if change == "files=list":
        m["files"] = list(m["files"].values())
    elif change == "model=null":
        m["model"] = None
    else:
        _drop(m, change)
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    assert_corrupt_with_rebuild_hint(index)


def _counts_off(index: Path) -> None:
    m = manifest_of(index)
    m["counts"]["passages"] += 1
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def _dimension_off(index: Path) -> None:
    m = manifest_of(index)
    m["model"]["dimension"] = 65
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")


def _file_missing(index: Path) -> None:
    index_file(index, "passages").unlink()


def _format_old(index: Path) -> None:
    m = manifest_of(index)
    m["format"] = 1
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")




@pytest.mark.parametrize(
    "damage",
    [
        _file_missing,
        _format_old,
        pytest.param(_counts_off),
        pytest.param(_dimension_off),
    ],
    ids=["file-missing", "old-format", "counts-off", "dimension-off"],
)
def test_every_index_corrupt_message_says_how_to_rebuild(indexed, damage):
    damage(indexed.index_dir)
    assert_corrupt_with_rebuild_hint(indexed.index_dir)


def test_manifest_naming_files_of_another_generation(indexed, corpus):
    index = indexed.index_dir
    first = manifest_of(index)
    saved = {name: (index / name).read_bytes() for name in generation_names(index) if name != ".lock"}
    first_answer = indexed.ask(PROBE, k=5).to_json()
    (corpus / "alpha.txt").write_text("The gates were tested again in 2020 after the storm.\n", encoding="utf-8")
    indexed.index([corpus])
    second = manifest_of(index)
    assert second["generation"] == 2 and not (index / first["files"]["live"]).exists()
    assert [s["number"] for s in second["segments"]] == [1, 2]
    second_bytes = (index / "manifest.json").read_bytes()

    # The second manifest names the first generation's live catalog, put back beside it: its checksum fails.
    (index / first["files"]["live"]).write_bytes(saved[first["files"]["live"]])
    wrong = json.loads(second_bytes)
    wrong["files"]["live"] = first["files"]["live"]
    (index / "manifest.json").write_text(json.dumps(wrong), encoding="utf-8")
    assert "checksum" in assert_corrupt_with_rebuild_hint(index)
    (index / first["files"]["live"]).unlink()
    # ... or names the first segment's files where its second segment's are: their checksums fail.
    for key in ("catalog", "passages", "sentences"):
        wrong = json.loads(second_bytes)
        wrong["segments"][1]["files"][key] = first["segments"][0]["files"][key]
        (index / "manifest.json").write_text(json.dumps(wrong), encoding="utf-8")
        assert "checksum" in assert_corrupt_with_rebuild_hint(index)

    # The first manifest, restored alone, names a live catalog that is gone.
    (index / "manifest.json").write_text(json.dumps(first), encoding="utf-8")
    assert "missing" in assert_corrupt_with_rebuild_hint(index)

    # The whole first generation restored is a valid, older index; the next writer clears the newer files.
    for name, data in saved.items():
        (index / name).write_bytes(data)
    assert QA(index, embedder=FakeEmbedder()).ask(PROBE, k=5).to_json() == first_answer
    QA(index, embedder=FakeEmbedder()).index([corpus])
    assert sorted(p.name for p in index.iterdir()) == generation_names(index)
    assert checked_signature(index)["docs/alpha.txt"][0].startswith("The gates were tested again")


class RolledFake(FakeEmbedder):
    """Same name, dimension and splitting as the fake model, other vectors."""

    def encode(self, texts, batch_size=32, progress=False):
        return np.ascontiguousarray(np.roll(super().encode(texts), 7, axis=1))


def _twin_index(tmp_path: Path, name: str, embedder, texts: dict[str, str]) -> Path:
    docs = tmp_path / name / "docs"
    for file, text in texts.items():
        (docs / file).parent.mkdir(parents=True, exist_ok=True)
        (docs / file).write_text(text, encoding="utf-8")
    QA(tmp_path / name / "index", embedder=embedder).index([docs])
    return tmp_path / name / "index"


@pytest.mark.parametrize("key", ["passages", "sentences", "catalog"])
def test_a_file_swapped_in_from_another_index_with_the_same_counts_fails_its_checksum(tmp_path, key):
    ours = _twin_index(tmp_path, "ours", FakeEmbedder(), CORPUS)
    if key == "catalog":  # same structure, one word different
        other_texts = {**CORPUS, "alpha.txt": CORPUS["alpha.txt"].replace("finished", "complete")}
        theirs = _twin_index(tmp_path, "theirs", FakeEmbedder(), other_texts)
    else:
        theirs = _twin_index(tmp_path, "theirs", RolledFake(), CORPUS)
    assert manifest_of(ours)["counts"] == manifest_of(theirs)["counts"]
    checksum = lambda index: manifest_of(index)["segments"][0]["checksums"][key]  # noqa: E731
    assert checksum(ours) != checksum(theirs)
    before = QA(ours, embedder=FakeEmbedder()).ask(PROBE, k=5).to_json()
    original = index_file(ours, key).read_bytes()

    def content(snapshot):
        if key == "catalog":
            return snapshot.document_text("docs/alpha.txt")
        vectors = snapshot.passage_vectors if key == "passages" else snapshot.sentence_vectors
        return vectors.vectors(list(range(1, len(vectors) + 1)))

    mine = open_snapshot(ours)
    expected = content(mine)
    mine.close()
    shutil.copyfile(index_file(theirs, key), index_file(ours, key))

    # Without checksums the swap would go unnoticed: the file loads, the counts agree, the content differs.
    unverified = open_snapshot(ours, verify=False)
    try:
        swapped = content(unverified)
        assert (swapped != expected) if key == "catalog" else not np.allclose(swapped, expected)
    finally:
        unverified.close()
    assert "checksum" in assert_corrupt_with_rebuild_hint(ours)
    index_file(ours, key).write_bytes(original)
    assert QA(ours, embedder=FakeEmbedder()).ask(PROBE, k=5).to_json() == before


def test_manifest_naming_a_file_outside_the_index_folder_is_corrupt(indexed, tmp_path):
    index = indexed.index_dir
    outside = tmp_path / "outside" / "catalog.sqlite"
    outside.parent.mkdir()
    shutil.copyfile(index_file(index, "catalog"), outside)
    m = manifest_of(index)
    m["segments"][0]["files"]["catalog"] = str(outside)
    (index / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    try:
        with pytest.raises(IndexCorrupt):
            QA(index, embedder=FakeEmbedder()).documents()
    finally:
        try:
            QA(index, embedder=FakeEmbedder()).remove(["alpha.txt"])
        except StoreError:
            pass
        # whatever the outcome, a writer must never delete a file outside its folder
        assert outside.exists(), "the writer deleted a file outside the index folder"


# =========================================================================================
# 3. Readers during writes; two writers
# =========================================================================================

SWAP_QUESTIONS = [
    "tidal barrier gates tested",
    "river level near the lighthouse",
    "keepers counted ships at dawn",
    "harbour log series",
    "which set recorded the most ships",
]


def swap_text(letter: str, i: int) -> str:
    return (
        f"Harbour log {letter}{i}. The tidal barrier gates were tested on day {i} of series {letter}.\n\n"
        f"The river level rose {i + 3} centimetres near the lighthouse and the harbour wall.\n\n"
        f"Keepers of set {letter} counted {i * 3} ships at dawn and wrote about the barrier gates.\n"
    )


SWAP_TEXTS = {f"docs/{letter}_{i}.txt": swap_text(letter, i) for letter in "ab" for i in range(8)}


def write_set(docs: Path, letter: str) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    for path in docs.glob("*.txt"):
        if not path.name.startswith(letter):
            path.unlink()
    for i in range(8):
        path = docs / f"{letter}_{i}.txt"
        if not path.exists():
            path.write_text(SWAP_TEXTS[f"docs/{letter}_{i}.txt"], encoding="utf-8")


def letters_of(answer) -> set[str]:
    return {Path(hit.passage.doc).name[0] for hit in answer.hits}


def exact(answer) -> bool:
    return all(SWAP_TEXTS[h.passage.doc][h.passage.start : h.passage.end] == h.passage.text for h in answer.hits)


def is_open_race(exc: BaseException) -> bool:
    """The failure pinned by test_a_reader_opening_while_a_writer_commits_gets_an_answer."""
    if isinstance(exc, IndexCorrupt):
        return "is missing" in str(exc) or "cannot read vectors" in str(exc)
    return isinstance(exc, (FileNotFoundError, sqlite3.OperationalError))


def readers_during_writes(tmp_path: Path, swaps: int) -> dict:
    docs = tmp_path / "docs"
    index = tmp_path / "index"
    write_set(docs, "a")
    QA(index, embedder=FakeEmbedder()).index([docs])
    done = threading.Event()
    failures: list[str] = []
    races: Counter = Counter()
    seen: Counter = Counter()
    commits = []
    answers = [0]  # answered questions, all readers together

    def writer() -> None:
        qa = QA(index, embedder=FakeEmbedder())
        try:
            for n in range(swaps):
                letter = "b" if n % 2 == 0 else "a"
                write_set(docs, letter)
                report = qa.index([docs])
                assert len(report.added) == 8 and len(report.removed) == 8, report
                commits.append(letter)
                # Let the readers answer a few questions before the next swap, so every
                # generation is read, some of them while the next commit is under way.
                target, deadline = answers[0] + 3, time.monotonic() + 10
                while answers[0] < target and time.monotonic() < deadline:
                    time.sleep(0.001)
        except BaseException as exc:
            failures.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(name: str, shared: QA | None) -> None:
        n = 0
        while not done.is_set() or n < 20:
            question = SWAP_QUESTIONS[n % len(SWAP_QUESTIONS)]
            n += 1
            try:
                answer = (shared or QA(index, embedder=FakeEmbedder())).ask(question, k=6)
            except Exception as exc:
                if is_open_race(exc):
                    races[type(exc).__name__] += 1
                else:
                    failures.append(f"{name}: {exc!r}")
                continue
            letters = letters_of(answer)
            if len(letters) != 1:
                failures.append(f"{name}: a mixture of both corpora: {[h.passage.doc for h in answer.hits]}")
            if not exact(answer):
                failures.append(f"{name}: a passage that is not its document's text")
            seen["".join(sorted(letters))] += 1
            answers[0] += 1

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=("shared reader", QA(index, embedder=FakeEmbedder())))]
    threads += [threading.Thread(target=reader, args=("fresh reader", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    print(f"\nreaders during writes: {len(commits)} commits, answers {dict(seen)}, "
          f"open races {dict(races)}")
    assert failures == [], failures[:10]
    assert not races, races  # a reader opening during a commit retries with the new manifest
    assert len(commits) == swaps
    assert seen["a"] > 0 and seen["b"] > 0, seen  # the readers saw both corpora
    assert checked_signature(index)  # whole at the end
    return {"seen": seen, "races": races}


def test_readers_during_writes_see_one_corpus_at_a_time(tmp_path):
    readers_during_writes(tmp_path, swaps=12)


@pytest.mark.slow
def test_readers_during_many_writes(tmp_path):
    readers_during_writes(tmp_path, swaps=120)


@pytest.mark.parametrize("moment", ["after-manifest", "before-checksum", "before-vectors"])
def test_a_reader_opening_while_a_writer_commits_gets_an_answer(tmp_path, monkeypatch, moment):
    docs, index = tmp_path / "docs", tmp_path / "index"
    write_set(docs, "a")
    QA(index, embedder=FakeEmbedder()).index([docs])
    armed = [True]

    def commit_now() -> None:
        if armed[0]:
            armed[0] = False
            write_set(docs, "b")
            QA(index, embedder=FakeEmbedder()).index([docs])

    if moment == "after-manifest":
        real = snapshot_module.read_manifest

        def read_manifest(folder):
            manifest = real(folder)
            commit_now()
            return manifest

        monkeypatch.setattr(snapshot_module, "read_manifest", read_manifest)
    elif moment == "before-checksum":
        real_check = snapshot_module.check_file  # the checksum check of each file the manifest names
        monkeypatch.setattr(snapshot_module, "check_file",
                            lambda path, expected, verify=True: (commit_now(), real_check(path, expected, verify=verify))[1])
    else:
        real_load = VectorIndex.load.__func__
        monkeypatch.setattr(VectorIndex, "load", classmethod(lambda cls, *a: (commit_now(), real_load(cls, *a))[1]))

    answer = QA(index, embedder=FakeEmbedder()).ask("tidal barrier gates", k=6)
    assert not armed[0]  # the commit did happen inside the reader's open
    assert len(letters_of(answer)) == 1 and exact(answer)


def test_a_second_writer_is_refused_and_the_index_stays_whole(tmp_path, monkeypatch):
    monkeypatch.delenv("QA_MODEL", raising=False)
    docs, index = tmp_path / "docs", tmp_path / "index"
    write_set(docs, "a")
    QA(index, embedder=FakeEmbedder()).index([docs])
    old = checked_signature(index)
    write_set(docs, "b")
    entered, release = threading.Event(), threading.Event()
    results, errors = [], []

    class Blocking(FakeEmbedder):
        def encode(self, texts, batch_size=32, progress=False):
            entered.set()
            release.wait(30)
            return super().encode(texts)

    def first_writer() -> None:
        try:
            results.append(QA(index, embedder=Blocking()).index([docs]))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert entered.wait(30), errors
        with pytest.raises(IndexLocked) as info:
            QA(index, embedder=FakeEmbedder()).index([docs])
        message = str(info.value)
        assert one_line(message) and str(index) in message and "try again" in message, message
        # the CLI says it in one line, no traceback
        result = CliRunner().invoke(cli, ["index", str(docs), "--index", str(index)])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip() == f"Error: {message}", result.stderr
        # readers are not blocked, and see the committed generation, whole
        assert checked_signature(index) == old
    finally:
        release.set()
        thread.join(30)
    assert errors == [] and len(results) == 1 and len(results[0].added) == 8
    new = checked_signature(index)
    assert set(new) == {f"docs/b_{i}.txt" for i in range(8)}
    assert sorted(p.name for p in index.iterdir()) == generation_names(index)
    report = QA(index, embedder=FakeEmbedder()).index([docs])  # the second writer may go now
    assert len(report.unchanged) == 8 and checked_signature(index) == new


# =========================================================================================
# 4. Hostile questions
# =========================================================================================

HOSTILE_QUESTIONS = {
    "empty": "",
    "whitespace": " \t\n\r \u00a0\u2003 ",
    "20000-chars": ("When will the tidal barrier be finished? " * 500)[:20000],
    "20000-one-word": "a" * 20000,
    "nul": "barrier\x00finished",
    "nul-only": "\x00",
    "ansi-escape": "\x1b[31mWhen will the barrier be finished?\x1b[0m",
    "rtl-override": "\u202eWhen will the barrier be finished?\u202c",
    "bidi-and-zero-width": "\u200b\u200c\u200d\ufeff\u2066barrier\u2069",
    "fts-quote": '"',
    "fts-near": "NEAR(a b)",
    "fts-and": "a AND",
    "fts-star": "*",
    "fts-colon": ":",
    "fts-column": "col:x",
    "fts-caret": "^",
    "fts-mixed": 'text:"barrier" AND (NEAR(gates tidal, 2) OR ^cost*)',
    "sql": "'; DROP TABLE passages; --",
    "script": "<script>alert(1)</script>",
    "img-onerror": '<img src=x onerror="alert(1)">',
    "emoji": "🌊🏗️ When is the barrier finished? 🤔",
    "emoji-only": "🌊🌊🌊",
    "hebrew": "מתי יסתיים המחסום?",
    "arabic": "متى سينتهي الحاجز؟",
    "lone-surrogate": "barrier \ud800 finished",
    "combining-marks": "e\u0301" * 1000,
    "many-lines": "\n".join(["barrier"] * 2000),
    "format-string": "{0} %s %n {__class__}",
}


@pytest.fixture(scope="module")
def seed_qa(article_index, real_embedder) -> QA:
    return QA(article_index, embedder=real_embedder)


def seed_texts() -> dict[str, str]:
    return {f"articles/{p.name}": p.read_bytes().decode("utf-8") for p in sorted(ARTICLES_DIR.glob("*.txt"))}


@pytest.mark.model
@pytest.mark.parametrize("name", list(HOSTILE_QUESTIONS))
def test_hostile_question_gets_results_or_a_query_error(seed_qa, name):
    # Hybrid runs both the lexical and the dense search; test_store.py tries each retriever alone.
    texts = seed_texts()
    try:
        answer = seed_qa.ask(HOSTILE_QUESTIONS[name], k=3)
    except QueryError as exc:
        assert one_line(str(exc)), str(exc)
        return
    assert answer.hits, "the dense search always finds something in a non-empty index"
    for hit in answer.hits:
        p = hit.passage
        assert texts[p.doc][p.start : p.end] == p.text
        assert texts[p.doc][hit.highlight_start : hit.highlight_end] == hit.highlight


@pytest.fixture
def cli_model(monkeypatch, real_embedder, tmp_path):
    """The CLI's model loads are served by the session's real model; no user settings leak in."""
    import embeddings

    monkeypatch.delenv("QA_MODEL", raising=False)
    monkeypatch.delenv("QA_INDEX", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    original = embeddings.load_embedder
    monkeypatch.setattr(embeddings, "load_embedder", lambda name=None: real_embedder
                        if name in (None, real_embedder.name) else original(name))
    return real_embedder


@pytest.mark.model
@pytest.mark.parametrize("name", list(HOSTILE_QUESTIONS))
def test_hostile_question_on_the_command_line(cli_model, article_index, name):
    texts = seed_texts()
    result = CliRunner().invoke(cli, ["ask", HOSTILE_QUESTIONS[name], "--index", str(article_index), "-k", "2", "--json"])
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    else:
        answer = json.loads(result.stdout)
        assert answer["results"]
        for r in answer["results"]:
            assert texts[r["doc"]][r["start"] : r["end"]] == r["text"]


# -- property-based, with the fake model --------------------------------------------------

FTS_PIECES = ['"', "'", "NEAR", "NEAR(", "AND", "OR", "NOT", "*", ":", "^", "(", ")", "{", "}", "-", "+", ",",
              "text:", "section:", "passages_fts", "\x00", "\x1b", "\u202e", "gates", "tidal", "barrier", "violins",
              "é", "ß", "İ", "ǅ", "²", "_", "🌊"]
QUESTIONS = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=300),
    st.lists(st.sampled_from(FTS_PIECES), max_size=30).map("".join),
    st.lists(st.sampled_from(FTS_PIECES), max_size=30).map(" ".join),
)


@pytest.fixture(scope="module")
def fake_index(tmp_path_factory) -> QA:
    root = tmp_path_factory.mktemp("property")
    for name, text in CORPUS.items():
        (root / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "docs" / name).write_text(text, encoding="utf-8")
    qa = QA(root / "index", embedder=FakeEmbedder())
    qa.index([root / "docs"])
    return qa


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(question=QUESTIONS, k=st.integers(min_value=1, max_value=8),
       retriever=st.sampled_from(["hybrid", "lexical", "dense"]))
def test_any_question_gets_exact_hits_or_a_query_error(fake_index, question, k, retriever):
    try:
        answer = fake_index.ask(question, k=k, retriever=retriever)
    except QueryError as exc:
        assert one_line(str(exc))
        return
    assert len(answer.hits) <= k
    for hit in answer.hits:
        p = hit.passage
        text = CORPUS[p.doc.removeprefix("docs/")]
        assert text[p.start : p.end] == p.text
        assert p.start <= hit.highlight_start < hit.highlight_end <= p.end
        assert text[hit.highlight_start : hit.highlight_end] == hit.highlight


FTS_ROWS = ["The tidal barrier gates", "Violins and cellos", "Crème brûlée à Zürich", "straße ǅungla İstanbul", "x_y 2²"]
FTS_WORDS = ["tidal", "cellos", "brûlée", "straße", "x_y"]  # one word of each row, none a stop word


@pytest.fixture(scope="module")
def fts_db():
    """The index's own FTS5 table (schema and bm25 weights from qa.storage), in memory."""
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.executescript(SEGMENT_SCHEMA)
    db.execute("INSERT INTO documents(sha256, format, text) VALUES ('x', 'text', 'x')")
    for n, text in enumerate(FTS_ROWS, start=1):
        db.execute("INSERT INTO passages(id, doc_id, seq, paragraph, window, windows, start, end, text) "
                   "VALUES (?, 1, ?, ?, 1, 1, 0, ?, ?)", (n, n, n, len(text), text))
        db.execute("INSERT INTO passages_fts(rowid, section, text) VALUES (?, NULL, ?)", (n, text))
    db.commit()
    yield db
    db.close()


def fts_match(db, match: str) -> list[int]:
    sql = f"SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY {snapshot_module._BM25} LIMIT 10"
    return [row[0] for row in db.execute(sql, (match,))]


@settings(max_examples=300, deadline=None)
@given(question=QUESTIONS)
def test_fts_query_output_is_always_valid_fts5(fts_db, question):
    match = fts_query(question)
    if match is None:
        assert not re.search(r"\w", question.lower())
        return
    fts_match(fts_db, match)  # never an sqlite3.OperationalError


@settings(max_examples=150, deadline=None)
@given(before=st.text(max_size=40), row=st.integers(min_value=0, max_value=len(FTS_ROWS) - 1),
       after=st.text(max_size=40))
def test_fts_query_finds_a_word_among_any_junk(fts_db, before, row, after):
    word = FTS_WORDS[row]
    match = fts_query(f"{before} {word} {after}")
    assert match is not None
    assert row + 1 in fts_match(fts_db, match)


# =========================================================================================
# 5. The web page
# =========================================================================================


@pytest.fixture(scope="module")
def bench_load():
    """bench/load.py as a module: the test and the benchmark share one HTTP client."""
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def seed_server(seed_qa, bench_load):
    app, base = bench_load.serve(seed_qa)
    try:
        yield base
    finally:
        app.close()


def raw_get(base: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would normalise ``..``)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


FILE_TARGETS = [
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=/../../../../etc/passwd",
    "/gradio_api/file=%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/gradio_api/file=..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/gradio_api/file=%2fetc%2fpasswd",
    "/gradio_api/file=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "/gradio_api/file=/tmp/gradio/../../etc/passwd",
    "/gradio_api/file=/proc/self/environ",
    "/file=/etc/passwd",
    "/file=../../../../etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/assets/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/svelte/../../../../../../etc/passwd",
    "/gradio_api/proxy=file:///etc/passwd",
    "/gradio_api/file={catalog}",
    "/file={catalog}",
    "/gradio_api/file={manifest}",
    "/gradio_api/file={pyproject}",
    "/gradio_api/file=pyproject.toml",
    "/gradio_api/file={seed}",
    "/gradio_api/file=articles/000_kestrel_bay_tidal_barrier.txt",
]


@pytest.mark.model
@pytest.mark.parametrize("template", FILE_TARGETS)
def test_no_file_outside_the_app_is_served(seed_server, article_index, template):
    import httpx

    paths = {
        "catalog": index_file(article_index, "catalog"),
        "manifest": article_index / "manifest.json",
        "pyproject": ROOT / "pyproject.toml",
        "seed": ARTICLES_DIR / "000_kestrel_bay_tidal_barrier.txt",
    }
    target = template.format(**{k: str(v) for k, v in paths.items()})
    secrets = [b"root:x:0:0", b"PATH=", b"SQLite format 3", b'"checksums"', b"[project]", b"Kestrel Bay"]
    responses = [raw_get(seed_server, target)]
    response = httpx.get(seed_server + target, timeout=30)  # as a client normalises it
    responses.append((response.status_code, response.content))
    for status, body in responses:
        assert not any(secret in body for secret in secrets), (target, status, body[:200])
        assert status >= 400, (target, status, body[:200])


@pytest.mark.model
def test_the_page_config_names_no_local_path(seed_server, article_index):
    import httpx

    for route in ("/config", "/gradio_api/info", "/"):
        body = httpx.get(seed_server + route, timeout=30).text
        assert str(article_index) not in body and str(ROOT) not in body, route


MARKUP = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
MARKUP_NAME = "review <img src=x onerror=alert(3)>.txt"
MARKUP_DOC = (
    "Security review notes\n\n"
    f"The review page printed {MARKUP} and then {IMG} as plain text when the reviewer opened it.\n\n"
    "Nothing else was printed by the review page on that day.\n"
)


@pytest.fixture(scope="module")
def markup_server(article_index, real_embedder, bench_load, tmp_path_factory):
    base = tmp_path_factory.mktemp("markup")
    index = base / "index"
    shutil.copytree(article_index, index)
    (base / "docs").mkdir()
    (base / "docs" / MARKUP_NAME).write_text(MARKUP_DOC, encoding="utf-8")
    qa = QA(index, embedder=real_embedder)
    assert qa.index([base / "docs"]).added == [f"docs/{MARKUP_NAME}"]
    app, url = bench_load.serve(qa)
    try:
        yield app, url, qa
    finally:
        app.close()


# Tags the page's own HTML may use; none of them runs code or loads anything.
SAFE_TAGS = {"a", "b", "br", "code", "details", "div", "em", "li", "mark", "p", "pre", "small", "span", "strong",
             "summary", "ul"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


def assert_escaped(page: str) -> None:
    """Markup from a document is shown as text: escaped, never a tag or an attribute."""
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" not in page.lower() and "<img" not in page.lower()
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert {tag for tag, _ in parser.tags} <= SAFE_TAGS, {tag for tag, _ in parser.tags}
    for tag, attrs in parser.tags:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert not (value or "").strip().lower().startswith(("javascript:", "data:")), (tag, name, value)
    text = "".join(parser.text)
    assert MARKUP in text and IMG in text  # shown to the reader exactly as written


@pytest.mark.model
def test_document_markup_comes_back_raw_in_json_and_escaped_in_html(markup_server, bench_load):
    import httpx

    from qa.ui import render_source, render_turn

    app, url, qa = markup_server
    question = f"What did the review page print? {IMG}"
    with httpx.Client() as client:
        answer = bench_load.ask_http(client, url, question, 3)
    hit = next(r for r in answer["results"] if r["doc"] == f"docs/{MARKUP_NAME}")
    assert MARKUP in hit["text"] and IMG in hit["text"]  # JSON carries the text as written
    assert MARKUP_DOC[hit["start"] : hit["end"]] == hit["text"]
    page = render_turn(question, answer)
    assert_escaped(page)
    assert html.escape(MARKUP_NAME) in page and MARKUP_NAME not in page
    # the source view shows the whole document, the cited passage marked
    source = render_source(hit["doc"], MARKUP_DOC, hit["start"], hit["end"], hit["citation"])
    assert_escaped(source)
    assert MARKUP_NAME not in source


@pytest.mark.model
def test_fifty_concurrent_ask_calls_all_succeed(seed_server, bench_load):
    result = bench_load.run_load(seed_server, calls=50, concurrency=50, texts=seed_texts())
    print(f"\n50 concurrent /ask: {len(result.errors)} errors, p50 {result.percentile(0.5) * 1000:.0f} ms, "
          f"p95 {result.percentile(0.95) * 1000:.0f} ms, wall {result.wall:.2f} s")
    assert result.errors == []
    assert len(result.latencies) == 50


# =========================================================================================
# 6. Ingest fuzzing
# =========================================================================================


def rezip(data: bytes, mutate_member) -> bytes:
    """A DOCX with one XML member changed, the zip itself still valid."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            body = source.read(info.filename)
            archive.writestr(info.filename, mutate_member(body) if info.filename == "word/document.xml" else body)
    return out.getvalue()


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    """One to three random byte-level changes; the description says which."""
    done = []
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["flip", "flip", "truncate", "insert", "delete", "duplicate", "splice", "zero", "member"])
        n = len(data)
        if op == "flip" and n:
            for _ in range(rng.randint(1, 16)):
                at = rng.randrange(n)
                data = data[:at] + bytes([data[at] ^ rng.randint(1, 255)]) + data[at + 1 :]
        elif op == "truncate" and n:
            data = data[: rng.randrange(n)]
        elif op == "insert":
            at = rng.randint(0, n)
            data = data[:at] + rng.randbytes(rng.randint(1, 512)) + data[at:]
        elif op == "delete" and n:
            at = rng.randrange(n)
            data = data[:at] + data[at + rng.randint(1, 256) :]
        elif op == "duplicate" and n:
            at = rng.randrange(n)
            chunk = data[at : at + rng.randint(1, 1024)]
            to = rng.randint(0, n)
            data = data[:to] + chunk + data[to:]
        elif op == "splice":
            other = rng.choice(others)
            data = data[: rng.randint(0, n)] + other[rng.randint(0, len(other)) :]
        elif op == "zero" and n:
            at = rng.randrange(n)
            size = min(rng.randint(1, 256), n - at)
            data = data[:at] + bytes(size) + data[at + size :]
        elif op == "member" and data[:2] == b"PK":
            try:
                data = rezip(data, lambda body: mutate(rng, body, others)[0])
            except Exception:  # zipfile raises many kinds on a damaged archive
                op += "(zip already broken)"
        done.append(op)
    return data, "+".join(done)


# Slot -> template. Rich formats get more slots: their parsers have more to go wrong.
FUZZ_SLOTS = ["report.pdf", "report.pdf", "manual.docx", "manual.docx", "bees.html", "bees.html", "guide.md",
              "guide.md", "enc_utf8.txt", "enc_utf16.txt", "enc_cp1252.txt", "enc_utf8_bom.txt"]


@pytest.fixture(scope="module")
def fuzz_templates(tmp_path_factory) -> dict[str, bytes]:
    good = gen.build_good(tmp_path_factory.mktemp("fuzz-templates") / "good")
    return {name: (good.root / name).read_bytes() for name in set(FUZZ_SLOTS)}


def fuzz(tmp_path: Path, templates: dict[str, bytes], rounds: int) -> Counter:
    """Index ``rounds`` folders of mutated files into an index that already holds good documents."""
    fake_root = tmp_path / "base"
    for name, text in CORPUS.items():
        (fake_root / "docs" / name).parent.mkdir(parents=True, exist_ok=True)
        (fake_root / "docs" / name).write_text(text, encoding="utf-8")
    good = gen.build_good(fake_root / "good")
    qa = QA(tmp_path / "index", embedder=FakeEmbedder())
    report = qa.index([fake_root / "docs", good.root])
    assert len(report.added) == len(CORPUS) + len(good.good) and not report.skipped
    before = checked_signature(qa.index_dir)

    rng = random.Random(SEED)
    others = list(templates.values())
    folder = tmp_path / "fuzz"
    tally: Counter = Counter()
    for round_ in range(rounds):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        inputs = {}
        for slot, template in enumerate(FUZZ_SLOTS):
            name = f"f{slot:02d}_{template}"
            data, how = mutate(rng, templates[template], others)
            (folder / name).write_bytes(data)
            inputs[name] = how
        try:
            report = qa.index([folder], timeout=5)
        except Exception as exc:  # pragma: no cover - the failure being looked for
            keep = tmp_path / f"failing-round-{round_}"
            shutil.copytree(folder, keep)
            pytest.fail(f"indexing fuzzed files raised {exc!r}; inputs kept in {keep}: {inputs}")
        indexed = {Path(n).name for n in report.added + report.updated + report.unchanged}
        skipped = {Path(s.path).name: s.reason for s in report.skipped}
        assert indexed | set(skipped) == set(inputs) and not indexed & set(skipped), (report, inputs)
        for name, reason in skipped.items():
            assert one_line(reason) and len(reason) < 300, (name, inputs[name], reason)
            tally[f"skipped: {re.sub(r'[0-9]+', 'N', reason)[:60]}"] += 1
        tally["indexed"] += len(indexed)
        tally["inputs"] += len(inputs)
        after = checked_signature(qa.index_dir)  # every document, fuzzed ones included, is exact
        assert all(after.get(d) == v for d, v in before.items())  # the good documents are untouched
    print(f"\ningest fuzzing: {tally['inputs']} mutated files tried in {rounds} rounds, "
          f"{tally['indexed']} indexed, the rest skipped with a reason:")
    for reason, count in sorted(tally.items()):
        if reason.startswith("skipped"):
            print(f"  {count:4d}  {reason}")
    return tally


def test_fuzzed_files_never_break_indexing(tmp_path, fuzz_templates):
    tally = fuzz(tmp_path, fuzz_templates, rounds=3)
    assert tally["inputs"] == 36 and tally["indexed"] > 0


@pytest.mark.slow
def test_fuzzed_files_never_break_indexing_many(tmp_path, fuzz_templates):
    tally = fuzz(tmp_path, fuzz_templates, rounds=35)
    assert tally["inputs"] == 420


def _docx_with_xml(templates, header: bytes, body_from: bytes, body_to: bytes) -> bytes:
    decl = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    return rezip(templates["manual.docx"], lambda xml: xml.replace(decl, header).replace(body_from, body_to))


def test_hostile_documents_are_indexed_or_skipped(tmp_path, fuzz_templates):
    """Hand-made nasty files: entity expansion, external entities, deep nesting, wrong extensions."""
    folder = tmp_path / "nasty"
    folder.mkdir()
    laughs = b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaaaaaaaa">' + b"".join(
        b'<!ENTITY %s "%s">' % (bytes([c]), (b"&%s;" % bytes([c - 1])) * 10) for c in range(ord("b"), ord("h"))
    ) + b"]>"
    files = {
        "laughs.docx": _docx_with_xml(fuzz_templates, laughs, b"Introduction", b"&g;"),
        "xxe.docx": _docx_with_xml(
            fuzz_templates, b'<?xml version="1.0"?><!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
            b"Introduction", b"&x;"),
        "nested.html": b"<html><body>" + b"<div>" * 50000 + b"deep" + b"</div>" * 50000 + b"</body></html>",
        "zip.pdf": fuzz_templates["manual.docx"],
        "pdf.docx": fuzz_templates["report.pdf"],
        "utf16.html": gen.HTML.encode("utf-16"),
        "nul_late.txt": b"A" * 9000 + b"\n\nafter a NUL \x00 here.\n",
        "one_word.txt": b"x" * 100_000,
        "separators.md": "line\u2028sep\u2029para\x85next\r\rcr only\r".encode(),
        "bad_utf16.txt": b"\xff\xfe" + "hi ".encode("utf-16-le") + b"\x00\xd8" + "there".encode("utf-16-le"),
        "bad_utf32.txt": b"\xff\xfe\x00\x00" + b"\x00\x00\x11\x00" * 4,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    qa = QA(tmp_path / "index", embedder=FakeEmbedder())
    report = qa.index([folder], timeout=5)
    indexed = {Path(n).name for n in report.added}
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert indexed | set(skipped) == set(files), report
    assert all(one_line(r) for r in skipped.values()), skipped
    signature = checked_signature(qa.index_dir)
    assert not any("root:" in text for text, _ in signature.values())  # no external entity was read
    assert {"laughs.docx", "xxe.docx", "zip.pdf", "pdf.docx", "bad_utf16.txt", "bad_utf32.txt"} <= set(skipped)
    assert {"utf16.html", "nul_late.txt", "one_word.txt", "separators.md"} <= indexed


class Visits(tuple):
    """A tuple that counts how many items have been visited by iteration (bisect does not iterate)."""

    visited = 0

    def __iter__(self):
        for item in super().__iter__():
            Visits.visited += 1
            yield item


def heading_visits(pairs: int) -> int:
    text = "".join(f"# Section {i}\n\nParagraph {i} says something.\n\n" for i in range(pairs))
    starts = [m.start() for m in re.finditer(r"^# ", text, flags=re.M)]
    headings = Visits(Heading(s, text.index("\n", s), 1, "Section") for s in starts)
    extracted = ExtractedText(text=text, format="markdown", headings=headings)
    Visits.visited = 0
    spans = list(split_passages(text, fake_token_offsets, max_tokens=32,
                                headings=Visits(Span(h.start, h.end) for h in headings)))
    locate(extracted, spans)
    assert len(spans) == pairs
    return Visits.visited


def test_heading_lookups_grow_linearly_with_the_document():
    small, large = heading_visits(300), heading_visits(1200)
    assert large <= 4 * 2 * small, (small, large)  # 4x the document, at most ~8x the work


# -- a commit that merges segments -------------------------------------------------------


@pytest.fixture(scope="module")
def merge_world(tmp_path_factory) -> CrashWorld:
    """An index of the first version built over eight commits (eight segments): the second
    version's commit adds a ninth and so merges neighbouring ones."""
    base = tmp_path_factory.mktemp("merge-crash")
    full = base / "full"
    write_first_version(full)
    docs = base / "docs"
    docs.mkdir()
    template = base / "template"
    names = sorted(p.name for p in full.iterdir())
    for batch in range(8):
        for name in names[batch::8]:
            shutil.copy(full / name, docs / name)
        QA(template, embedder=FakeEmbedder()).index([docs])
    assert len(manifest_of(template)["segments"]) == 8
    old = checked_signature(template)
    write_second_version(docs)
    reference = base / "reference"
    shutil.copytree(template, reference)
    QA(reference, embedder=FakeEmbedder()).index([docs])
    assert len(manifest_of(reference)["segments"]) == 8  # nine, merged down
    new = checked_signature(reference)
    counts_file = base / "calls.json"
    run = run_child(base / "calibrate", template, docs, env={"CRASH_COUNT": str(counts_file)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert checked_signature(run.index) == new
    calls = json.loads(counts_file.read_text(encoding="utf-8"))["calls"]
    return CrashWorld(docs, template, old, new, run.seconds, 0.0, calls)


MERGE_KILL_POINTS = [
    "write_index:2:after",      # the new segment's vectors written, the merge not begun
    "write_index:3:torn",       # the merged segment's passage vectors half written
    "json_dump:1:torn",         # the staged manifest half written
    "os_replace:1",             # everything staged, the manifest not replaced
    "os_replace:1:after",       # the commit point passed; the merged segments' files still there
    "unlink:1:after",           # one of them removed
]


@pytest.mark.parametrize("crash_at", MERGE_KILL_POINTS)
def test_sigkill_during_a_merging_commit_leaves_the_old_or_the_new_index(merge_world, tmp_path, crash_at):
    assert merge_world.calls["write_index"] >= 4  # two for the new segment, two for the merged one
    run = run_child(tmp_path / "trial", merge_world.template, merge_world.docs, env={"CRASH_AT": crash_at})
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    signature = checked_signature(run.index)
    before_commit = MERGE_KILL_POINTS.index(crash_at) < MERGE_KILL_POINTS.index("os_replace:1:after")
    assert signature == (merge_world.old if before_commit else merge_world.new), crash_at
    QA(run.index, embedder=FakeEmbedder()).index([merge_world.docs])
    assert checked_signature(run.index) == merge_world.new
    assert sorted(p.name for p in run.index.iterdir()) == generation_names(run.index)
