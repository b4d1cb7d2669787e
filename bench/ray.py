"""Local against Ray on one machine, in one run: what `qa index --ray` costs and buys.

    python bench/ray.py [--data ../shared/bench/squad-dev] [--files 400]

Every paragraph of the squad-dev articles becomes a file of its own (the first
``--files`` of them): files are what a Ray job hands out, and an archive is
many files. A one-node Ray cluster with this machine's CPUs is started on
127.0.0.1 (its own temp folder, stopped by its PIDs), and then each row is the
``qa index`` command a user runs, timed from process start to exit, in a
fresh index each time:

- ``local``: ``qa index FOLDER``, the model in this process;
- ``ray, 1 worker``: ``qa index FOLDER --ray ADDRESS``, the default, one actor
  on the node with all its CPUs;
- ``ray, 2 workers``: ``--workers 2``, two actors of one CPU each.

Each is run on all the files and on one file; the one-file job is the fixed
cost of a job (process start, connecting, starting actors and loading the
model in them, committing), and the marginal rate, passages over the
difference of the two times, is what each configuration does once started.
Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A cluster on loopback without a token, and every qa command of the run told so (see README).
os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"})
QA = Path(sys.executable).with_name("qa")
RAY = Path(sys.executable).with_name("ray")


def paragraph_files(data: Path, out: Path, limit: int) -> int:
    out.mkdir(parents=True)
    n = 0
    for doc in sorted((data / "docs").glob("*.txt")):
        for paragraph in doc.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip() and n < limit:
                (out / f"{doc.stem}-{n:04d}.txt").write_text(paragraph.strip() + "\n", encoding="utf-8")
                n += 1
    return n


def start_cluster(temp_dir: str, cpus: int) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
         "--num-gpus=0", "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
        check=True, capture_output=True, timeout=120,
    )
    return f"127.0.0.1:{port}"


def stop_cluster(temp_dir: str) -> None:
    import psutil

    processes = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            processes.append(process)
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()


def timed_index(folder: Path, index: Path, extra: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run([str(QA), "index", str(folder), "--index", str(index), "--json", *extra],
                          capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"qa index {' '.join(extra)} failed: {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "bench" / "squad-dev")
    parser.add_argument("--files", type=int, default=400)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qa-ray-bench-"))
    folder, one = work / "paragraphs", work / "one"
    n = paragraph_files(args.data, folder, args.files)
    one.mkdir()
    shutil.copy(sorted(folder.iterdir())[0], one)
    cpus = os.cpu_count() or 1
    # Warm the export cache and the precision decision once, so that no row pays for them.
    subprocess.run([str(QA), "index", str(one), "--index", str(work / "warm")], check=True, capture_output=True)

    temp_dir = tempfile.mkdtemp(prefix="qa-rb-", dir="/tmp")  # Ray's socket paths must stay short
    rows = []
    try:
        address = start_cluster(temp_dir, cpus)
        configs = [("local", []), ("ray, 1 worker (default)", ["--ray", address]),
                   ("ray, 2 workers", ["--ray", address, "--workers", "2"])]
        for label, extra in configs:
            slug = label.split(",")[0].replace(" ", "") + str(len(rows))
            t_all, report = timed_index(folder, work / f"{slug}-all", extra)
            t_one, _ = timed_index(one, work / f"{slug}-one", extra)
            passages = report["passages_embedded"]
            rows.append({
                "run": label, "files": len(report["added"]), "passages": passages, "wall s": round(t_all, 2),
                "passages/s": round(passages / t_all, 1), "1-file job s": round(t_one, 2),
                "marginal passages/s": round(passages / max(t_all - t_one, 1e-9), 1),
            })
            print(f"{label}: {t_all:.2f} s for {passages} passages, 1 file {t_one:.2f} s", file=sys.stderr, flush=True)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["wall s"]
    for row in rows:
        row["vs local"] = f"{base / row['wall s']:.2f}x"
    print(f"{n} squad-dev paragraphs as files; {cpus} CPUs; one Ray node on 127.0.0.1\n")
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    print(json.dumps({"files": n, "cpus": cpus, "rows": rows}))


if __name__ == "__main__":
    main()
