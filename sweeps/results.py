"""What a finished sweep leaves: every child run closed, and a training sweep's best trial (Tune's
``ResultGrid.get_best_result``) marked on its parent run. A pruning sweep's operating point is judged and
registered after the sweep, by analysis.best."""

from __future__ import annotations

import json

from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from sweeps.spec import SweepSpec
from sweeps.trials import FINAL, HEALTHY, OBJECTIVE, retire_run


def finish(results, logger, uri: str) -> None:
    """Close every child run Tune stopped (ASHA kills trials mid-run), and remove the runs of trials the
    restored experiment does not know."""
    client = tracking.mlflow_client(uri)
    for result in results:
        run_id = (result.metrics or {}).get("mlflow_run_id")
        # Tune ends a trial it stops (ASHA) from the outside, so its run may read RUNNING or FAILED
        wanted = "FAILED" if result.error else "FINISHED"
        if run_id and client.get_run(run_id).info.status != wanted:
            client.set_terminated(run_id, wanted)
    # A driver killed between a trial's start and Tune's next state snapshot leaves a child run that the
    # restored experiment knows nothing of (the searcher suggests a fresh trial instead): it ends KILLED (its
    # trial is dead) and is removed, so each trial has exactly one run.
    known = {(r.metrics or {}).get("trial_id") for r in results}
    parent = client.get_run(logger.run_id)
    for child in schema.child_runs(client, parent.info.experiment_id, logger.run_id):
        if child.info.status in ("RUNNING", "KILLED") and child.data.tags.get(schema.TRIAL_ID) not in known:
            retire_run(client, child.info.run_id)



def mark_best_trial(results, spec: SweepSpec, logger):
    """A training sweep's best trial by Tune's own ranking (last reported value of the objective), among
    trials that did not collapse or diverge when there are any; tagged, logged and returned (None when no
    trial reported the objective)."""
    for metric in (HEALTHY + spec.metric, spec.metric):
        try:
            best = results.get_best_result(metric=metric, mode=spec.mode, scope="last", filter_nan_and_inf=True)
        except RuntimeError:  # no trial reported a finite value of it
            continue
        if best.metrics and best.metrics.get("mlflow_run_id"):
            break
    else:
        return None
    logger.set_tags({schema.BEST_RUN: best.metrics["mlflow_run_id"]})
    logger.log_metrics({f"best_{spec.metric}": best.metrics[spec.metric]})
    logger.log_text(json.dumps(dict(best.config), indent=2), schema.BEST_CONFIG)
    return best


def log_frontiers(search, logger) -> dict:
    """A frontier search's answer on the sweep's parent run: frontiers.json (every family's status, the highest
    amount and sparsity judged within, the lowest judged worse, every judged step) and, per family k in its order,
    the metrics frontier_<k>_sparsity and frontier_<k>_worse_sparsity (the bracket's ends)."""
    answer = search.frontiers()
    logger.log_text(json.dumps(answer, indent=2), schema.FRONTIERS)
    metrics = {}
    for k, (name, frontier) in enumerate(answer.items()):
        for end, key in (("within", f"frontier_{k}_sparsity"), ("worse", f"frontier_{k}_worse_sparsity")):
            if frontier[end] is not None:
                metrics[key] = float(frontier[end]["sparsity"])
        print(f"ganlab sweep: frontier of {name}: {_said(frontier)}", flush=True)
    logger.log_metrics(metrics)
    return answer


def _said(frontier: dict) -> str:
    within, worse = frontier["within"], frontier["worse"]
    at = f"sparsity {within['sparsity']:.3f} within" if within else "no sparsity within"
    above = f", {worse['sparsity']:.3f} worse" if worse else ""
    return f"{at}{above} ({frontier['status']})"


def log_recipe_search(results, spec: SweepSpec, logger) -> dict | None:
    """A recipe search's answer on the sweep's parent run: the best recipe (Tune's get_best_result on the final
    pruned FCD of the trials ASHA let finish) as best_config.json, tagged and logged as best_fcd, and how much each
    searched setting mattered (Optuna's fANOVA importances over the finished trials) as recipe_importance.json and
    importance_<setting> metrics. Returns the best recipe (None when no trial finished)."""
    try:
        best = results.get_best_result(metric=FINAL + OBJECTIVE, mode="min", scope="last")
    except RuntimeError:
        return None
    recipe = {k: best.config[k] for k in spec.search if k in best.config}
    logger.log_text(json.dumps(recipe, indent=2), schema.BEST_CONFIG)
    logger.set_tags({schema.BEST_RUN: best.metrics["mlflow_run_id"]})
    logger.log_metrics({"best_fcd": float(best.metrics[FINAL + OBJECTIVE])})
    importance = recipe_importance(results, spec)
    if importance:
        logger.log_text(json.dumps(importance, indent=2), schema.RECIPE_IMPORTANCE)
        logger.log_metrics({f"importance_{k}": v for k, v in importance.items()})
    print(f"ganlab sweep: best recipe {recipe} (fcd {best.metrics[FINAL + OBJECTIVE]:.3f}); what mattered: "
          f"{', '.join(f'{k} {v:.2f}' for k, v in importance.items()) or 'too few finished trials to say'}",
          flush=True)
    return recipe


def recipe_importance(results, spec: SweepSpec) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, its default) over the finished trials, rebuilt as an in-memory
    study from Tune's results (the same whether the study was kept in an RDB or in memory); {} below 3 trials or
    one searched setting."""
    import optuna

    from sweeps.search import optuna_distributions

    distributions = optuna_distributions(spec)
    finished = [r for r in results if r.error is None and FINAL + OBJECTIVE in (r.metrics or {})]
    if len(finished) < 3 or len(distributions) < 2:
        return {}
    study = optuna.create_study(direction="minimize")
    for r in finished:
        study.add_trial(optuna.trial.create_trial(params={k: r.config[k] for k in distributions},
                                                  distributions=distributions,
                                                  value=float(r.metrics[FINAL + OBJECTIVE])))
    return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
