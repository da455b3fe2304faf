"""Where a sweep's models come from and go: the sources a pruning sweep prunes, and a training sweep's
repeats of its best configuration (more dense sources, for error bars)."""

from __future__ import annotations

import dataclasses
import statistics

from ganlab.errors import ConfigError, GanlabError, RunNotFoundError
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from sweeps.results import finish
from sweeps.spec import SweepSpec
from sweeps.trials import TrialContext, train_trial


def resolve_sources(from_runs: list[str], from_sweep: str | None, top: int, uri: str) -> list[str]:
    """The run ids to prune: the --from-run ids themselves, or the ``top`` best trials of --from-sweep."""
    if top < 1:
        raise ConfigError(f"--top must be at least 1 (got {top})")
    if from_runs:
        if len(set(from_runs)) != len(from_runs):
            raise ConfigError(f"--from-run names run {_first_repeated(from_runs)} twice")
        for run_id in from_runs:
            run = tracking.get_run(run_id, uri)
            if run.data.tags.get(schema.KIND) not in ("train", "prune"):
                raise GanlabError(f"run {run_id} is a {run.data.tags.get(schema.KIND)!r} run, not a trained model")
        return list(from_runs)
    ranked = ranked_trials(from_sweep, uri)
    if len(ranked) < top:
        raise ConfigError(f"--top {top}: training sweep {from_sweep} has only {len(ranked)} finished trial(s) that "
                          f"did not collapse or diverge; give --top {len(ranked)} or add `repeats:` to its spec")
    return ranked[:top]


def _first_repeated(values: list[str]) -> str:
    seen: set[str] = set()
    return next(v for v in values if v in seen or seen.add(v))


def ranked_trials(sweep_id: str, uri: str) -> list[str]:
    """A finished training sweep's usable trials, best first: its best trial, that trial's repeats (same
    configuration, new seeds) by the objective, then the other trials by the objective."""
    run = tracking.get_run(sweep_id, uri)
    best = run.data.tags.get(schema.BEST_RUN)
    if run.data.tags.get(schema.KIND) != "sweep" or not best:
        raise RunNotFoundError(f"run {sweep_id} is not a finished training sweep (no {schema.BEST_RUN} tag)")
    metric = run.data.params.get("objective", "fcd")
    sign = -1.0 if run.data.params.get("mode", "min") == "max" else 1.0
    children = schema.child_runs(tracking.mlflow_client(uri), run.info.experiment_id, sweep_id,
                                 "attributes.status = 'FINISHED'")
    usable = [c for c in children if c.data.tags.get(schema.STATUS, "ok") == "ok" and c.info.run_id != best
              and metric in c.data.metrics]

    def order(c):
        return (c.data.tags.get(schema.REPEAT_OF) != best, sign * c.data.metrics[metric])

    return [best, *(c.info.run_id for c in sorted(usable, key=order))]


def repeat_best(best, spec: SweepSpec, ctx: TrialContext, train_set, evaluator, make_tuner, fit, parent,
                uri: str) -> None:
    """Train the best configuration ``spec.repeats`` more times with seeds seed+1 ... seed+N, as more child
    runs tagged ganlab.repeat_of=<best run>; log the objective's mean and std over best + repeats.

    A resumed sweep runs only the repeats that have not finished (an unfinished one starts over).
    """
    from ray import tune

    best_run = best.metrics["mlflow_run_id"]
    client = tracking.mlflow_client(uri)
    earlier = schema.child_runs(client, ctx.experiment_id, parent.run_id, schema.tag_filter(schema.REPEAT_OF, best_run))
    done = {}
    for run in earlier:
        if run.info.status == "FINISHED":
            done[int(run.data.params["seed"])] = run
        else:
            client.delete_run(run.info.run_id)
    base_seed = int(best.config.get("seed", ctx.base.get("seed", 0)))
    seeds = [base_seed + i for i in range(1, spec.repeats + 1) if base_seed + i not in done]
    print(f"ganlab sweep: training the best configuration {spec.repeats} more time(s) with new seeds "
          f"({len(seeds)} to run)", flush=True)
    if seeds:
        rctx = dataclasses.replace(ctx, tags={schema.REPEAT_OF: best_run})
        trainable = tune.with_parameters(train_trial, ctx=rctx, train_set=train_set, evaluator=evaluator)
        tuner = make_tuner(trainable, {**best.config, "seed": tune.grid_search(seeds)})
        finish(fit(tuner), spec, parent, uri, mark_best=False)
    runs = schema.child_runs(client, ctx.experiment_id, parent.run_id,
                             f"tags.`{schema.REPEAT_OF}` = '{best_run}' and attributes.status = 'FINISHED'")
    values = [best.metrics[spec.metric], *(r.data.metrics[spec.metric] for r in runs if spec.metric in r.data.metrics)]
    mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    parent.set_tags({schema.REPEAT_RUN_IDS: ",".join(r.info.run_id for r in runs)})
    parent.log_metrics({f"best_{spec.metric}_mean": mean, f"best_{spec.metric}_std": std, "repeats": len(runs)})
