"""What a finished sweep leaves: every child run closed, the best trial marked, a pruning sweep's best
generator registered in the MLflow Model Registry."""

from __future__ import annotations

import json
import sys

from ganlab.gan import health
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from sweeps.spec import SweepSpec


def finish(results, spec: SweepSpec, logger, uri: str, mark_best: bool = True):
    """Close every child run Tune stopped (ASHA kills trials mid-run), and mark the best trial.

    Returns a training sweep's best Tune result (None when no trial finished, or for a pruning sweep).
    """
    client = tracking.mlflow_client(uri)
    done = []
    for result in results:
        run_id = (result.metrics or {}).get("mlflow_run_id")
        if not run_id:
            continue
        # Tune ends a trial it stops (ASHA) from the outside, so its run may read RUNNING or FAILED
        wanted = "FAILED" if result.error else "FINISHED"
        if client.get_run(run_id).info.status != wanted:
            client.set_terminated(run_id, wanted)
        if result.error is None:
            done.append(result)
    # A driver killed between a trial's start and Tune's next state snapshot leaves a child run that the
    # restored experiment knows nothing of (the searcher suggests a fresh trial instead): remove it, so
    # each trial has exactly one run.
    known = {(r.metrics or {}).get("trial_id") for r in results}
    parent = client.get_run(logger.run_id)
    for child in schema.child_runs(client, parent.info.experiment_id, logger.run_id):
        if child.info.status == "RUNNING" and child.data.tags.get(schema.TRIAL_ID) not in known:
            client.delete_run(child.info.run_id)
    if not mark_best:
        return None
    logger.log_metrics({"trials": len(results), "trials_errored": sum(r.error is not None for r in results)})
    if spec.kind == "train":
        ok = [r for r in done if r.metrics.get("ganlab_status") == health.OK] or done
        if ok:
            pick = min if spec.mode == "min" else max
            best = pick(ok, key=lambda r: r.metrics[spec.metric])
            logger.set_tags({schema.BEST_RUN: best.metrics["mlflow_run_id"]})
            logger.log_metrics({f"best_{spec.metric}": best.metrics[spec.metric]})
            logger.log_text(json.dumps({k: best.config[k] for k in best.config}, indent=2), schema.BEST_CONFIG)
            return best
    elif done:
        _register_best_generator(done, spec, logger, uri)
    return None


def _register_best_generator(done: list, spec: SweepSpec, logger, uri: str) -> None:
    """The operating point chosen by the paired verdict (analysis.aggregate.operating_point: the most pruned
    point "within" spec.tolerance of its reference by its 95 % interval, else the lowest ratio) marked on the
    parent run with its ratio, interval and verdict, and its first source's generator registered as
    spec.model_name@best."""
    import tempfile
    from pathlib import Path

    from analysis import aggregate, plots
    from analysis.runs import draws, flat, search
    from ganlab.runs.register import register_generator

    client = tracking.mlflow_client(uri)
    ids = [r.metrics["mlflow_run_id"] for r in done]
    experiment_id = client.get_run(logger.run_id).info.experiment_id
    runs = flat(search([experiment_id], schema.child_filter(logger.run_id), uri))
    runs = runs[runs["run_id"].isin(ids)]
    points = aggregate.add_verdicts(aggregate.grid_points(runs, ["fcd"]), runs, draws(ids, uri), spec.tolerance)
    best = aggregate.operating_point(points)
    if best is None:
        print("ganlab sweep: warning: no trial has paired fcd draws; no model registered", file=sys.stderr)
        return
    run_id = best["run_ids"].split()[0]
    print(f"ganlab sweep: registering the generator of trial run {run_id} ({best['point']}: sparsity "
          f"{best['sparsity_mean']:.3f}, fcd ratio {best['ratio']:.3f} [{best['ratio_low']:.3f}, "
          f"{best['ratio_high']:.3f}] {best['verdict']}) as {spec.model_name}@best", flush=True)
    model_uri, version, model_id = register_generator(run_id, registered_model=spec.model_name, uri=uri)
    source = runs.set_index("run_id").loc[run_id].get("ganlab_source_run_id", "")
    why = {"sparsity": f"{best['sparsity_mean']:.4f}", "fcd_ratio": f"{best['ratio']:.4f}",
           "fcd_ratio_ci95": f"[{best['ratio_low']:.4f}, {best['ratio_high']:.4f}]",
           "verdict": best["verdict"], "reference": best["reference"], "method": best["family"],
           "point": best["point"], "source_run_id": source, "sweep_run_id": logger.run_id}
    for key, value in why.items():
        client.set_model_version_tag(spec.model_name, version, key, str(value))  # the registry page says why
    client.set_logged_model_tags(model_id, {k: str(v) for k, v in why.items()})  # and the experiment's Models tab
    logger.set_tags({schema.BEST_RUN: run_id, schema.REGISTERED_MODEL: model_uri,
                     schema.REGISTERED_VERSION: version, schema.BEST_VERDICT: best["verdict"],
                     schema.BEST_POINT: best["point"]})
    logger.log_metrics({"best_sparsity": float(best["sparsity_mean"]), "best_fcd": float(best["fcd_mean"]),
                        "best_fcd_ratio": float(best["ratio"]), "best_fcd_ratio_low": float(best["ratio_low"]),
                        "best_fcd_ratio_high": float(best["ratio_high"])})
    within_ = points[(points["verdict"] == "within") & ~points["control"].astype(bool)]
    logger.log_text(points.drop(columns=["run_ids"]).to_csv(index=False), schema.VERDICTS)
    with tempfile.TemporaryDirectory(prefix="ganlab-chart-") as tmp:  # the comparison, on the parent run
        chart = plots.ratio_plot(points, Path(tmp), spec.tolerance)
        if chart is not None:
            logger.log_file(chart.rename(Path(tmp) / schema.TRIALS_CHART))
    logger.log_metrics({"points_within": float(len(within_)),
                        "points_worse": float((points["verdict"] == "worse").sum()),
                        "points_cannot_tell": float((points["verdict"] == "cannot tell").sum())})

