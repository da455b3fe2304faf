"""``ganlab server``: the MLflow tracking server a cluster's sweeps share.

A database backend store (PostgreSQL on the head node, or an RDS endpoint) for many concurrent
writers, artifacts proxied by the server to a bucket (``--artifacts-destination s3://...``) so workers
need no storage credentials of their own, bound to 127.0.0.1 unless ``--host`` says otherwise. The
backend and the bucket are checked before the server starts (one line, exit 2 if either is wrong);
the server runs in the foreground and dies with this command, however it ends.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("server", help="an MLflow tracking server for a cluster: PostgreSQL store, S3 artifacts",
                       description="Serve an MLflow tracking store for sweeps on a cluster: runs, params and metrics "
                       "in a database (--backend-store-uri postgresql://USER:PASSWORD@HOST:PORT/DB), artifacts "
                       "proxied to --artifacts-destination (s3://BUCKET/PREFIX; endpoint and credentials from the "
                       "usual AWS settings, AWS_ENDPOINT_URL for an S3-compatible server). Both are checked "
                       "before the server starts. Prints 'tracking_uri: http://HOST:PORT' once it answers; point "
                       "MLFLOW_TRACKING_URI at that on every machine that runs ganlab. Runs until Ctrl-C or "
                       "SIGTERM (exit 0), and the server never outlives this command. Without options it serves "
                       "the store MLFLOW_TRACKING_URI names (default ./mlflow.db) and the mlartifacts folder beside "
                       "a sqlite store.")
    p.add_argument("--backend-store-uri", default=None, metavar="URI",
                   help="where runs live: postgresql://..., mysql://..., or sqlite:///PATH (default: "
                   "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory)")
    p.add_argument("--artifacts-destination", default=None, metavar="URI",
                   help="where the server puts artifacts: s3://BUCKET/PREFIX or a folder (default: mlartifacts beside "
                   "a sqlite store, else ./mlartifacts)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; on a cluster head, its private address)")
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.add_argument("--workers", type=int, default=None,
                   help="server worker processes (default: min(4, cores); a sqlite store is put in WAL mode for them)")
    p.set_defaults(func=serve, store=False)


def serve(args) -> int:
    """``ganlab server``: every check first (nothing started or made on bad input), then the server until it
    stops or this process is told to."""
    from ganlab.tracking.server import MAX_WORKERS, WatchedProcess, mlflow_server_command, server_env

    backend, artifacts = _checked(args)
    workers = args.workers or min(MAX_WORKERS, os.cpu_count() or 1)  # on sqlite too: server_env sets WAL
    log = Path(os.environ.get("GANLAB_SERVER_LOG") or _log_dir() / f"mlflow-server-{args.port}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = mlflow_server_command(backend, args.host, args.port, workers, artifacts_destination=artifacts)
    server = WatchedProcess(cmd, log, server_env(backend), launcher=True)
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _serve_until_stopped(server, f"http://{args.host}:{args.port}", stopped,
                                    f"{_shown(backend)} with artifacts in {artifacts} ({workers} worker(s))")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _checked(args) -> tuple[str, str]:
    """The store and artifact destination to serve, every flag checked (ConfigError / GanlabError: exit 2); the
    artifact folder is made only once every check passed."""
    from ganlab.errors import ConfigError, GanlabError
    from ganlab.tracking.server import port_free
    from ganlab.tracking.storage import check_storage, is_remote
    from ganlab.tracking.store import check_store, sqlite_path, tracking_uri

    backend = args.backend_store_uri or tracking_uri()  # the store every other command of this shell logs to
    if backend.startswith(("http://", "https://")):
        raise ConfigError(f"MLFLOW_TRACKING_URI={backend} is a server, not a store to serve: give "
                          "--backend-store-uri (sqlite:///PATH, postgresql://...) or unset it")
    db = sqlite_path(backend)
    artifacts = args.artifacts_destination or str((db.parent if db else Path.cwd()) / "mlartifacts")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: give a port in 1..65535")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: give at least 1")
    if db is not None and not db.parent.is_dir():
        raise GanlabError(f"--backend-store-uri {backend}: directory {db.parent} does not exist")
    check_store(backend)
    check_storage(artifacts)
    if not port_free(args.host, args.port):
        raise GanlabError(f"--host {args.host} --port {args.port}: cannot listen there (in use, or not this "
                          "machine's address); another server may hold it, pick another --port")
    if not is_remote(artifacts):  # only once every check passed: a refused start leaves nothing behind
        Path(artifacts).mkdir(parents=True, exist_ok=True)
    return backend, artifacts


def _serve_until_stopped(server, uri: str, stopped: list[int], what: str) -> int:
    """Wait for the server to answer, say where it is, then keep it until a signal (0) or its death (1)."""
    from ganlab.tracking.store import server_problem, ui_url

    start = time.monotonic()
    while server_problem(uri, 2) is not None:
        if not server.alive() or time.monotonic() - start > 120 or stopped:
            if stopped:
                return 0
            print(f"ganlab server: error: mlflow server did not start ({server.last_line()}); its log: {server.log}",
                  file=sys.stderr)
            return 1
        time.sleep(0.3)
    print(f"serving {what} after {time.monotonic() - start:.1f} s; log: {server.log}", flush=True)
    print(f"ui: {ui_url(uri, via_ganlab=True)}", flush=True)
    print(f"tracking_uri: {uri}", flush=True)
    while server.alive() and not stopped:
        time.sleep(0.5)
    if stopped:
        return 0
    print(f"ganlab server: error: mlflow server exited ({server.last_line()}); its log: {server.log}",
          file=sys.stderr)
    return 1


def _log_dir() -> Path:
    """Where server logs go: ganlab's cache, not the working directory."""
    return Path(os.environ.get("GANLAB_CACHE_DIR") or Path.home() / ".cache" / "ganlab") / "logs"


def _shown(uri: str) -> str:
    """A store URI with its password hidden."""
    if "@" not in uri:
        return uri
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)
