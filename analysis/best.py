"""The step after a pruning sweep: pick its operating point by the paired verdict, chart the comparison on the
parent run, and register that point's generator in the MLflow Model Registry as ``<registered_model>@best``.

The sweep engine (sweeps/) only runs trials and closes their runs; `ganlab sweep prune` and `ganlab sweep resume`
call :func:`register_best` once the sweep has finished, and so can anyone holding a finished sweep's run id.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

from analysis import aggregate, plots
from analysis.runs import draws, flat, search
from ganlab.faults import pause_point
from ganlab.metrics.verdict import CANNOT_TELL, WITHIN, WORSE
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from sweeps.spec import SweepSpec, spec_from_dict


def sweep_spec(sweep_run_id: str, uri: str) -> SweepSpec:
    """The spec a sweep ran, as its parent run logged it."""
    with tempfile.TemporaryDirectory(prefix="ganlab-spec-") as tmp:
        path = tracking.download_artifact(sweep_run_id, schema.SPEC, tmp, uri)
        return spec_from_dict(yaml.safe_load(path.read_text()), where=f"run {sweep_run_id}: {schema.SPEC}")


def register_best(sweep_run_id: str, uri: str | None = None) -> dict | None:
    """Mark a finished pruning sweep's operating point and register its generator; returns the point (None when
    no trial has paired FCD draws, with a warning).

    The point is analysis.aggregate.operating_point's: the most pruned grid point judged "within" the spec's
    tolerance of its reference by the 95 % interval, else the lowest ratio. Its first source's generator becomes
    ``spec.model_name@best``; the version, its LoggedModel and the parent run say why.
    """
    from ganlab.runs.register import register_generator

    uri = uri or tracking.tracking_uri()
    spec = sweep_spec(sweep_run_id, uri)
    done = tracking.get_run(sweep_run_id, uri).data.tags.get(schema.REGISTERED_VERSION)
    if done is not None:  # a resumed finished sweep, or a second call: registered exactly once
        print(f"ganlab sweep: this sweep's operating point is {spec.model_name} version {done} already; nothing "
              "registered again", flush=True)
        return None
    runs, points = _judged_points(sweep_run_id, spec, uri)
    best = aggregate.operating_point(points) if points is not None else None
    if best is None:
        print("ganlab sweep: warning: no trial has paired fcd draws; no model registered", file=sys.stderr)
        return None
    run_id = best["run_ids"].split()[0]
    print(f"ganlab sweep: registering the generator of trial run {run_id} ({best['point']}: sparsity "
          f"{best['sparsity_mean']:.3f}, fcd ratio {best['ratio']:.3f} [{best['ratio_low']:.3f}, "
          f"{best['ratio_high']:.3f}] {best['verdict']}) as {spec.model_name}@best", flush=True)
    model_uri, version, model_id = register_generator(run_id, registered_model=spec.model_name, uri=uri)
    pause_point("registering")
    why = _why(best, runs.set_index("run_id").loc[run_id].get("ganlab_source_run_id", ""), sweep_run_id)
    client = tracking.mlflow_client(uri)
    for key, value in why.items():
        client.set_model_version_tag(spec.model_name, version, key, value)  # the registry page says why
    client.set_logged_model_tags(model_id, why)  # and the experiment's Models tab
    with tracking.reopened_run(sweep_run_id, uri) as parent:
        parent.log_metrics({"best_sparsity": float(best["sparsity_mean"]), "best_fcd": float(best["fcd_mean"]),
                            "best_fcd_ratio": float(best["ratio"]), "best_fcd_ratio_low": float(best["ratio_low"]),
                            "best_fcd_ratio_high": float(best["ratio_high"])})
        _log_comparison(parent, points, spec.tolerance)
        parent.set_tags({schema.BEST_RUN: run_id, schema.REGISTERED_MODEL: model_uri, schema.BEST_VERDICT:
                         best["verdict"], schema.BEST_POINT: best["point"]})
        parent.set_tags({schema.REGISTERED_VERSION: version})  # last: it says the registration is complete
    return best


def _judged_points(sweep_run_id: str, spec: SweepSpec, uri: str):
    """The sweep's finished trials and their grid points with verdicts (None when no trial finished)."""
    experiment_id = tracking.get_run(sweep_run_id, uri).info.experiment_id
    runs = flat(search([experiment_id], schema.child_filter(sweep_run_id) + " and attributes.status = 'FINISHED'",
                       uri))
    if runs.empty:
        return runs, None
    ids = list(runs["run_id"])
    return runs, aggregate.add_verdicts(aggregate.grid_points(runs, ["fcd"]), runs, draws(ids, uri), spec.tolerance)


def _why(best, source_run_id: str, sweep_run_id: str) -> dict[str, str]:
    return {"sparsity": f"{best['sparsity_mean']:.4f}", "fcd_ratio": f"{best['ratio']:.4f}",
            "fcd_ratio_ci95": f"[{best['ratio_low']:.4f}, {best['ratio_high']:.4f}]",
            "verdict": str(best["verdict"]), "reference": str(best["reference"]), "method": str(best["family"]),
            "point": str(best["point"]), "source_run_id": str(source_run_id), "sweep_run_id": sweep_run_id}


def _log_comparison(parent, points, tolerance: float) -> None:
    """The verdicts table, the ratio chart and the verdict counts, on the sweep's parent run."""
    parent.log_text(points.drop(columns=["run_ids"]).to_csv(index=False), schema.VERDICTS)
    with tempfile.TemporaryDirectory(prefix="ganlab-chart-") as tmp:
        chart = plots.ratio_plot(points, Path(tmp), tolerance)
        if chart is not None:
            parent.log_file(chart.rename(Path(tmp) / schema.TRIALS_CHART))
    pruned = points[~points["control"].astype(bool)]
    parent.log_metrics({"points_within": float((pruned["verdict"] == WITHIN).sum()),
                        "points_worse": float((points["verdict"] == WORSE).sum()),
                        "points_cannot_tell": float((points["verdict"] == CANNOT_TELL).sum())})
