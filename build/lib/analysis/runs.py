"""Pull ganlab runs from MLflow into pandas (no torch here)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from ganlab.config import AMOUNT_KEYS  # torch-free, like ganlab.tracking
from ganlab.schema import DRAW_METRICS, child_filter
from ganlab.tracking import sqlite_path, tracking_uri  # the one definition of where the store is (no torch)


class AnalysisInputError(Exception):
    """An unknown sweep/experiment or nothing to analyse: one line, exit code 2."""


def _open_store(what: str) -> str:
    """Point mlflow at the tracking store; AnalysisInputError (creating nothing) if it does not exist."""
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise AnalysisInputError(f"{what} not found: no tracking store at {uri}")
    mlflow.set_tracking_uri(uri)
    return uri


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """metrics.x -> x, params.x -> param_x, tags.ganlab.x -> ganlab_x: short names for plots."""
    renames = {}
    for c in df.columns:
        if c.startswith("metrics."):
            renames[c] = c[len("metrics."):]
        elif c.startswith("params."):
            renames[c] = "param_" + c[len("params."):]
        elif c.startswith("tags.ganlab."):
            renames[c] = "ganlab_" + c[len("tags.ganlab."):]
        elif c == "tags.mlflow.parentRunId":
            renames[c] = "parent_run_id"
    return df.rename(columns=renames)


def get_run(run_id: str):
    uri = _open_store(f"sweep {run_id!r}")
    try:
        return mlflow.get_run(run_id)
    except MlflowException:
        raise AnalysisInputError(f"sweep {run_id!r} not found in {uri}") from None


def sweep_children(sweep_id: str) -> pd.DataFrame:
    """Child runs of sweep ``sweep_id`` (its trials), flattened."""
    parent = get_run(sweep_id)
    df = mlflow.search_runs(experiment_ids=[parent.info.experiment_id],
                            filter_string=child_filter(sweep_id), max_results=10000)
    return flat(df)


def experiment_runs(name: str, kind: str) -> pd.DataFrame:
    uri = _open_store(f"experiment {name!r}")
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        raise AnalysisInputError(f"experiment {name!r} not found in {uri}")
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id],
                            filter_string=f"tags.`ganlab.kind` = '{kind}'", max_results=10000)
    return flat(df)


def download(run_id: str, artifact_path: str, dst: Path) -> Path | None:
    """Local copy of one artifact, or None if the run does not have it."""
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(dst), tracking_uri=tracking_uri()))
    except Exception:
        return None


def amount_label(row) -> str:
    key = AMOUNT_KEYS.get(row.get("param_method"))
    value = row.get(f"param_{key}") if key else None
    return f"{key}={float(value):g}" if value is not None and value == value else "?"


def derived_runs(source_run_ids, kind: str, experiment_id: str) -> pd.DataFrame:
    """Runs of ``kind`` (e.g. compress) in ``experiment_id`` made from one of ``source_run_ids``, flattened."""
    ids = sorted(set(source_run_ids))
    if not ids:
        return pd.DataFrame()
    df = flat(mlflow.search_runs(experiment_ids=[experiment_id], filter_string=f"tags.`ganlab.kind` = '{kind}'",
                                  max_results=10000))
    if not len(df) or "ganlab_source_run_id" not in df:
        return pd.DataFrame()
    return df[df["ganlab_source_run_id"].isin(ids) & (df["status"] == "FINISHED")]


def draws(run_ids, uri: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Per run, the per-draw values (``<metric>_draw`` at step k) of DRAW_METRICS a prune run logged; runs from
    before paired draws existed have none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or tracking_uri())
    out = {}
    for run_id in dict.fromkeys(run_ids):
        got = {}
        for name in DRAW_METRICS:
            history = sorted(client.get_metric_history(run_id, f"{name}_draw"), key=lambda m: m.step)
            if history:
                got[name] = [m.value for m in history]
        out[run_id] = got
    return out
