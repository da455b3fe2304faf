"""Latency of MLflow writes under concurrent trials: the sweep's served sqlite store and `ganlab server` on PostgreSQL.

Each writer is a thread with its own MlflowClient that does what a trial's epoch does to the store: create a
run, then ``--batches`` log_batch calls of ``--metrics`` metrics each, then end the run. All writers start
together; every log_batch's latency is recorded. Against:

- the served sqlite store a sweep starts (``ganlab.tracking.server.ServedStore``), with the workers a sweep of that many
  concurrent trials gets (one per writer, up to MAX_WORKERS, WAL mode), and as the reference in the same run
  with one worker (how it was served before);
- ``ganlab server`` on a throwaway PostgreSQL (Debian's binaries, 127.0.0.1, fsync off as in the tests: commits
  cost what a battery-backed or cloud disk costs, not a laptop's flush), its default workers.

Each cell also prints the CPU time per batch (the run's create and end shared out) of the server (its whole
process tree, reaped children included), of the database (PostgreSQL's tree) and of the writers (this
process). On a small machine the three share the cores and latency is queueing behind them; the server's and
database's CPU per batch is what carries to a bigger head (batches/s one core sustains = 1000 / their ms).

While the writers run, the sweep's watchdog (``ServedStore.ensure_alive``) is called every 2 s, and /health is
probed with the old rule's 5 s timeout: "restarts" counts the restarts, "slow health" the probes that would
have counted toward one under the old rule (two in a row restarted the server).

    python benchmarks/store_load.py [--writers 1 4 16 32] [--batches 6] [--metrics 44] [--no-postgres]

Goal (issue 23): p90 <= 300 ms at 16 writers on PostgreSQL, and no restart under load on either.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the stack's real PostgreSQL, as the tests start it
sys.path.insert(0, str(REPO / "benchmarks"))

from common import machine_line  # noqa: E402


def tree_cpu(root: int | None) -> float:
    """CPU seconds of process ``root`` and every live descendant, with the children each has reaped."""
    import psutil

    if root is None:
        return 0.0
    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _load(uri: str, writers: int, batches: int, metrics: int, watch=None, server_pid: int | None = None,
          db_pid: int | None = None) -> dict:
    """Run ``writers`` concurrent writers against ``uri``; latencies (s), errors, restarts, slow health probes,
    and CPU seconds of the server's tree, the database's and this process's (the writers)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.store import server_problem

    experiment = MlflowClient(uri).create_experiment(f"load-{writers}-{time.time_ns()}")
    latencies, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(writers + 1)

    def writer(k: int) -> None:
        client = MlflowClient(uri)
        start.wait()
        try:
            run = client.create_run(experiment)
            for b in range(batches):
                now = int(time.time() * 1000)
                batch = [Metric(f"metric_{m}", float(k + b + m), now, b) for m in range(metrics)]
                t = time.perf_counter()
                client.log_batch(run.info.run_id, metrics=batch)
                with lock:
                    latencies.append(time.perf_counter() - t)
            client.set_terminated(run.info.run_id)
        except Exception as exc:  # noqa: BLE001 - counted, and the first few shown
            with lock:
                errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    restarts, slow, done = 0, 0, threading.Event()

    def watchdog() -> None:
        nonlocal restarts, slow
        while not done.wait(2.0):
            if server_problem(uri, 5.0) is not None:
                slow += 1
            if watch is not None and watch.ensure_alive():
                restarts += 1

    dog = threading.Thread(target=watchdog)
    dog.start()
    cpu0 = tree_cpu(server_pid), tree_cpu(db_pid), time.process_time()
    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # MLflow's "View run" per run ended
        start.wait()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    cpu = [after - before for before, after in zip(cpu0, (tree_cpu(server_pid), tree_cpu(db_pid), time.process_time()))]
    done.set()
    dog.join()
    return {"lat": np.array(latencies), "errors": errors, "restarts": restarts, "slow": slow, "wall": wall,
            "cpu": cpu}


def _line(name: str, workers: int, writers: int, r: dict, ref: dict | None = None) -> str:
    lat = r["lat"] * 1000
    p50, p90 = (np.percentile(lat, 50), np.percentile(lat, 90)) if len(lat) else (float("nan"),) * 2
    text = (f"{name:<28} workers {workers:>2}  writers {writers:>2}: p50 {p50:7.1f} ms  p90 {p90:7.1f} ms  "
            f"max {lat.max() if len(lat) else float('nan'):7.1f} ms  {len(lat) / r['wall']:6.1f} batches/s  "
            f"errors {len(r['errors'])}  restarts {r['restarts']}  slow health {r['slow']}")
    if ref is not None and len(ref["lat"]) and len(lat):
        text += f"  p90 / 1-worker p90 {p90 / (np.percentile(ref['lat'] * 1000, 90)):.2f}"
    if len(lat):
        server, db, writers_cpu = (1000 * c / len(lat) for c in r["cpu"])
        text += f"\n    CPU per batch: server {server:.1f} ms" + (f", database {db:.1f} ms" if db else "") + \
            f", writers {writers_cpu:.1f} ms"
    if r["errors"]:
        text += f"\n    first error: {r['errors'][0]}"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--batches", type=int, default=6, help="log_batch calls per writer (default: 6)")
    p.add_argument("--metrics", type=int, default=44, help="metrics per log_batch (default: 44, a trial's epoch)")
    p.add_argument("--no-postgres", action="store_true", help="only the served sqlite store")
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    print(machine_line(1, "idle"), flush=True)
    print(f"each writer: 1 create_run, {args.batches} x log_batch({args.metrics} metrics), set_terminated",
          flush=True)
    from ganlab.tracking.server import MAX_WORKERS, ServedStore

    with tempfile.TemporaryDirectory(prefix="ganlab-load-") as tmp:
        for n in args.writers:
            results = {}
            for workers in dict.fromkeys((1, min(MAX_WORKERS, n))):  # the reference first, then a sweep's
                db = Path(tmp) / f"sqlite-{n}-{workers}" / "mlflow.db"
                db.parent.mkdir()
                store = ServedStore(f"sqlite:///{db}", writers=workers)
                try:
                    results[workers] = _load(store.uri, n, args.batches, args.metrics, watch=store,
                                             server_pid=store._server.proc.pid)
                finally:
                    store.close()
                print(_line("served sqlite" + (" (reference)" if workers == 1 else ""), workers, n,
                            results[workers], results[1] if workers != 1 else None), flush=True)
        if args.no_postgres:
            return
        from stack import Postgres

        pg = Postgres().start()
        try:
            env = {**os.environ, "GANLAB_SERVER_LOG": str(Path(tmp) / "server.log")}
            from ganlab.tracking.server import free_port

            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "server", "--backend-store-uri", pg.uri(),
                                       "--artifacts-destination", str(Path(tmp) / "artifacts"), "--port", str(port)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            workers = 0
            uri = f"http://127.0.0.1:{port}"
            try:  # the server ends with the benchmark, whatever fails
                for line in server.stdout:
                    if found := re.search(r"\((\d+) worker\(s\)\)", line):
                        workers = int(found.group(1))
                    if line.startswith("tracking_uri: "):
                        break
                for n in args.writers:
                    r = _load(uri, n, args.batches, args.metrics, server_pid=server.pid, db_pid=pg.proc.proc.pid)
                    r["restarts"] = int(server.poll() is not None)  # ganlab server exits if its mlflow server dies
                    print(_line("ganlab server (PostgreSQL)", workers, n, r), flush=True)
            finally:
                server.terminate()
                server.wait(timeout=60)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
