"""Serve a local sqlite MLflow store over HTTP on 127.0.0.1 while a sweep runs.

sqlite allows one writer at a time; several trial processes writing to it directly fail with
"database is locked". One ``mlflow server`` process (one worker) serialises their writes; trials
get its http:// URI. Artifacts still go straight to the experiment's artifact location on disk.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from ganlab.tracking import sqlite_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_store(uri: str, host: str = "127.0.0.1", timeout_s: float = 90.0) -> Iterator[str]:
    """Yield a URI trials can share: ``uri`` itself unless it is a local sqlite file."""
    db = sqlite_path(uri)
    if db is None:
        yield uri
        return
    port = _free_port()
    log = open(db.parent / f".mlflow-server-{port}.log", "wb")
    artifacts = (db.parent / "mlartifacts").resolve()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1", "--default-artifact-root", artifacts.as_uri()]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    served = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{served}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start (see {log.name})")
            time.sleep(0.3)
        yield served
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
        log.close()
        Path(log.name).unlink(missing_ok=True)
