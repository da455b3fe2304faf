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

from ganlab.tracking import sqlite_path

# Runs as ``python -c WATCHDOG mlflow server ...``: start the server; when the starting process is gone
# (EOF on stdin) or the server has exited by itself, end the whole group and exit.
WATCHDOG = """
import os, signal, subprocess, sys, threading
server = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
orphaned = threading.Event()
threading.Thread(target=lambda: (sys.stdin.buffer.read(), orphaned.set()), daemon=True).start()
try:
    while not orphaned.is_set() and server.poll() is None:
        orphaned.wait(0.5)
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
    """A tracking URI trials can share: a sqlite store served by ``mlflow server``, or (pass-through)
    any other store. Reading ``uri`` waits until the server answers, so the driver can do its own
    loading while the server boots (~10 s). ``ensure_alive`` restarts a server that died."""

    def __init__(self, store_uri: str, host: str = "127.0.0.1", timeout_s: float = 90.0):
        self.store_uri, self.host, self.timeout_s = store_uri, host, timeout_s
        self.db = sqlite_path(store_uri)
        self.failed = False  # then its log is kept for the user to read
        self._proc: subprocess.Popen | None = None
        self._lifeline: int | None = None
        if self.db is None:
            self._uri, self._ready = store_uri, True
            return
        self.port = _free_port()
        self.log = self.db.parent / f".mlflow-server-{self.port}.log"
        self._uri = f"http://{host}:{self.port}"
        self._start()

    def _start(self) -> None:
        artifacts = (self.db.parent / "mlartifacts").resolve()
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.store_uri, "--host", self.host,
               "--port", str(self.port), "--workers", "1", "--default-artifact-root", artifacts.as_uri()]
        # the job runner (huey consumers) serves MLflow's GenAI jobs, which a sweep never submits
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.store_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        lifeline, self._lifeline = os.pipe()  # the watchdog's stdin; our end stays open here (not inherited)
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([sys.executable, "-c", WATCHDOG, *cmd], stdin=lifeline, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True, env=env)
        os.close(lifeline)
        self._ready = False
        self._deadline = time.monotonic() + self.timeout_s

    def _stop(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)  # the watchdog ends the server's group
            self._lifeline = None
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self._uri}/health", timeout=timeout_s) as r:
                return r.status == 200
        except OSError:
            return False

    @property
    def uri(self) -> str:
        while not self._ready:
            self._ready = self.healthy(timeout_s=2)
            if self._ready:
                break
            if self._proc.poll() is not None or time.monotonic() > self._deadline:
                self.failed = True
                lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1].strip()[:200] if lines else "no output"
                raise RuntimeError(f"mlflow server for the sweep's store did not start ({last}); "
                                   f"its whole log is kept at {self.log}")
            time.sleep(0.3)
        return self._uri

    def ensure_alive(self) -> bool:
        """Restart a served store that stopped answering (same store, same port, so trials keep their
        URI and their HTTP retries reach it again). True if it had to; RuntimeError if it cannot."""
        if self._proc is None:
            return False
        if self._proc.poll() is None and (self.healthy() or self.healthy()):  # twice: one slow answer is not death
            return False
        self._stop()
        self._start()
        self.uri  # noqa: B018 - waits until it answers, or raises
        return True

    def close(self) -> None:
        if self._proc is not None:
            self._stop()
            if not self.failed:
                self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def served_store(uri: str, host: str = "127.0.0.1") -> Iterator[ServedStore]:
    """Serve ``uri`` if it is a local sqlite file (else pass it through) until the block ends."""
    store = ServedStore(uri, host)
    try:
        yield store
    finally:
        store.close()
