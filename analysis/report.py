"""``ganlab analyze``: runs -> pandas -> Pareto fronts, the seed's comparisons, sweep views -> PNG/CSV/HTML."""

from __future__ import annotations

import base64
import html
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd

from analysis import plots
from analysis.pareto import LOWER_IS_BETTER
from analysis.runs import (
    AnalysisInputError,
    amount_label,
    derived_runs,
    download,
    experiment_runs,
    get_run,
    sweep_children,
)

FRONT_METRICS = ("fcd", "kid", "ssim_mean", "msssim_mean", "uqi_mean", "coverage")


def analyze(sweep_id: str | None = None, experiment: str | None = None, out: str | Path = "reports") -> Path:
    """Build every picture and the HTML report; returns the report's path."""
    objective = "fcd"
    if sweep_id:
        parent = get_run(sweep_id)
        children = sweep_children(sweep_id)
        kind = children["ganlab_kind"].iloc[0] if "ganlab_kind" in children and len(children) else None
        prune_runs = children if kind == "prune" else pd.DataFrame()
        train_runs = children if kind == "train" else pd.DataFrame()
        if kind == "prune":  # also show the training sweep the pruned model came from, if any
            source = parent.data.tags.get("ganlab.source_run_id")
            train_parent = get_run(source).data.tags.get("mlflow.parentRunId") if source else None
            if train_parent:
                train_runs = sweep_children(train_parent)
                objective = get_run(train_parent).data.params.get("objective", objective)
        else:
            objective = parent.data.params.get("objective", objective)  # what the training sweep ranked by
        name = parent.info.run_name or sweep_id
        compressed = derived_runs(prune_runs.get("run_id", []), "compress", parent.info.experiment_id)
    else:
        prune_runs = experiment_runs(experiment, "prune")
        train_runs = experiment_runs(experiment, "train")
        compressed = experiment_runs(experiment, "compress")
        name = experiment
    prune_runs = usable_prune_runs(prune_runs)
    if not len(prune_runs) and not len(train_runs):
        what = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment}"
        raise AnalysisInputError(f"nothing to analyse: {what} has no runs with what a report needs")
    out = Path(out) / name
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _build(name, prune_runs, train_runs, compressed, objective, out, sweep_id)
    except BaseException:
        if created:  # never leave an empty or half-written report folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def usable_prune_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Finished prune runs that have what the plots read; the others are left out with a warning."""
    if not len(df):
        return df
    df = df[df["status"] == "FINISHED"] if "status" in df else df
    df = df.copy()
    for column, default in (("param_finetune_epochs", "0"), ("param_s", None), ("param_q", None),
                            ("param_ratio", None), ("param_bn_recalibrate", "False")):
        if column not in df:
            df[column] = default
    df["param_finetune_epochs"] = df["param_finetune_epochs"].fillna("0")
    df["param_bn_recalibrate"] = df["param_bn_recalibrate"].fillna("False")  # runs from before it existed
    needed = ("param_method", "sparsity")
    ok = pd.Series(True, index=df.index)
    for column in needed:
        ok &= df[column].notna() if column in df else False
    if not ok.all():
        warnings.warn(f"{int((~ok).sum())} prune run(s) without {' or '.join(needed)} left out of the report",
                      stacklevel=2)
    return df[ok]


def _build(name: str, prune_runs: pd.DataFrame, train_runs: pd.DataFrame, compressed: pd.DataFrame, objective: str,
           out: Path, sweep_id: str | None) -> Path:
    sections: list[tuple[str, list[Path], str]] = []
    produced: list[Path] = []
    if len(prune_runs):
        sections += _prune_sections(prune_runs, out)
        cost = plots.cost_plots(prune_runs, compressed, out)
        if cost is not None:
            sections.append(("What the pruning buys: quality against bytes stored and latency", [cost], ""))
        produced.append(out / "pareto_front.csv")
    if len(train_runs):
        sections += _train_sections(train_runs, objective, out)
    report = _write_html(name, sections, out)
    produced += [report, *(png for _, pngs, _ in sections for png in pngs)]
    if sweep_id:  # exactly this report's files: not what earlier reports left in the folder
        client = mlflow.tracking.MlflowClient()
        for f in sorted(set(produced)):
            client.log_artifact(sweep_id, str(f), "analysis")
    return report


def _prune_sections(df: pd.DataFrame, out: Path):
    sections = []
    fronts = []
    pngs = []
    for metric in FRONT_METRICS:
        if metric not in df:
            warnings.warn(f"no run has {metric!r}; its Pareto plot is skipped", stacklevel=2)
            continue
        png, front = plots.pareto_plot(df, metric, out)
        pngs.append(png)
        cols = [c for c in ("run_id", "param_method", "param_s", "param_q", "param_ratio", "param_finetune_epochs",
                            "param_bn_recalibrate", "sparsity", metric) if c in front and front[c].notna().any()]
        table = front[cols].assign(front_metric=metric).rename(columns={metric: "value"})
        fronts.append(table)
    front_all = pd.concat(fronts, ignore_index=True) if fronts else pd.DataFrame()
    front_all.to_csv(out / "pareto_front.csv", index=False)
    recal = int((df["param_bn_recalibrate"].astype(str) == "True").sum())
    note = (f"<p>BatchNorm recalibration (the pruned generator's running statistics re-estimated on fresh noise "
            f"before scoring): {recal} of {len(df)} runs; hollow markers are runs without it.</p>")
    sections.append(("Pareto fronts: sparsity against image quality", pngs, note + _front_table_html(front_all)))
    sections.append(("Sensitivity vs percentage pruning", [plots.method_comparison(df, out)], ""))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ordered = df.sort_values(["param_method", "sparsity"])
        strips, tables = [], {}
        dense = None
        for _, row in ordered.iterrows():
            finetune = int(float(row.get("param_finetune_epochs", 0) or 0))
            label = f"{row['param_method']} {amount_label(row)}" + (f" +ft{finetune}" if finetune else "")
            if dense is None:
                dense = download(row["run_id"], "samples/strip_dense.png", tmp / "dense")
            strip = download(row["run_id"], "samples/strip_pruned.png", tmp / row["run_id"])
            if strip is not None:
                strips.append((f"{label} (sparsity {row['sparsity']:.2f})", strip))
            csv = download(row["run_id"], "sparsity/generator.csv", tmp / row["run_id"])
            if csv is not None:
                tables[label] = pd.read_csv(csv)
        pngs = []
        if strips and dense is not None:
            pngs.append(plots.pruning_strips([("dense generator", dense), *strips], out))
        if tables:
            pngs.append(plots.layer_heatmap(tables, out))
        if pngs:
            sections.append(("Different degrees of pruning (same noise) and per-layer sparsity", pngs, ""))
    return sections


def _train_sections(df: pd.DataFrame, objective: str, out: Path):
    pngs = []
    view = plots.sweep_views(df, objective, out)
    if view is not None:
        pngs.append(view)
    ok = df[df.get("ganlab_status", "ok") == "ok"] if "ganlab_status" in df else df
    pool = ok if len(ok) and objective in ok else df
    text = ""
    if objective in pool and pool[objective].notna().any():
        values = pd.to_numeric(pool[objective], errors="coerce")
        best = pool.loc[values.idxmin() if LOWER_IS_BETTER.get(objective, True) else values.idxmax()]
        with tempfile.TemporaryDirectory() as tmp:
            grid = _last_sample_grid(best["run_id"], Path(tmp))
            if grid is not None:
                target = out / "best_trial_samples.png"
                target.write_bytes(grid.read_bytes())
                pngs.append(target)
        counts = df.get("ganlab_status", pd.Series(dtype=str)).fillna("ok").value_counts().to_dict()
        text = (f"<p>Best trial <code>{html.escape(best['run_id'])}</code>: {objective} = {best[objective]:.2f}. "
                f"Trials by status: {html.escape(str(counts))}.</p>")
    return [("Training sweep", pngs, text)] if pngs or text else []


def _last_sample_grid(run_id: str, dst: Path) -> Path | None:
    """The run's last samples/epoch_NNN.png (a trial stopped early has fewer than its epochs)."""
    files = sorted(a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run_id, "samples")
                   if a.path.rsplit("/", 1)[-1].startswith("epoch_"))
    return download(run_id, files[-1], dst) if files else None


def _front_table_html(front: pd.DataFrame) -> str:
    if not len(front):
        return "<p>No run had the metrics for a front.</p>"
    return front.to_html(index=False, float_format=lambda v: f"{v:.4g}", classes="front", border=0)


def _write_html(name: str, sections, out: Path) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ganlab report: {html.escape(name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
             "table.front{border-collapse:collapse;font-size:13px}"
             "table.front td,table.front th{padding:3px 8px;border-bottom:1px solid #ddd}</style></head><body>",
             f"<h1>ganlab report: {html.escape(name)}</h1>",
             "<p>Sparsity is the fraction of zero conv weights in the pruned network. FCD and KID compare generated "
             "with held-out real images in a classifier's feature space (lower is better); SSIM, MS-SSIM and UQI "
             "compare each pruned image with the dense generator's image from the same noise (1 = identical).</p>"]
    for title, pngs, extra in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{extra}")
        for png in pngs:
            data = base64.b64encode(Path(png).read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(Path(png).stem)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(Path(png).name)}</figcaption></figure>")
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
