"""The Ray Tune trainables: thin wrappers over ganlab.runs.train / ganlab.runs.prune.

Each trial logs one MLflow child run of the sweep's parent run. Everything a trial needs from
the driver — the tracking URI, the data dir, the parent run, the base config — arrives in its
``TrialContext``; data and the scoring classifier arrive by reference (``tune.with_parameters``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab.config import AMOUNT_KEYS
from ganlab.gan import health
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from ganlab.tracking.store import RunContext
from sweeps.spec import RECIPE_KEYS

OBJECTIVE = "objective"  # a recipe search's metric: the pruned FCD (each pass's while fine-tuning, then the final)
FINAL = "final_"  # ... and again as final_objective in a trial's last report (ASHA stops others before it)
HEALTHY = "healthy_"  # a training trial reports its objective again as healthy_<objective>, NaN if it collapsed


@dataclass(frozen=True)
class TrialContext:
    """What the driver hands every trial (pickled once by Tune): where its run is logged — ``run``, a RunContext
    whose uri is the served store, whose parent is the sweep's run and whose tags every trial's run carries
    (e.g. ganlab.repeat_of) — and what it trains or prunes. A trial adds its own fields with
    ``dataclasses.replace(ctx.run, ...)``."""

    run: RunContext
    experiment_id: str
    cpus: float
    gpus: float = 0.0  # of one GPU: a fraction caps the trial's share of its memory
    objective: str = "fcd"  # train: the metric the sweep ranks trials by (reported again as healthy_<metric>)
    base: dict[str, Any] = field(default_factory=dict)  # train: the TrainConfig every trial starts from
    rules: dict[str, Any] = field(default_factory=dict)  # train: HealthRules
    source_run_ids: list[str] = field(default_factory=list)  # prune: the models pruned
    points: list = field(default_factory=list)  # prune: the grid, as the driver built it (PruneConfigs)
    report_passes: bool = False  # prune, a recipe search: report the FCD of every fine-tuning pass (ASHA reads it)

    @property
    def uri(self) -> str:
        return self.run.uri

    def trial_run(self, tags: dict[str, str], run_name: str | None = None) -> RunContext:
        """The context of one trial's run: the sweep's tags and the trial's, no progress bars."""
        return dataclasses.replace(self.run, tags={**self.run.tags, **tags}, progress=False,
                                   run_name=run_name or self.run.run_name)


def _setup(ctx: TrialContext) -> dict[str, str]:
    """Threads from the trial's CPUs; the tags that tie its MLflow run to the Tune trial and node."""
    import ray
    from ray import tune

    from ganlab.device import limit_gpu_memory, set_threads
    from ganlab.metrics.distribution import metric_classes

    set_threads(max(1, int(ctx.cpus)))  # the trial's CPUs, not the machine's: trials share it
    _temp_files_under_the_sweep(ctx.run.parent_run_id)
    metric_classes()  # the scoring metrics' slow first import, while the store may still boot: not after it
    tracking.wait_for_store(ctx.uri)  # the sweep's served store may still be booting
    share = limit_gpu_memory(ctx.gpus)  # Ray shows the trial its GPU (CUDA_VISIBLE_DEVICES); a fraction shares it
    return {schema.TRIAL_ID: tune.get_context().get_trial_id(),
            schema.NODE_ID: ray.get_runtime_context().get_node_id(),
            **({schema.GPU_MEMORY_SHARE: f"{share:g}"} if share is not None else {})}


def _temp_files_under_the_sweep(parent_run_id: str) -> None:
    """This worker's temporary files (checkpoints, downloads: every ``tempfile`` user) go to the sweep's own temp
    folder, which the sweep removes when it ends or resumes: a trial killed with its driver leaves nothing behind
    in the system's temp directory."""
    from sweeps.storage import trial_temp_dir

    tempfile.tempdir = None  # a worker Tune reuses had it set by its last trial: start from the system's
    folder = trial_temp_dir(parent_run_id)
    folder.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(folder)


def retire_run(client, run_id: str) -> None:
    """A run whose trial died: ended KILLED (never left RUNNING), then deleted (its trial has another run)."""
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED")
    client.delete_run(run_id)


def _child(ctx: TrialContext, where: str):
    """A child run of the sweep's parent run that matches the MLflow filter ``where``, if any."""
    runs = schema.child_runs(tracking.mlflow_client(ctx.uri), ctx.experiment_id, ctx.run.parent_run_id, where)
    return runs[0] if runs else None


def _existing_child(ctx: TrialContext, trial_id: str):
    """The MLflow child run an earlier attempt of this trial created, if any."""
    return _child(ctx, schema.tag_filter(schema.TRIAL_ID, trial_id))


def _finished_grid_point(ctx: TrialContext, point: str):
    """A finished child run of this grid point by a trial the resumed sweep's Tune snapshot had not recorded
    yet (the driver died before Tune uploaded it): Tune gave the point a new trial, the run is still good."""
    return _child(ctx, schema.tag_filter(schema.GRID_POINT, point) + " and attributes.status = 'FINISHED'")


@contextlib.contextmanager
def restored_checkpoint(checkpoint) -> Iterator[tuple[Path, dict]]:
    """A Tune checkpoint's model file (in a temp dir removed afterwards) and its meta.json."""
    with checkpoint.as_directory() as d, tempfile.TemporaryDirectory(prefix="ganlab-trial-") as tmp:
        local = Path(tmp) / "last.pt"
        local.write_bytes((Path(d) / "last.pt").read_bytes())
        meta = json.loads((Path(d) / "meta.json").read_text())
        yield local, meta


def train_trial(config: dict[str, Any], ctx: TrialContext, train_set, evaluator) -> None:
    """One training trial: ganlab.runs.train.train_run with Tune reporting and checkpoints."""
    from ray import tune

    from ganlab.runs.train import TrainInputs, train_run

    tags = _setup(ctx)
    settings = {**ctx.base, **config}

    def on_epoch(outcome) -> None:
        metrics = _tune_metrics(outcome.metrics)
        metrics.update(epoch=outcome.report.epoch, ganlab_status=outcome.status, mlflow_run_id=outcome.run_id)
        metrics.update(_healthy(metrics, ctx.objective))
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "last.pt").write_bytes(outcome.checkpoint.read_bytes())
            (Path(d) / "meta.json").write_text(json.dumps({"run_id": outcome.run_id}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    common = dict(inputs=TrainInputs(train_set, evaluator, health.HealthRules(**ctx.rules)), on_epoch=on_epoch)
    searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))
    run_ctx = ctx.trial_run(tags, run_name=f"train {searched}".strip() if searched else None)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restored trial (resume or retry): continue its run from its checkpoint
        with restored_checkpoint(checkpoint) as (local, meta):
            run = tracking.get_run(meta["run_id"], ctx.uri)
            if run.info.status == "FINISHED":
                # it had ended (done, collapsed, diverged) before the driver died: report, don't train on
                metrics = {**_tune_metrics(run.data.metrics), "mlflow_run_id": run.info.run_id,
                           "ganlab_status": run.data.tags.get(schema.STATUS, health.OK)}
                tune.report({**metrics, **_healthy(metrics, ctx.objective)})
                return
            train_run(settings, run_ctx, resume=str(local), run_id=meta["run_id"], **common)
        return
    # an attempt that died before Tune recorded a checkpoint starts over, in its own run: the steps and
    # epochs it had logged are not logged again (train_run skips them)
    earlier = _existing_child(ctx, tags[schema.TRIAL_ID])
    train_run(settings, run_ctx, run_id=earlier.info.run_id if earlier is not None else None, **common)


def _tune_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric metrics for Tune, with a penalty for an objective a diverged trial never produced."""
    out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for key, value in schema.PENALTY.items():  # an objective a diverged trial never produced
        if key not in out or not math.isfinite(out[key]):
            out[key] = value
    return out


def _healthy(metrics: dict[str, Any], objective: str) -> dict[str, float]:
    """The objective again as healthy_<objective>, NaN for a collapsed or diverged trial: what the sweep's best
    trial is picked by (sweeps.results.mark_best_trial)."""
    ok = metrics.get("ganlab_status") == health.OK and objective in metrics
    return {HEALTHY + objective: float(metrics[objective]) if ok else math.nan}


def prune_trial(config: dict[str, Any], ctx: TrialContext, train_set, evaluator) -> None:
    """One grid point: ganlab.runs.prune.prune_run on the sweep's source run, then one Tune report."""
    from ray import tune

    from ganlab.runs.prune import PruneInputs, prune_run

    amount = f"@{config['amount']:g}" if config.get("amount") is not None else ""
    recipe = ",".join(f"{k}={config[k]}" for k in sorted(RECIPE_KEYS) if k in config)  # a recipe search's choice
    point = f"{config.get('point', 0)}{amount}{';' + recipe if recipe else ''}"
    tags = {**_setup(ctx), schema.GRID_POINT: f"{point}/{config.get('source', 0)}"}
    earlier = _existing_child(ctx, tags[schema.TRIAL_ID]) or _finished_grid_point(ctx, tags[schema.GRID_POINT])
    if earlier is not None and earlier.info.status == "FINISHED":
        # finished before the driver died: report what it logged, don't redo it
        run_id, metrics = earlier.info.run_id, dict(earlier.data.metrics)
        draws = _logged_draws(ctx.uri, run_id)
        if earlier.data.tags.get(schema.TRIAL_ID) != tags[schema.TRIAL_ID]:  # this trial's run from now on
            tracking.mlflow_client(ctx.uri).set_tag(run_id, schema.TRIAL_ID, tags[schema.TRIAL_ID])
    else:
        if earlier is not None:
            retire_run(tracking.mlflow_client(ctx.uri), earlier.info.run_id)
        source = ctx.source_run_ids[config.get("source", 0)]
        on_pass = (lambda k, scores: tune.report({OBJECTIVE: scores["fcd"], "finetune_pass": k})) \
            if ctx.report_passes else None
        result = prune_run(source, point_of(ctx, config), ctx.trial_run(tags),
                           PruneInputs(evaluator, train_set, on_pass=on_pass))
        run_id, metrics, draws = result.run_id, result.metrics, result.draws
    # the per-draw values travel with the result: the frontier search judges each step from Tune's trial list
    final = metrics.get("fcd", math.nan)  # the pruned FCD, BN recalibrated: what a recipe search ranks by
    tune.report({**metrics, "mlflow_run_id": run_id, "ganlab_status": health.OK, "draws": draws, OBJECTIVE: final,
                 FINAL + OBJECTIVE: final})


def point_of(ctx: TrialContext, config: dict[str, Any]):
    """The trial's PruneConfig: its grid point, at the amount the frontier search chose, with the recovery settings
    a recipe search chose."""
    pcfg = ctx.points[config.get("point", 0)]
    recipe = {k: config[k] for k in RECIPE_KEYS if k in config}
    if config.get("amount") is not None:
        recipe[AMOUNT_KEYS[pcfg.method]] = float(config["amount"])
    return dataclasses.replace(pcfg, **recipe) if recipe else pcfg


def _logged_draws(uri: str, run_id: str) -> dict[str, list[float]]:
    """A finished run's per-draw values, as it logged them (``<metric>_draw`` at step k)."""
    client = tracking.mlflow_client(uri)
    out = {}
    for name in schema.DRAW_METRICS:
        history = sorted(client.get_metric_history(run_id, f"{name}_draw"), key=lambda m: m.step)
        if history:
            out[name] = [m.value for m in history]
    return out
