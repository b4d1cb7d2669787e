"""Indexing on a Ray cluster: files read, split and embedded by Ray Data actors, committed by the driver.

The driver decides everything a local run decides before the model is needed:
which files are unchanged (size and time, then content hash), which content is
already stored or is already being sent under another path (an alias, never
embedded twice), which files are unreadable. Only the files left are sent, as
rows of names and paths; each actor (``qa.workers.EmbedFiles``) loads the
model once and turns a batch of files into documents with their vectors
(``qa.ingest``'s own reading, splitting and ``embed``). The driver ``store``s
each result into its one ``Writer`` as it arrives and commits once, as locally: a driver killed at any
moment leaves the previous generation, and a worker killed mid-batch is
restarted by Ray and its batch run again (Ray Data's actor pool retries actor
tasks), while the driver keeps the first result of each file only.

Files are read by the workers at the absolute path the driver sees, so every
node must see the same files there (a shared file system or a mounted bucket);
a worker that cannot see a file stops the job with a one-line error rather
than dropping it. Ray is imported only here, and only when a run asks for it.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Sequence

from qa.ingest import IndexReport, Skipped, _existing_files, _progress_bar, _vanished, look, store, unreadable
from qa.read import MAX_FILE_BYTES, PARSE_TIMEOUT, ReadError
from qa.storage import Writer
from qa.workers import ENV_CRASH_ONCE, EmbedFiles, Job, doc_from_json, vectors_from_bytes

logger = logging.getLogger(__name__)

# Settings of the model that the workers must share with the driver's environment.
FORWARDED = ("QA_BACKEND", "QA_PRECISION", "ONEDNN_MAX_CPU_ISA", ENV_CRASH_ONCE)
# Files a batch: small enough that a retried batch costs little, large enough to fill the model's batches.
FILES_PER_BATCH = 64


class ClusterError(Exception):
    """The cluster cannot do the job (unreachable, a worker without the model or the files); one line."""


def index_on_ray(
    paths: Sequence[str | os.PathLike],
    writer: Writer,
    *,
    address: str | None,
    workers: int | None = None,
    progress: bool = False,
    prune: bool = True,
    max_bytes: int = MAX_FILE_BYTES,
    timeout: float = PARSE_TIMEOUT,
) -> IndexReport:
    """``qa.ingest.index_paths`` with the reading, splitting and embedding done on a Ray cluster.

    Same report, same rules, same writer: the caller commits. Raises
    ClusterError (nothing stored) when the cluster cannot be reached, a worker
    lacks the model or cannot see a file, or a file got no result.
    """
    report = IndexReport()
    stored = writer.path_states()
    seen: set[str] = set()
    jobs: dict[str, Job] = {}
    sent: dict[str, str] = {}  # content hash -> name of the file that carries it to the cluster
    waiting: list[tuple[Job, bool]] = []  # same content as a file sent: stored as an alias once that one is
    files = list(_existing_files(paths, report))
    order = {name: at for at, (_, name) in enumerate(files)}
    bar = _progress_bar(len(files), progress)
    try:
        for file, name in files:
            seen.add(name)
            previous = stored.get(name)
            try:
                looked = look(file, name, previous, writer, report, max_bytes=max_bytes)
                if looked is None:
                    bar.update(1)
                    continue
            except (ReadError, OSError) as exc:
                unreadable(file, name, previous, exc, writer, report)
                bar.update(1)
                continue
            stat, _, sha = looked
            job = Job(name, str(file), str(Path(file).resolve()), sha, stat.st_size, stat.st_mtime_ns)
            if writer.has_content(sha):
                _alias(job, previous is not None, writer, report)
                bar.update(1)
            elif sha in sent:
                waiting.append((job, previous is not None))
            else:
                sent[sha] = name
                jobs[name] = job
        outcome: dict[str, tuple[str, str]] = {}
        results = _run(list(jobs.values()), writer, address, workers, max_bytes, timeout) if jobs else (r for r in ())
        try:
            for name, status, message, doc, arrays in results:
                if name in outcome:  # a batch run again after its worker died: its first result stands
                    continue
                if status == "fatal":
                    raise ClusterError(message)
                job, previous = jobs[name], stored.get(name)
                outcome[name] = (status, message)
                if status == "ok":
                    vectors = vectors_from_bytes(arrays)
                    store([doc_from_json(job, doc)], vectors, writer)
                    report.passages_embedded += len(vectors.passages)
                    report.sentences_embedded += len(vectors.sentences)
                    (report.updated if previous else report.added).append(name)
                elif status == "unreadable":
                    unreadable(job.file, name, previous, ReadError(message), writer, report)
                else:  # empty, or changed since the driver read it: the earlier version stays
                    report.skipped.append(Skipped(job.file, message))
                bar.update(1)
        finally:
            results.close()  # leaves the cluster now, not when the generator is collected
        missing = sorted(set(jobs) - set(outcome))
        if missing:
            raise ClusterError(f"the cluster returned no result for {len(missing)} files ({missing[0]}, ...); nothing was committed")
        for job, previous in waiting:
            if writer.has_content(job.sha256):
                _alias(job, previous, writer, report)
            else:  # the file with this content could not be indexed: nor can this one
                status, message = outcome[sent[job.sha256]]
                if status == "unreadable":
                    unreadable(job.file, job.name, stored.get(job.name), ReadError(message), writer, report)
                elif status == "changed":
                    report.skipped.append(Skipped(
                        job.file, f"same content as {sent[job.sha256]}, which changed while it was being indexed; index again"
                    ))
                else:
                    report.skipped.append(Skipped(job.file, message))
            bar.update(1)
    finally:
        bar.close()
    for names in (report.added, report.updated):  # file order, as a local run reports them
        names.sort(key=lambda n: order.get(n, -1))
    if prune:
        for name in _vanished(paths, stored, seen):
            writer.remove_document(name)
            report.removed.append(name)
    return report


def _alias(job: Job, previous: bool, writer: Writer, report: IndexReport) -> None:
    writer.add_alias(job.name, sha256=job.sha256, source=job.source, size=job.size, mtime_ns=job.mtime_ns)
    (report.updated if previous else report.added).append(job.name)


def _run(jobs: list[Job], writer: Writer, address, workers, max_bytes, timeout) -> Iterator[tuple]:
    """Stream ``(name, status, message, doc, arrays)`` of every job from the cluster's actors."""
    ray = connect(address)
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own, in files
        context.print_on_execution_start = False
        if not logger.isEnabledFor(logging.INFO):  # Ray Data narrates every run at INFO
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        size, cpus, gpus = _pool(ray, workers)
        rows = [
            {"name": j.name, "source": j.source, "sha256": j.sha256, "size": j.size, "mtime_ns": j.mtime_ns} for j in jobs
        ]
        blocks = max(1, min(len(rows), -(-len(rows) // FILES_PER_BATCH)))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            EmbedFiles,
            batch_size=FILES_PER_BATCH,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=cpus,
            num_gpus=gpus,
            fn_constructor_kwargs={
                "model": writer.model.name,
                "dimension": writer.model.dimension,
                "max_tokens": writer.model.max_tokens,
                "max_bytes": max_bytes,
                "timeout": timeout,
            },
            runtime_env={"env_vars": {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}},
        )
        logger.info("sending %d files to %d Ray workers (%s CPUs, %s GPUs each)", len(rows), size, cpus, gpus)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from zip(*(batch[k].tolist() for k in ("name", "status", "message", "doc", "arrays")))
    except ClusterError:
        raise
    except Exception as exc:
        raise ClusterError(f"the Ray job failed: {_first_line(exc)}") from exc
    finally:
        disconnect(ray)


def _pool(ray, workers: int | None) -> tuple[int, float, float]:
    """How many actors, and the CPUs and GPUs of each.

    By default one actor a node, with all of that node's CPUs: the model's
    runtime already spreads a batch over every core of its machine, so more
    actors a node would only contend. With GPUs, one actor a GPU.
    """
    # A head started with --num-cpus=0, as clusters often are, runs no actor.
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    node_cpus = [n["Resources"]["CPU"] for n in nodes] or [1]
    total_gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    if total_gpus:
        return workers or total_gpus, 1, 1
    size = workers or len(nodes) or 1
    per_node = -(-size // max(1, len(nodes)))
    cpus = max(1.0, min(node_cpus) // per_node)
    return size, cpus, 0


_STARTED_HERE: list = []


def connect(address: str | None):
    """Connect to the cluster at ``address`` and return the ``ray`` module.

    ``HOST:PORT`` or ``ray://HOST:PORT`` is a cluster's head; ``auto`` (or
    none) the cluster this machine belongs to (``$RAY_ADDRESS``, or one that
    ``ray start`` began here); ``local`` starts Ray on this machine for this job.
    """
    address = (address or "auto").strip()
    _check_address(address)
    if _loopback(address):
        # Else Ray swaps the loopback address for this machine's own, where a head
        # started with --node-ip-address=127.0.0.1 does not listen (it must be set before Ray is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'qa-cite[ray]'") from None
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the driver's core worker logs to stderr; its errors reach us as exceptions
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}") from exc
    _STARTED_HERE.append(ray)
    return ray


def disconnect(ray) -> None:
    if _STARTED_HERE:
        _STARTED_HERE.clear()
        ray.shutdown()


def _check_address(address: str) -> None:
    """A one-line error for what is not an address, and for a head nothing listens at (Ray would wait a minute)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"not a Ray cluster address: {address!r} (give HOST:PORT, ray://HOST:PORT, auto or local)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
