"""Pull ganlab runs from MLflow into pandas (no torch here)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ganlab.config import AMOUNT_KEYS  # torch-free, like ganlab.tracking.store
from ganlab.errors import RunNotFoundError
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from ganlab.tracking.schema import DRAW_METRICS, child_filter
from ganlab.tracking.store import sqlite_path, tracking_uri  # the one definition of where the store is (no torch)


class AnalysisInputError(Exception):
    """An unknown sweep/experiment or nothing to analyse: one line, exit code 2."""


def _open_store(what: str) -> str:
    """The tracking store's URI (resolved here, where analysis meets the user); AnalysisInputError (creating
    nothing) if it does not exist. MLflow's global URI is left alone: every call below names the store."""
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise AnalysisInputError(f"{what} not found: no tracking store at {uri}")
    return uri


client = tracking.mlflow_client  # the store's client, as every other layer gets it


def search(experiment_ids: list[str], filter_string: str, uri: str) -> pd.DataFrame:
    """Runs as a DataFrame with mlflow.search_runs' columns (run_id, status, metrics.x, params.x, tags.x),
    from an explicit store."""
    rows = []
    for run in schema.all_runs(client(uri), experiment_ids, filter_string):  # every page: none dropped
        row = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "status": run.info.status,
               "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
               "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True) if run.info.end_time else pd.NaT,
               "artifact_uri": run.info.artifact_uri, "run_name": run.info.run_name}
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """metrics.x -> x, params.x -> param_x, tags.ganlab.x -> ganlab_x (schema.column): short names for plots."""
    renames = {}
    for c in df.columns:
        if c.startswith("metrics."):
            renames[c] = c[len("metrics."):]
        elif c.startswith("params."):
            renames[c] = "param_" + c[len("params."):]
        elif c.startswith("tags.") and c[len("tags."):] in schema.TAGS:
            renames[c] = schema.column(c[len("tags."):])
    return df.rename(columns=renames)


def get_run(run_id: str):
    uri = _open_store(f"sweep {run_id!r}")
    try:
        return tracking.get_run(run_id, uri)
    except RunNotFoundError:
        raise AnalysisInputError(f"sweep {run_id!r} not found in {uri}") from None


def sweep_children(sweep_id: str) -> pd.DataFrame:
    """Child runs of sweep ``sweep_id`` (its trials), flattened."""
    parent = get_run(sweep_id)
    df = search([parent.info.experiment_id], child_filter(sweep_id), tracking_uri())
    return flat(df)


def experiment_runs(name: str, kind: str) -> pd.DataFrame:
    uri = _open_store(f"experiment {name!r}")
    exp = client(uri).get_experiment_by_name(name)
    if exp is None:
        raise AnalysisInputError(f"experiment {name!r} not found in {uri}")
    df = search([exp.experiment_id], schema.tag_filter(schema.KIND, kind), uri)
    return flat(df)


def download(run_id: str, artifact_path: str, dst: Path) -> Path | None:
    """Local copy of one artifact, or None if the run does not have it."""
    try:
        return tracking.download_artifact(run_id, artifact_path, dst)
    except RunNotFoundError:
        return None


BULK_RUNS = 500  # run ids per bulk history query (sqlite allows 32,766 bound values)
DOWNLOAD_THREADS = 8  # artifact reads wait on the store (disk, S3, a server), not on the CPU


def download_many(wanted: list[tuple[str, str, Path]]) -> dict[tuple[str, str], Path | None]:
    """``download`` for each (run_id, artifact_path, dst), several at once; keyed by (run_id, artifact_path)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        paths = list(pool.map(lambda w: download(*w), wanted))
    return {(run_id, path): got for (run_id, path, _), got in zip(wanted, paths)}


def amount_label(row) -> str:
    key = AMOUNT_KEYS.get(row.get("param_method"))
    value = row.get(f"param_{key}") if key else None
    return f"{key}={float(value):g}" if value is not None and value == value else "?"


def derived_runs(source_run_ids, kind: str, experiment_id: str) -> pd.DataFrame:
    """Runs of ``kind`` (e.g. compress) in ``experiment_id`` made from one of ``source_run_ids``, flattened."""
    ids = sorted(set(source_run_ids))
    if not ids:
        return pd.DataFrame()
    df = flat(search([experiment_id], schema.tag_filter(schema.KIND, kind), tracking_uri()))
    if not len(df) or "ganlab_source_run_id" not in df:
        return pd.DataFrame()
    return df[df["ganlab_source_run_id"].isin(ids) & (df["status"] == "FINISHED")]


def draws(run_ids, uri: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Per run, the per-draw values (``<metric>_draw`` at step k) of DRAW_METRICS a prune run logged; runs from
    before paired draws existed have none.

    A database store is read in bulk (MLflow's ``get_metric_history_bulk``: one query per metric and 500 runs;
    one query per run and metric took 100 s at 10,000 runs); an HTTP store one history per request, 8 at once."""
    from concurrent.futures import ThreadPoolExecutor

    client_ = client(uri)
    ids = list(dict.fromkeys(run_ids))
    store = getattr(getattr(client_, "_tracking_client", None), "store", None)
    if hasattr(store, "get_metric_history_bulk"):
        found: dict[str, dict[str, list[tuple[int, float]]]] = {i: {} for i in ids}
        for name in DRAW_METRICS:
            for start in range(0, len(ids), BULK_RUNS):
                chunk = ids[start:start + BULK_RUNS]
                for m in store.get_metric_history_bulk(chunk, f"{name}_draw", max_results=10**12):  # all of them
                    found[m.run_id].setdefault(name, []).append((m.step, m.value))
        return {i: {k: [v for _, v in sorted(h)] for k, h in got.items()} for i, got in found.items()}

    def one(run_id: str) -> dict[str, list[float]]:
        got = {}
        for name in DRAW_METRICS:
            history = sorted(client_.get_metric_history(run_id, f"{name}_draw"), key=lambda m: m.step)
            if history:
                got[name] = [m.value for m in history]
        return got

    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:  # one request per run and metric: overlap their waits
        return dict(zip(ids, pool.map(one, ids)))
