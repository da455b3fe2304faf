"""Serve a local sqlite MLflow store over HTTP on 127.0.0.1 while a sweep runs.

sqlite allows one writer at a time; several trial processes writing to it directly fail with
"database is locked". One ``mlflow server`` process (one worker) serialises their writes; trials
get its http:// URI. Artifacts still go straight to the experiment's artifact location on disk.

The server dies with the process that started it, however that process dies (SIGKILL included):
it runs under a small watchdog, in a process group of its own, whose stdin is a pipe from the
starting process. When that process exits, the kernel closes the pipe; the watchdog reads EOF and
ends the whole group (uvicorn and its workers with it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ganlab.tracking import sqlite_path

# Runs as ``python -c WATCHDOG mlflow server ...``: start the server, wait for EOF on stdin, end the group.
WATCHDOG = """
import os, signal, subprocess, sys
server = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
try:
    sys.stdin.buffer.read()  # returns when the starting process closes its end, or dies
finally:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only now: the server must not inherit it
    os.killpg(0, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    finally:
        os.killpg(0, signal.SIGKILL)  # whatever is left of the group, this watchdog included
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedStore:
    """A tracking URI trials can share. For a served sqlite store, reading ``uri`` waits until the
    server answers, so the driver can do its own loading while the server boots (~10 s)."""

    def __init__(self, uri: str, proc: subprocess.Popen | None = None, log: Path | None = None,
                 timeout_s: float = 90.0):
        self._uri, self._proc, self._log = uri, proc, log
        self._deadline = time.monotonic() + timeout_s
        self._ready = proc is None
        self.failed = False  # then its log is kept for the user to read

    @property
    def uri(self) -> str:
        while not self._ready:
            try:
                with urllib.request.urlopen(f"{self._uri}/health", timeout=2) as r:
                    self._ready = r.status == 200
                    continue
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > self._deadline:
                self.failed = True
                lines = [line for line in self._log.read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1].strip()[:200] if lines else "no output"
                raise RuntimeError(f"mlflow server for the sweep's store did not start ({last}); "
                                   f"its whole log is kept at {self._log}")
            time.sleep(0.3)
        return self._uri


@contextlib.contextmanager
def served_store(uri: str, host: str = "127.0.0.1") -> Iterator[ServedStore]:
    """Start serving ``uri`` if it is a local sqlite file (else pass it through); stop on exit."""
    db = sqlite_path(uri)
    if db is None:
        yield ServedStore(uri)
        return
    port = _free_port()
    log_path = db.parent / f".mlflow-server-{port}.log"
    artifacts = (db.parent / "mlartifacts").resolve()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1", "--default-artifact-root", artifacts.as_uri()]
    # the job runner (huey consumers) serves MLflow's GenAI jobs, which a sweep never submits
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    lifeline, keep = os.pipe()  # the watchdog's stdin; ``keep`` stays open here (not inherited)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", WATCHDOG, *cmd], stdin=lifeline, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    os.close(lifeline)
    store = ServedStore(f"http://{host}:{port}", proc, log_path)
    try:
        yield store
    finally:
        os.close(keep)  # the watchdog ends the server's group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if not store.failed:
            log_path.unlink(missing_ok=True)
