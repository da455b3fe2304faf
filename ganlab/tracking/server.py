"""MLflow tracking servers that die with the process that started them.

A sweep serves a local sqlite MLflow store over HTTP on 127.0.0.1 while it runs (``served_store``);
``ganlab server`` serves a PostgreSQL (or any database) store with artifacts proxied to S3 for a cluster
(server_cli.py). Both run ``mlflow server`` as a ``WatchedProcess``.

sqlite allows one writer at a time; several trial processes writing to it directly fail with
"database is locked". The served store runs one worker per trial it serves (up to MAX_WORKERS) on the database
in WAL mode (readers never wait for the writer, writers wait their turn up to sqlite's busy timeout, and a
write that still meets a lock answers 500, which MLflow's client retries with backoff); trials get its
http:// URI. Artifacts still go straight to the experiment's artifact location on disk. A busy server is
not a dead one: it is restarted only when its process is gone or its port refuses connections.

The server dies with the process that started it, however that process dies (SIGKILL included):
it runs under a small watchdog, in a process group of its own, whose stdin is a pipe from the
starting process. When that process exits, the kernel closes the pipe; the watchdog reads EOF and
ends the whole group (uvicorn and its workers with it).

``mlflow server`` is a launcher: it starts uvicorn and waits for it. Stopped, uvicorn finishes its requests
and exits in ~0.1 s, and the launcher then spends ~0.55 s tearing its interpreter down (measured on 2 cores),
which every sweep and every test with a served store waited for. For a launcher the watchdog ends the group
once the processes the launcher started are gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ganlab.tracking.store import server_problem, sqlite_path

# Runs as ``python -c WATCHDOG MODE cmd ...``: start cmd; when the starting process is gone (EOF on stdin)
# or cmd has exited by itself, SIGTERM the whole group, wait for cmd to exit (MODE "launcher": or for every
# process cmd started, where /proc shows them), then SIGKILL what is left and exit. MODE "kill": SIGKILL at once.
WATCHDOG = """
import os, signal, subprocess, sys, threading, time
launcher = sys.argv[1] == "launcher"
server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
orphaned = threading.Event()
threading.Thread(target=lambda: (sys.stdin.buffer.read(), orphaned.set()), daemon=True).start()

def started_by_server_alive():
    # whether a process of this group other than the watchdog and the server still runs (a zombie has exited)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True  # no /proc: wait for the server itself
    for pid in set(pids) - {os.getpid(), server.pid}:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(group) == os.getpgrp() and state != "Z":
            return True
    return False

try:
    while not orphaned.is_set() and server.poll() is None:
        orphaned.wait(0.5)
finally:
    if sys.argv[1] == "kill":
        os.killpg(0, signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only now: the server must not inherit it
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (server.poll() is None and time.monotonic() < deadline
           and (not launcher or started_by_server_alive())):
        time.sleep(0.02)
    os.killpg(0, signal.SIGKILL)  # whatever is left of the group, this watchdog included
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WatchedProcess:
    """``cmd`` started under the watchdog: in a process group of its own that ends when this process
    ends, however it ends, or when ``stop()`` is called. Output goes to ``log``.

    ``launcher``: cmd only starts the real server processes and waits for them (``mlflow server``); once
    they have stopped, cmd is killed rather than waited for. Otherwise cmd itself is waited for (up to 10 s).
    ``kill``: nothing in the group has state worth a graceful stop (a local Ray, whose GCS and raylet let
    SIGTERM wait 9 s): SIGKILL at once.
    """

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, launcher: bool = False,
                 kill: bool = False):
        self.log = log
        lifeline, self._lifeline = os.pipe()  # the watchdog's stdin; our end stays open here (not inherited)
        mode = "kill" if kill else "launcher" if launcher else "process"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", WATCHDOG, mode, *cmd], stdin=lifeline, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)
        os.close(lifeline)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip()[:200] if lines else "no output"

    def stop_soon(self) -> None:
        """Tell the watchdog to end the group, without waiting (``stop`` waits)."""
        if self._lifeline is not None:
            os.close(self._lifeline)  # the watchdog reads EOF and ends the group
            self._lifeline = None

    def stop(self, timeout_s: float = 20) -> None:
        self.stop_soon()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def mlflow_server_command(backend: str, host: str, port: int, workers: int, *, artifacts_destination: str | None = None,
                          default_artifact_root: str | None = None) -> list[str]:
    """``mlflow server`` serving ``backend``: artifacts proxied to ``artifacts_destination`` (``s3://...``, a
    folder) through the server, or written by clients straight to ``default_artifact_root``."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", host,
           "--port", str(port), "--workers", str(workers), "--app-name", "ganlab"]  # ganlab/tracking/mlflow_app.py
    if artifacts_destination is not None:
        cmd += ["--serve-artifacts", "--artifacts-destination", artifacts_destination]
    if default_artifact_root is not None:
        cmd += ["--default-artifact-root", default_artifact_root]
    return cmd


POOL_SIZE = 16  # connections a worker keeps: one per concurrent request, up to 16
MAX_OVERFLOW = {"sqlite": 48, "database": 4}  # more, for as long as a request holds them


def server_env(backend: str) -> dict[str, str]:
    """The server's environment. The job runner (huey consumers) serves MLflow's GenAI jobs, which ganlab never
    submits. Each worker's connection pool keeps a connection for each of up to 16 concurrent requests
    (unless MLFLOW_SQLALCHEMYSTORE_POOL_SIZE / _MAX_OVERFLOW are set): with SQLAlchemy's default 5 kept + 10
    overflow, the overflow connections were closed after every request and opened for the next, and at 16
    writers on PostgreSQL those connections (a server process forked per connection) doubled the database's
    CPU per batch (benchmarks/store_load.py). On a server database a worker holds at most 20 connections (80 for
    4 workers, under PostgreSQL's default max_connections of 100). On sqlite, requests queue for the one write
    lock holding a pooled connection: at 32 writers the default pool ran dry and requests failed after 30 s
    (BAD_REQUEST, not retried: writes lost), so the pool also takes many waiting writers (no connection limit
    there), and the file is put in WAL mode."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": backend, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    db = sqlite_path(backend)
    if db is not None:  # several workers on one sqlite file: WAL, and a pool for the writers waiting their turn
        wal_mode(db)
    pool = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(POOL_SIZE),
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(MAX_OVERFLOW["sqlite" if db is not None else "database"])}
    return {**pool, **env}


MAX_WORKERS = 4  # a served store's uvicorn workers (~150 MB each); past 4, sqlite's one writer is the limit


def wal_mode(db: Path) -> None:
    """Put the sqlite database ``db`` in WAL mode (a property of the file; it stays so)."""
    import sqlite3

    if db.is_file():
        with contextlib.suppress(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
            con.execute("PRAGMA journal_mode=WAL")  # not a database: the server says so, in the log it keeps


class ServedStore:
    """A tracking URI trials can share: a sqlite store served by ``mlflow server``, or (pass-through)
    any other store. Reading ``uri`` waits until the server answers, so the driver can do its own
    loading while the server boots (~10 s). ``ensure_alive`` restarts a server that died.
    ``writers``: how many trials write at once (one worker each, up to MAX_WORKERS)."""

    def __init__(self, store_uri: str, host: str = "127.0.0.1", timeout_s: float = 90.0, writers: int = 1):
        self.store_uri, self.host, self.timeout_s = store_uri, host, timeout_s
        self.workers = max(1, min(MAX_WORKERS, writers))
        self.db = sqlite_path(store_uri)
        self.failed = False  # then its log is kept for the user to read
        self._server: WatchedProcess | None = None
        if self.db is None:
            self._uri, self._ready = store_uri, True
            return
        self.port = free_port(host)
        self.log = self.db.parent / f".mlflow-server-{self.port}.log"
        self._uri = f"http://{host}:{self.port}"
        self._start()

    def _start(self) -> None:
        artifacts = (self.db.parent / "mlartifacts").resolve()
        cmd = mlflow_server_command(self.store_uri, self.host, self.port, self.workers,
                                    default_artifact_root=artifacts.as_uri())
        self._server = WatchedProcess(cmd, self.log, server_env(self.store_uri), launcher=True)
        self._ready = False
        self._deadline = time.monotonic() + self.timeout_s

    def healthy(self, timeout_s: float = 5.0) -> bool:
        return server_problem(self._uri, timeout_s) is None

    @property
    def address(self) -> str:
        """The URI trials log to, at once (``uri`` waits until it answers; trials wait themselves)."""
        return self._uri

    def _booted(self) -> bool:
        """Whether the server answers yet; RuntimeError if it died or did not start in time."""
        if not self._ready:
            self._ready = self.healthy(timeout_s=2)
            if not self._ready and (not self._server.alive() or time.monotonic() > self._deadline):
                self.failed = True
                raise RuntimeError(f"mlflow server for the sweep's store did not start ({self._server.last_line()}); "
                                   f"its whole log is kept at {self.log}")
        return self._ready

    @property
    def uri(self) -> str:
        while not self._booted():
            time.sleep(0.3)
        return self._uri

    def dead(self) -> bool:
        """Its process is gone, or its port refuses connections. Slow answers are a busy server, not a dead
        one (restarting it would drop every request it holds)."""
        if not self._server.alive():
            return True
        try:
            socket.create_connection((self.host, self.port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        except OSError:  # a full accept queue or a slow accept: busy
            return False
        return False

    def ensure_alive(self) -> bool:
        """Restart a served store that died (same store, same port, so trials keep their URI and their HTTP
        retries reach it again). True if it had to; RuntimeError if it cannot. A server still booting is
        left to boot, a busy one to answer."""
        if self._server is None or not self._booted():
            return False
        if not self.dead():
            return False
        self._server.stop()
        self._start()
        self.uri  # noqa: B018 - waits until it answers, or raises
        return True

    def stop_soon(self) -> None:
        """Begin stopping the server (``close`` then waits for it): its shutdown overlaps the caller's."""
        if self._server is not None:
            self._server.stop_soon()

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            if not self.failed:
                self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def served_store(uri: str, host: str = "127.0.0.1", writers: int = 1) -> Iterator[ServedStore]:
    """Serve ``uri`` if it is a local sqlite file (else pass it through) until the block ends."""
    store = ServedStore(uri, host, writers=writers)
    try:
        yield store
    finally:
        store.close()
