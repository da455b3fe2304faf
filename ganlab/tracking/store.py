"""MLflow helpers: where the store is, one run per command, and batched logging.

Tracking store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working
directory. With a local sqlite store, artifacts go to ``mlartifacts/`` beside the database file,
an absolute path that every process on this machine (or a shared filesystem) can write.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab.errors import GanlabError, ModelFailure, RunNotFoundError, StoreUnreachable, stopped_behind
from ganlab.tracking import schema
from ganlab.tracking.run_logger import RunLogger

DEFAULT_EXPERIMENT = "ganlab"
# MLflow 3's UI opens an experiment on the view its kind names; without one it guesses the GenAI overview
# (traces, token usage), which is empty for ganlab's runs
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri else sqlite_uri(Path.cwd() / "mlflow.db")


def sqlite_uri(db: Path) -> str:
    """The ``sqlite:///`` URI of database file ``db``, its path percent-encoded where a URL needs it: SQLAlchemy
    decodes ``%XX`` in it, so a folder named ``runs%20q2`` was read as ``runs q2`` (and MLflow retried for good)."""
    from urllib.parse import quote

    return "sqlite:///" + quote(str(db), safe="/ :~+,=@")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (percent-decoded, as SQLAlchemy reads it), else None."""
    from urllib.parse import unquote

    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0])) if uri.startswith("sqlite:///") else None


def ui_url(uri: str, experiment_id: str | None = None, run_id: str | None = None, *,
           via_ganlab: bool | None = None) -> str | None:
    """A link into the MLflow UI served at ``uri`` (an http(s) tracking server), else None.

    It goes through the server's ``/ganlab/open`` page (ganlab/tracking/mlflow_app.py), which switches MLflow 3.17's UI
    to its model-training views for good (its browser-wide default is GenAI: traces and token usage, empty for
    ganlab), then opens the experiment or run. ``via_ganlab=False``: a direct link that any MLflow server
    understands (the next click inside the UI may fall back to GenAI there); None: whichever the server
    answers (a plain ``mlflow server`` has no ``/ganlab/open``).
    """
    if not uri.startswith(("http://", "https://")):
        return None
    if via_ganlab is None:
        via_ganlab = server_problem(uri, 2.0, "/ganlab/open") is None
    if not via_ganlab:
        path = "#/experiments" + (f"/{experiment_id}" if experiment_id else "") + (f"/runs/{run_id}" if run_id else "")
        return f"{uri.rstrip('/')}/{path}?workflowType=machine_learning"
    query = "&".join(f"{k}={v}" for k, v in (("experiment", experiment_id), ("run", run_id)) if v)
    return f"{uri.rstrip('/')}/ganlab/open" + (f"?{query}" if query else "")


def server_problem(uri: str, timeout_s: float = 5.0, path: str = "/health") -> str | None:
    """None when the HTTP server at ``uri`` answers ``path`` with 200 within ``timeout_s``, else why not."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}{path}", timeout=timeout_s) as answer:
            return None if answer.status == 200 else f"HTTP {answer.status}"
    except (OSError, urllib.error.URLError) as exc:
        return str(getattr(exc, "reason", exc))


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """GanlabError (one line) unless the tracking store at ``uri`` answers within ``timeout_s``.

    An ``http(s)://`` tracking server must answer its /health; a database URI (``postgresql://``,
    ``mysql://``, ...) must accept a connection. MLflow itself would retry either for minutes. A
    sqlite or file store is checked where it is opened (``store_lock``).
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme in ("http", "https"):
        reason = server_problem(uri, timeout_s)
        if reason is None:
            return
        raise GanlabError(f"tracking server {uri} does not answer ({reason}); start it (ganlab server) or point "
                          "MLFLOW_TRACKING_URI at one that runs")
    if scheme == "sqlite":
        db = sqlite_path(uri)
        if db is not None and db.is_file():
            from ganlab.tracking.storage import check_sqlite, relocate_moved_store

            check_sqlite(db)
            moved = relocate_moved_store(db)
            if moved:
                print(f"ganlab: {moved}", file=sys.stderr)
        return
    if scheme in ("", "file", "databricks", "mlflow-artifacts"):
        return
    from ganlab.tracking.storage import check_database

    check_database(uri, scheme, timeout_s)


def wait_for_store(uri: str, timeout_s: float = 120.0) -> None:
    """Until an http(s) tracking server answers its /health (a sweep's served store may still be booting
    when its first trials start); StoreUnreachable after ``timeout_s``. Other stores return at once."""
    import time

    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout_s
    while server_problem(uri) is not None:
        if time.monotonic() > deadline:
            raise StoreUnreachable(f"tracking server {uri} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def experiment_name(name: str | None = None) -> str:
    return name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def mlflow_client(uri: str | None = None):
    """A client of store ``uri`` (default: ``tracking_uri()``); mlflow's global URI is left alone.

    Constructing a client creates and migrates a new sqlite store: that happens under ``store_lock``.
    """
    from mlflow.tracking import MlflowClient

    # On an http store MLflow prints "View run ... at" links to stdout whenever a run ends, after one more
    # get_run request: ganlab prints its own links (which open the runs table), and stdout is for `run_id:`.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = uri or tracking_uri()
    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a sqlite store may be created or migrated: several processes starting together on
    a new store would otherwise race in MLflow's schema migration ('table ... already exists')."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    if not db.parent.is_dir():
        raise GanlabError(f"tracking store {uri}: directory {db.parent} does not exist; create it or set "
                          "MLFLOW_TRACKING_URI to a store in an existing directory")
    from filelock import FileLock

    with FileLock(str(db.parent / f".{db.name}.lock")):
        yield


def ensure_experiment(name: str | None = None, uri: str | None = None) -> str:
    """The id of experiment ``name`` (created if missing, with a local artifact root for sqlite).

    Raises GanlabError if the store's directory does not exist or the experiment was deleted.
    """
    uri = uri or tracking_uri()
    name = experiment_name(name)
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise GanlabError(f"MLflow experiment {name!r} was deleted; restore it (mlflow experiments restore "
                          f"--experiment-id {exp.experiment_id}) or choose another with --experiment")
    if exp is not None:
        if not any(exp.tags.get(k) for k in EXPERIMENT_KIND):  # made by an older ganlab, or by hand
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        if schema.SHARED_VIEW_TAG not in exp.tags:  # made before ganlab wrote its view
            client.set_experiment_tag(exp.experiment_id, schema.SHARED_VIEW_TAG, schema.comparison_view_tag())
        return exp.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "mlartifacts" / name).resolve().as_uri() if db else None
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags={**EXPERIMENT_KIND, schema.SHARED_VIEW_TAG: schema.comparison_view_tag()})
    except Exception:  # another process created it in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def get_run(run_id: str, uri: str | None = None):
    """The MLflow run ``run_id``; RunNotFoundError (without creating a store) if it is not there."""
    from mlflow.exceptions import MlflowException

    uri = uri or tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise RunNotFoundError(f"MLflow run {run_id!r} not found: no tracking store at {db}")
    try:
        return mlflow_client(uri).get_run(run_id)
    except MlflowException:
        raise RunNotFoundError(f"MLflow run {run_id!r} not found in {uri}") from None


def download_artifact(run_id: str, artifact_path: str, dst_dir: str | Path, uri: str | None = None) -> Path:
    """Download one artifact of a run; RunNotFoundError if the run has no such artifact."""
    import mlflow

    uri = uri or tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():  # MLflow would create the store it reads from
        get_run(run_id, uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(dst_dir), tracking_uri=uri))
    except Exception:
        get_run(run_id, uri)  # no such run says so; else the run has no such artifact
        raise RunNotFoundError(f"MLflow run {run_id} has no artifact {artifact_path!r}") from None


@dataclass(frozen=True)
class RunContext:
    """Where and how a command's run is logged, decided once at the edge (the CLI, a sweep trial, a notebook):
    the store ``uri``, the experiment, the parent run (a sweep's), extra tags, progress bars, the data folder."""

    uri: str
    experiment: str | None = None
    parent_run_id: str | None = None
    tags: dict = field(default_factory=dict)
    progress: bool = True
    data_dir: str | None = None
    run_name: str | None = None  # default: the command's own (train-fashion-mnist-32, q=80 ft1 · src 5f73)
    system_metrics: bool = True  # training runs log MLflow's system metrics (CPU, memory, GPU where present)

    @classmethod
    def here(cls, **settings) -> RunContext:
        """The context of this process: the store ``MLFLOW_TRACKING_URI`` names (else ./mlflow.db), resolved now."""
        return cls(uri=tracking_uri(), **settings)


@dataclass(frozen=True)
class RunResult:
    """What a command's run left: its MLflow run id and the metrics it logged last (step-less ones)."""

    run_id: str
    metrics: dict[str, float]
    draws: dict[str, list[float]] = field(default_factory=dict)  # prune: per evaluation draw, DRAW_METRICS


def source_tags(source: str) -> dict[str, str]:
    """Tags naming what a prune/evaluate run started from: a run id or a checkpoint file."""
    if Path(source).exists():
        return {schema.SOURCE_CHECKPOINT: str(Path(source).resolve())}
    return {schema.SOURCE_RUN: source}


@contextmanager
def ganlab_run(kind: str, ctx: RunContext | None = None, *, params: dict[str, Any] | None = None,
               tags: dict[str, Any] | None = None, run_name: str | None = None) -> Iterator[RunLogger]:
    """One MLflow run of ``kind`` where ``ctx`` says (default: ``RunContext.here()``), tagged with the kind,
    ``tags`` and the context's tags (those win), named ``ctx.run_name`` or else ``run_name``; FINISHED on
    success, FAILED on an error.

    Validate input before entering: a GanlabError raised inside still deletes the run so that bad
    input never leaves an orphan run behind.
    """
    ctx = ctx or RunContext.here()
    client = mlflow_client(ctx.uri)
    exp_id = ensure_experiment(ctx.experiment, ctx.uri)
    from ganlab.tracking.provenance import source_info

    all_tags = {schema.KIND: kind, **source_info(kind), **(tags or {}), **ctx.tags}  # the edge's tags win
    if ctx.parent_run_id:
        all_tags[schema.PARENT_RUN] = ctx.parent_run_id
    run = client.create_run(exp_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=ctx.run_name or run_name)
    logger = RunLogger(client, run.info.run_id)
    try:
        if params:
            logger.log_params(params)
        yield logger
    except ModelFailure as exc:  # what the run found out about its model: kept, FAILED, saying why
        client.set_tag(run.info.run_id, schema.FAILURE, " ".join(str(exc).split())[:500])
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    except GanlabError:
        client.delete_run(run.info.run_id)
        raise
    except StoreUnreachable:  # the caller closes the run where the store can still be reached
        raise
    except BaseException as exc:  # Ctrl-C or SIGTERM (also one a failing cleanup hid): KILLED
        client.set_terminated(run.info.run_id, "KILLED" if stopped_behind(exc) else "FAILED")
        raise
    else:
        client.set_terminated(run.info.run_id, "FINISHED")


@contextmanager
def reopened_run(run_id: str, uri: str | None = None) -> Iterator[RunLogger]:
    """Log more to an existing run (a resumed trial or sweep): RUNNING again, then FINISHED, KILLED or FAILED."""
    get_run(run_id, uri)
    client = mlflow_client(uri)
    client.update_run(run_id, status="RUNNING")
    try:
        yield RunLogger(client, run_id)
    except StoreUnreachable:
        raise
    except BaseException as exc:  # Ctrl-C or SIGTERM (ganlab.errors.Terminated): KILLED
        client.set_terminated(run_id, "KILLED" if stopped_behind(exc) else "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
