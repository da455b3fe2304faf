"""Where a sweep's models come from: the sources a pruning sweep prunes, and the bookkeeping of a training
sweep's repeats of its best configuration (more dense sources, for error bars; the runner fits them)."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

from ganlab.errors import ConfigError, GanlabError, RunNotFoundError
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from sweeps.spec import SweepSpec
from sweeps.trials import TrialContext


@dataclass(frozen=True)
class Sources:
    """The trained models a pruning sweep prunes: ``runs`` (run ids), or the ``top`` best trials of training sweep
    ``sweep``."""

    runs: tuple[str, ...] = ()
    sweep: str | None = None
    top: int = 1

    @classmethod
    def of(cls, runs: str | list[str] | None = None, sweep: str | None = None, top: int = 1) -> Sources:
        return cls(tuple([runs] if isinstance(runs, str) else runs or ()), sweep, top)


def resolve_sources(sources: Sources, uri: str) -> list[str]:
    """The run ids to prune: the given runs themselves, or the ``top`` best trials of the training sweep."""
    if sources.top < 1:
        raise ConfigError(f"--top must be at least 1 (got {sources.top})")
    if sources.runs:
        if len(set(sources.runs)) != len(sources.runs):
            raise ConfigError(f"--from-run names run {_first_repeated(list(sources.runs))} twice")
        for run_id in sources.runs:
            run = tracking.get_run(run_id, uri)
            if run.data.tags.get(schema.KIND) not in ("train", "prune"):
                raise GanlabError(f"run {run_id} is a {run.data.tags.get(schema.KIND)!r} run, not a trained model")
        return list(sources.runs)
    if sources.sweep is None:
        raise ConfigError("a pruning sweep needs its sources: --from-run RUN_ID or --from-sweep SWEEP_RUN_ID")
    ranked = ranked_trials(sources.sweep, uri)
    if len(ranked) < sources.top:
        raise ConfigError(f"--top {sources.top}: training sweep {sources.sweep} has only {len(ranked)} finished "
                          f"trial(s) that did not collapse or diverge; give --top {len(ranked)} or add `repeats:` to "
                          "its spec")
    return ranked[:sources.top]


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


def seeds_to_repeat(best, spec: SweepSpec, ctx: TrialContext, uri: str) -> list[int]:
    """The seeds still to train the best configuration with: seed+1 ... seed+``spec.repeats``, less those whose
    run (a child tagged ganlab.repeat_of=<best run>) finished; an unfinished one is removed and starts over."""
    best_run = best.metrics["mlflow_run_id"]
    client = tracking.mlflow_client(uri)
    done = set()
    for run in schema.child_runs(client, ctx.experiment_id, ctx.run.parent_run_id,
                                 schema.tag_filter(schema.REPEAT_OF, best_run)):
        if run.info.status == "FINISHED":
            done.add(int(run.data.params["seed"]))
        else:
            client.delete_run(run.info.run_id)
    base_seed = int(best.config.get("seed", ctx.base.get("seed", 0)))
    return [base_seed + i for i in range(1, spec.repeats + 1) if base_seed + i not in done]


def repeat_context(best, ctx: TrialContext) -> TrialContext:
    """The trials' context for the repeats: every run tagged ganlab.repeat_of=<best run>."""
    tags = {**ctx.run.tags, schema.REPEAT_OF: best.metrics["mlflow_run_id"]}
    return dataclasses.replace(ctx, run=dataclasses.replace(ctx.run, tags=tags))


def log_repeats(best, spec: SweepSpec, ctx: TrialContext, parent, uri: str) -> None:
    """The objective's mean and std over the best trial and its finished repeats, and the repeats' run ids, on
    the sweep's parent run."""
    best_run = best.metrics["mlflow_run_id"]
    runs = schema.child_runs(tracking.mlflow_client(uri), ctx.experiment_id, ctx.run.parent_run_id,
                             schema.tag_filter(schema.REPEAT_OF, best_run) + " and attributes.status = 'FINISHED'")
    values = [best.metrics[spec.metric], *(r.data.metrics[spec.metric] for r in runs if spec.metric in r.data.metrics)]
    mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    parent.set_tags({schema.REPEAT_RUN_IDS: ",".join(r.info.run_id for r in runs)})
    parent.log_metrics({f"best_{spec.metric}_mean": mean, f"best_{spec.metric}_std": std, "repeats": len(runs)})
