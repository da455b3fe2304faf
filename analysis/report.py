"""``ganlab analyze``: runs -> pandas -> Pareto fronts, the seed's comparisons, sweep views -> PNG/CSV/HTML."""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from analysis import aggregate, plots
from analysis.aggregate import plus_minus
from analysis.costs import cost_plots
from analysis.frontiers import frontier_html, frontiers_of
from analysis.recipes import recipe_html, recipe_searches
from analysis.runs import (
    AnalysisInputError,
    derived_runs,
    download,
    download_many,
    draws,
    experiment_runs,
    get_run,
    sweep_children,
)
from analysis.runs import client as runs_client
from analysis.shown import ALL_SHOWN, labelled_points, on_front, shown_points
from ganlab.files import check_output_dir
from ganlab.tracking import schema
from ganlab.tracking.schema import LOWER_IS_BETTER

FRONT_METRICS = ("fcd", "kid", "ssim_mean", "msssim_mean", "uqi_mean", "coverage")


def analyze(sweep_id: str | list[str] | None = None, experiment: str | None = None, out: str | Path = "reports",
            tolerance: float = 0.05, ui_url: str | None = None, name: str | None = None) -> Path:
    """Build every picture and the HTML report; returns the report's path.

    ``tolerance``: "within 5 % of dense" is 0.05. ``ui_url``: the MLflow UI's address, for links to each
    run (default: the tracking URI when it is an http(s) server).
    """
    check_output_dir(out)  # before any query: an existing file as --out is one line now, not after the work
    objective = "fcd"
    sweep_ids = [sweep_id] if isinstance(sweep_id, str) else list(sweep_id or [])
    sweep_id = sweep_ids[0] if sweep_ids else None  # the report is logged to the first sweep
    if sweep_id:
        parent = get_run(sweep_id)
        children = pd.concat([sweep_children(s) for s in sweep_ids], ignore_index=True)
        kind = children["ganlab_kind"].iloc[0] if "ganlab_kind" in children and len(children) else None
        prune_runs = children if kind == "prune" else pd.DataFrame()
        train_runs = children if kind == "train" else pd.DataFrame()
        if kind == "prune":  # also show the training sweep the pruned model came from, if any
            source = (parent.data.tags.get(schema.SOURCE_RUN) or "").split(",")[0]
            train_parent = get_run(source).data.tags.get(schema.PARENT_RUN) if source else None
            if train_parent:
                train_runs = sweep_children(train_parent)
                objective = get_run(train_parent).data.params.get("objective", objective)
        else:
            objective = parent.data.params.get("objective", objective)  # what the training sweep ranked by
        name = name or parent.info.run_name or sweep_id
        compressed = derived_runs(prune_runs.get("run_id", []), "compress", parent.info.experiment_id)
    else:
        prune_runs = experiment_runs(experiment, "prune")
        train_runs = experiment_runs(experiment, "train")
        compressed = experiment_runs(experiment, "compress")
        name = name or experiment
    prune_runs = usable_prune_runs(prune_runs)
    if not len(prune_runs) and not len(train_runs):
        what = f"sweep {sweep_id}" if sweep_id else f"experiment {experiment}"
        raise AnalysisInputError(f"nothing to analyse: {what} has no runs with what a report needs")
    out = Path(out) / folder_name(name)
    if Path(os.path.abspath(out)).parent != Path(os.path.abspath(out.parent)):  # folder_name makes this hold
        raise AnalysisInputError(f"report folder {out} would lie outside --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        links = _Links(ui_url, prune_runs if len(prune_runs) else train_runs)
        report = _Report(name, out, sweep_id, tolerance, links, objective, frontiers_of(sweep_ids),
                         recipe_searches(sweep_ids))
        return _build(report, prune_runs, train_runs, compressed)
    except BaseException:
        if created:  # never leave an empty or half-written report folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise


def folder_name(name: str) -> str:
    """A run or experiment name (data from the store: anyone who can write there chose it) as one safe path
    component: letters, digits, '.', '-', '_' kept, anything else '_'; never empty, '.' or '..', at most 100."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:100].strip(".") or "report"
    return safe


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


class _Links:
    """Run ids as links into the MLflow UI when its address is known, else as code."""

    def __init__(self, ui_url: str | None, runs: pd.DataFrame):
        from ganlab.tracking.store import tracking_uri

        self.uri = ui_url or tracking_uri()
        self.experiment = {r: e for r, e in zip(runs.get("run_id", []), runs.get("experiment_id", []))}

    def run(self, run_id: str) -> str:
        from ganlab.tracking.store import ui_url

        exp = self.experiment.get(run_id)
        url = ui_url(self.uri, str(exp), run_id, via_ganlab=False) if exp is not None else None  # any server
        if url is None:
            return f"<code>{html.escape(run_id)}</code>"
        return f"<a href='{html.escape(url)}'><code>{html.escape(run_id[:8])}</code></a>"


@dataclass(frozen=True)
class _Report:
    """One report's settings: its title, folder, the sweep it is logged to, the tolerance, run links, objective."""

    name: str
    out: Path
    sweep_id: str | None
    tolerance: float
    links: _Links
    objective: str
    frontiers: dict = field(default_factory=dict)  # a frontier search's answer (frontiers.json), by family
    recipes: dict = field(default_factory=dict)  # recipe searches' best recipes and importances, by sweep


def _build(report: _Report, prune_runs: pd.DataFrame, train_runs: pd.DataFrame, compressed: pd.DataFrame) -> Path:
    out = report.out
    sections: list[tuple[str, list[Path], str]] = []
    produced: list[Path] = []
    answer = ""
    if len(prune_runs):
        answer, prune_sections = _prune_sections(prune_runs, report)
        sections += prune_sections
        cost = cost_plots(prune_runs, compressed, out)
        if cost is not None:
            sections.append(("What the pruning buys: quality against bytes stored and latency", [cost], ""))
        produced += [out / "pareto_front.csv", out / "grid_points.csv"]
    if len(train_runs):
        sections += _train_sections(train_runs, report.objective, out, report.links)
    page = _write_html(report.name, answer, sections, out)
    produced += [page, *(png for _, pngs, _ in sections for png in pngs)]
    if report.sweep_id:  # exactly this report's files: not what earlier reports left in the folder
        client = runs_client()
        for f in sorted(set(produced)):
            client.log_artifact(report.sweep_id, str(f), schema.ANALYSIS)
    return page


def _prune_sections(df: pd.DataFrame, report: _Report):
    """The answer (HTML), then the sections: Pareto plots per metric (grid-point means, error bars, dense line
    and band), the front table, method comparison, image strips and per-layer sparsity. A frontier search's
    answer comes first, and its frontiers are marked on the Pareto plots."""
    out, tolerance, links = report.out, report.tolerance, report.links
    metrics = [m for m in FRONT_METRICS if m in df]
    for m in set(FRONT_METRICS) - set(metrics):
        warnings.warn(f"no run has {m!r}; its Pareto plot is skipped", stacklevel=2)
    points = aggregate.grid_points(df, [*metrics, *(["fcd_inf"] if "fcd_inf" in df else [])])  # FCD∞ beside FCD
    points = aggregate.add_verdicts(points, df, draws(df["run_id"]), tolerance)
    points.to_csv(out / "grid_points.csv", index=False)
    front = aggregate.front_table(points, metrics)
    front.to_csv(out / "pareto_front.csv", index=False)
    pngs = [plots.pareto_plot(points, metric, out, tolerance, labelled_points(points, front, metric),
                              report.frontiers)[0]
            for metric in metrics]
    verdict_png = plots.ratio_plot(points, out, tolerance)
    pngs = [verdict_png, *pngs] if verdict_png is not None else pngs
    recal = int((df["param_bn_recalibrate"].astype(str) == "True").sum())
    note = (f"<p>Each point is a grid point: the mean over the {_sources(points)}, with ± one standard deviation "
            f"as error bars when there are several. The gold line is the dense model, the band is within "
            f"{tolerance:.0%} of it. BatchNorm recalibration (the pruned generator's running statistics "
            f"re-estimated on fresh noise before scoring): {recal} of {len(df)} runs; hollow markers are runs "
            "without it.</p>")
    sections = [("Pareto fronts: sparsity against image quality", pngs, note),
                ("The front, one row per grid point", [], _front_html(points, front, links))]
    sections.append(("Sensitivity vs percentage pruning", [plots.method_comparison(points, out, tolerance=tolerance)],
                     ""))
    strips = _strips_section(points, front, out)
    answer = frontier_html(report.frontiers, tolerance) + recipe_html(report.recipes) + _answer_html(points, tolerance)
    return answer, sections + ([strips] if strips else [])


def _strips_section(points: pd.DataFrame, front: pd.DataFrame, out: Path):
    """Image strips (same noise, first source) and per-layer sparsity of the points a reader compares; None when
    the runs have neither."""
    shown = shown_points(points, front)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = {p: row["run_ids"].split()[0] for p, row in shown.iterrows()}  # first source: strips share noise
        wanted = [(next(iter(first.values())), schema.STRIP_DENSE, tmp / "dense")] if first else []
        for run_id in first.values():
            wanted += [(run_id, schema.STRIP_PRUNED, tmp / run_id),
                       (run_id, schema.sparsity_table("generator"), tmp / run_id)]
        got = download_many(wanted)
        strips, tables = [], {}
        for p, row in shown.iterrows():
            strip, csv = got[(first[p], schema.STRIP_PRUNED)], got[(first[p], schema.sparsity_table("generator"))]
            if strip is not None:
                strips.append((f"{row['point']} (sparsity {row['sparsity_mean']:.2f})", strip))
            if csv is not None:
                tables[row["point"]] = pd.read_csv(csv)
        dense = got.get((wanted[0][0], schema.STRIP_DENSE)) if wanted else None
        pngs = []
        if strips and dense is not None:
            pngs.append(plots.pruning_strips([("dense generator", dense), *strips], out))
        if tables:
            pngs.append(plots.layer_heatmap(tables, out))
    if not pngs:
        return None
    which = "every grid point" if len(shown) == len(points) else (
        f"the {len(shown)} grid points on the FCD front and the operating point, of {len(points)}")
    return ("Different degrees of pruning (same noise, first source) and per-layer sparsity", pngs,
            f"<p>Shown: {which}.</p>")


def _sources(points: pd.DataFrame) -> str:
    n = int(points["n"].max()) if len(points) else 1
    return "sweep's single source model" if n <= 1 else f"sweep's {n} source models (n per point below)"


def _verdict_item(a: pd.Series, figure: str, tolerance: float) -> str:
    """One method's line of the answer: its crossing, then its highest point judged within (or how many cannot
    tell)."""
    star = a.get("crossing")
    text = f"<li><b>{html.escape(a['family'])}</b>: "
    text += f"crossing <b>{html.escape(star.label())}</b>; " if star is not None else ""
    if a["within_sparsity"] == a["within_sparsity"]:
        return text + (f"within {tolerance:.0%} up to sparsity <b>{a['within_sparsity'] * 100:.1f} %</b> "
                       f"({html.escape(a['within_point'])}: {figure} ratio {a['within_ratio']:.3f} "
                       f"[{a['within_low']:.3f}, {a['within_high']:.3f}])</li>")
    return text + f"no point is within {tolerance:.0%} by its 95 % interval ({a['undecided']} cannot tell)</li>"


def _answer_html(points: pd.DataFrame, tolerance: float) -> str:
    """How far can I prune before the images suffer: per method, the highest sparsity whose paired FCD ratio is
    within tolerance by its 95 % interval (ganlab.metrics.verdict); older runs without draws: the mean rule."""
    if (points.get("verdict", pd.Series(dtype=str)) != "").any():
        figure = "FCD∞" if (points.get("figure", pd.Series(dtype=str)) == "FCD∞").any() else "FCD"
        answers = aggregate.verdict_answers(points, tolerance)
        items = [_verdict_item(a, figure, tolerance) for _, a in answers.iterrows()]
        return ("<div class='answer'><p><b>How far can this GAN be pruned before its images suffer?</b> Per method, "
                f"its crossing s* (the sparsity where the typical source's {figure} ratio reaches {1 + tolerance:.2f}, "
                "a monotone fit per source, a t interval over the sources' crossings), and the highest sparsity whose "
                f"{figure} ratio to its reference (the dense control fine-tuned the same "
                f"way, else the dense model, BN recalibrated alike) has a 95 % interval below {1 + tolerance:.2f} "
                f"(paired evaluation draws, a t interval over the sources' log ratios):</p><ul>{''.join(items)}"
                "</ul></div>")
    dense = aggregate.dense_value(points, "fcd")
    if dense is None or "fcd_mean" not in points:
        return "<p class='answer'>No run logged FCD and the dense model's FCD, so there is no answer here.</p>"
    table = aggregate.answers(points, "fcd", tolerance)
    items = []
    for _, a in table.iterrows():
        if a["sparsity_mean"] != a["sparsity_mean"]:
            items.append(f"<li><b>{html.escape(a['family'])}</b>: no grid point stays within {tolerance:.0%} "
                         "of dense FCD</li>")
            continue
        n = int(a["n"])
        sparsity = plus_minus(a["sparsity_mean"] * 100, a["sparsity_std"] * 100, n, ".1f")
        items.append(f"<li><b>{html.escape(a['family'])}</b>: sparsity <b>{sparsity} %</b> "
                     f"at {html.escape(a['point'])}: FCD {plus_minus(a['fcd_mean'], a['fcd_std'], n, '.1f')} "
                     f"(n = {n})</li>")
    return (f"<div class='answer'><p><b>How far can this GAN be pruned before its images suffer?</b> The highest "
            f"sparsity whose FCD stays within {tolerance:.0%} of the dense model's ({dense:.1f}; threshold "
            f"{dense * (1 + tolerance):.1f}), per method:</p><ul>{''.join(items)}</ul></div>")


def _train_sections(df: pd.DataFrame, objective: str, out: Path, links: _Links):
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
        text = (f"<p>Best trial {links.run(best['run_id'])}: {objective} = {best[objective]:.2f}. "
                "Trials by status: " + ", ".join(f"{n} {html.escape(str(k))}" for k, n in counts.items()) + ".</p>")
    return [("Training sweep", pngs, text)] if pngs or text else []


def _last_sample_grid(run_id: str, dst: Path) -> Path | None:
    """The run's last samples/epoch_NNN.png (a trial stopped early has fewer than its epochs)."""
    files = sorted(a.path for a in runs_client().list_artifacts(run_id, schema.SAMPLES)
                   if a.path.rsplit("/", 1)[-1].startswith("epoch_"))
    return download(run_id, files[-1], dst) if files else None


def _front_html(points: pd.DataFrame, front: pd.DataFrame, links: _Links) -> str:
    """The front table; past ALL_SHOWN grid points only the FCD front's rows (every front is in
    pareto_front.csv): 10,000 rows on the similarity fronts are no table to read."""
    if len(points) <= ALL_SHOWN or "on_front" not in front:
        return _table_html(front, links)
    on_fcd = on_front(front, "fcd")
    return (f"<p>The {len(on_fcd)} grid points on the FCD front; all {len(front)} on some front are in "
            "<code>pareto_front.csv</code>.</p>" + _table_html(on_fcd, links))


def _table_html(table: pd.DataFrame, links: _Links) -> str:
    if not len(table):
        return "<p>No run had the metrics for a front.</p>"
    shown = table.copy()
    if "run_ids" in shown:
        shown["run_ids"] = [" ".join(links.run(r) for r in ids.split()) for ids in shown["run_ids"]]
    table_html = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", classes="front", border=0,
                               escape=False, na_rep="")
    return f"<div class='table-box'>{table_html}</div>"  # a wide table scrolls inside its box, not the page


def _write_html(name: str, answer: str, sections, out: Path) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ganlab report: {html.escape(name)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
             ".table-box{overflow-x:auto;max-width:100%}"
             "table.front{border-collapse:collapse;font-size:13px}"
             "table.front td,table.front th{padding:3px 8px;border-bottom:1px solid #ddd}"
             ".answer{background:#fffbe6;border-left:4px solid #e6b800;padding:.2em 1em}</style></head><body>",
             f"<h1>ganlab report: {html.escape(name)}</h1>", answer,
             "<p>Sparsity is the fraction of zero conv weights in the pruned network. FCD and KID compare generated "
             "with held-out real images in a classifier's feature space (lower is better); SSIM, MS-SSIM and UQI "
             "compare each pruned image with the dense generator's image from the same noise (1 = identical).</p>"]
    for title, pngs, extra in sections:  # figures first, then what explains or tabulates them
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for png in pngs:  # files beside the report (the folder is what is kept and logged), not inlined
            name = Path(png).name
            parts.append(f"<figure><img alt='{html.escape(Path(png).stem)}' loading='lazy' "
                         f"src='{html.escape(quote(name))}'><figcaption>{html.escape(name)}</figcaption></figure>")
        parts.append(extra)
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
