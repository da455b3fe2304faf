"""Run sweeps on Ray Tune. Trials are thin wrappers around ganlab.pipeline / ganlab.prune_run.

Data and the scoring classifier are loaded once in the driver and reach trials by reference
(``tune.with_parameters`` puts them in Ray's object store). Each trial logs one MLflow child run
of the sweep's parent run; the tracking URI comes from the driver (a local sqlite store is served
over HTTP for the sweep's duration, see mlflow_server.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ganlab import health, tracking
from ganlab.errors import GanlabError, RunNotFoundError
from sweeps.mlflow_server import served_store
from sweeps.spec import SweepSpec, spec_from_dict

STATE_FILE = "ganlab_sweep.json"
PENALTY = {"fcd": 1e9, "kid": 1e9, "coverage": 0.0, "class_kl": math.log(10)}  # for diverged trials


def _trial_tags() -> dict[str, str]:
    import ray
    from ray import tune

    return {"ganlab.trial_id": tune.get_context().get_trial_id(),
            "ganlab.node_id": ray.get_runtime_context().get_node_id()}


def _existing_child(ctx: dict, trial_id: str):
    """The MLflow child run an earlier attempt of this trial created, if any."""
    client = tracking.mlflow_client(ctx["tracking_uri"])
    runs = client.search_runs([ctx["experiment_id"]],
                              filter_string=f"tags.`mlflow.parentRunId` = '{ctx['parent_run_id']}' "
                                            f"and tags.`ganlab.trial_id` = '{trial_id}'")
    return runs[0] if runs else None


def _trial_setup(ctx: dict, cpus: float) -> None:
    import torch

    os.environ["MLFLOW_TRACKING_URI"] = ctx["tracking_uri"]
    torch.set_num_threads(max(1, int(cpus)))


def train_trial(config: dict[str, Any], ctx: dict, train_set, evaluator) -> None:
    """One training trial: ganlab.pipeline.train_run with Tune reporting and checkpoints."""
    from ray import tune

    from ganlab.config import TrainConfig
    from ganlab.pipeline import train_run

    _trial_setup(ctx, ctx["cpus"])
    cfg = dataclasses.replace(TrainConfig(**ctx["base"]), **config)
    tags = _trial_tags()
    resume = run_id = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restored trial (resume or retry): continue its run from its checkpoint
        with checkpoint.as_directory() as d:
            meta = json.loads((Path(d) / "meta.json").read_text())
            local = Path(tempfile.mkdtemp(prefix="ganlab-trial-")) / "last.pt"
            local.write_bytes((Path(d) / "last.pt").read_bytes())
        resume, run_id = str(local), meta["run_id"]
    else:
        earlier = _existing_child(ctx, tags["ganlab.trial_id"])
        if earlier is not None:  # an attempt died before its first checkpoint: start over in a new run
            tracking.mlflow_client(ctx["tracking_uri"]).delete_run(earlier.info.run_id)

    def on_epoch(outcome) -> None:
        metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float))}
        for key, value in PENALTY.items():
            if key not in metrics or not math.isfinite(metrics[key]):
                metrics[key] = value
        metrics.update(epoch=outcome.report.epoch, ganlab_status=outcome.status, mlflow_run_id=outcome.run_id)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "last.pt").write_bytes(outcome.checkpoint.read_bytes())
            (Path(d) / "meta.json").write_text(json.dumps({"run_id": outcome.run_id}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    train_run(cfg, resume=resume, run_id=run_id, experiment=ctx["experiment"], parent_run_id=ctx["parent_run_id"],
              train_set=train_set, evaluator=evaluator, health_rules=health.HealthRules(**ctx["rules"]),
              on_epoch=on_epoch, progress=False, tags=tags)


def prune_trial(config: dict[str, Any], ctx: dict, evaluator) -> None:
    """One grid point: ganlab.prune_run.prune_run on the sweep's source run, then one Tune report."""
    from ray import tune

    from ganlab.prune import PruneConfig
    from ganlab.prune_run import prune_run

    _trial_setup(ctx, ctx["cpus"])
    tags = _trial_tags()
    client = tracking.mlflow_client(ctx["tracking_uri"])
    earlier = _existing_child(ctx, tags["ganlab.trial_id"])
    if earlier is not None and earlier.info.status == "FINISHED":
        run_id = earlier.info.run_id  # finished before the driver died: report it, don't redo it
    else:
        if earlier is not None:
            client.delete_run(earlier.info.run_id)
        pcfg = PruneConfig(**ctx["points"][config["point"]])
        run_id = prune_run(ctx["source_run_id"], pcfg, experiment=ctx["experiment"],
                           parent_run_id=ctx["parent_run_id"], evaluator=evaluator, progress=False, tags=tags)
    metrics = dict(client.get_run(run_id).data.metrics)
    tune.report({**metrics, "mlflow_run_id": run_id, "ganlab_status": health.OK})


def _search_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    make = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {name: make[kind](args) for name, dist in spec.search.items() for kind, args in dist.items()}


def _resolve_source(from_run: str | None, from_sweep: str | None) -> str:
    """The run id to prune: --from-run itself, or the best trial of training sweep --from-sweep."""
    if from_run:
        run = tracking.get_run(from_run)
        if run.data.tags.get("ganlab.kind") not in ("train", "prune"):
            raise GanlabError(f"run {from_run} is a {run.data.tags.get('ganlab.kind')!r} run, not a trained model")
        return from_run
    run = tracking.get_run(from_sweep)
    best = run.data.tags.get("ganlab.best_run_id")
    if run.data.tags.get("ganlab.kind") != "sweep" or not best:
        raise RunNotFoundError(f"run {from_sweep} is not a finished training sweep (no ganlab.best_run_id tag)")
    return best


def _init_ray(address: str | None) -> bool:
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    return True


def _storage(spec: SweepSpec) -> str:
    return spec.storage_path if "://" in spec.storage_path else str(Path(spec.storage_path).resolve())


def run_sweep(spec: SweepSpec, *, address: str | None = None, from_run: str | None = None,
              from_sweep: str | None = None, data_dir: str | None = None) -> str:
    """Run a training or pruning sweep; returns the parent MLflow run id."""
    state = {"spec": spec.to_dict(), "address": address, "data_dir": data_dir}
    if spec.kind == "prune":
        state["source_run_id"] = _resolve_source(from_run, from_sweep)
    return _execute(spec, state, restore_path=None)


def resume_sweep(path: str) -> str:
    """Continue an interrupted sweep from its Tune experiment directory; returns the parent run id."""
    state_file = Path(path) / STATE_FILE
    if not state_file.is_file():
        raise GanlabError(f"{path} is not a ganlab sweep directory (no {STATE_FILE})")
    state = json.loads(state_file.read_text())
    spec = spec_from_dict({k: v for k, v in state["spec"].items()}, where=str(state_file))
    return _execute(spec, state, restore_path=str(Path(path).resolve()))


def _execute(spec: SweepSpec, state: dict, restore_path: str | None) -> str:
    from ray import tune

    from ganlab.data import load_images
    from ganlab.evaluation import Evaluator

    # everything that can be bad input is checked before any store or Ray is touched
    local_uri = state.get("tracking_uri_local") or tracking.tracking_uri()
    if spec.kind == "train":
        cfg = spec.train_config()
        train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=state["data_dir"],
                                subset_seed=cfg.seed)
    else:
        source = tracking.get_run(state["source_run_id"], local_uri)
        cfg = spec_from_dict({"kind": "train", "name": "x", "base": {
            "dataset": source.data.params.get("dataset", "fashion-mnist"),
            "image_size": int(source.data.params.get("image_size", 64))}}).train_config()
    experiment_id = tracking.ensure_experiment(spec.experiment, local_uri)
    storage = _storage(spec)
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    with served_store(local_uri) as server:  # the server boots (~10 s) while the classifier loads
        evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=state["data_dir"])
        uri = server.uri
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the driver too writes through the server while it runs
        started_ray = _init_ray(state["address"])
        try:
            if restore_path is None:
                parent = tracking.ganlab_run("sweep", experiment=spec.experiment, uri=uri, run_name=spec.name,
                                             params={"sweep_kind": spec.kind, "name": spec.name},
                                             tags={"ganlab.source_run_id": state.get("source_run_id", "")})
            else:
                parent = tracking.reopened_run(state["parent_run_id"], uri)
            with parent as logger:
                if restore_path is None:
                    logger.log_text(yaml.safe_dump(state["spec"], sort_keys=False), "spec.yaml")
                state.update(parent_run_id=logger.run_id, tracking_uri_local=local_uri)
                ctx = {"tracking_uri": uri, "experiment": tracking.experiment_name(spec.experiment),
                       "experiment_id": experiment_id, "parent_run_id": logger.run_id, "cpus": spec.resources.cpu,
                       "base": dataclasses.asdict(cfg), "rules": dataclasses.asdict(spec.stopping),
                       "source_run_id": state.get("source_run_id"),
                       "points": [dataclasses.asdict(p) for p in spec.prune_points()] if spec.kind == "prune" else []}
                if spec.kind == "train":
                    trainable = tune.with_parameters(train_trial, ctx=ctx, train_set=train_set, evaluator=evaluator)
                else:
                    trainable = tune.with_parameters(prune_trial, ctx=ctx, evaluator=evaluator)
                trainable = tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
                exp_dir = Path(storage) / spec.name if "://" not in storage else None
                if exp_dir is not None:
                    exp_dir.mkdir(parents=True, exist_ok=True)
                    (exp_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
                if restore_path is not None:
                    tuner = tune.Tuner.restore(restore_path, trainable=trainable, resume_unfinished=True,
                                               resume_errored=True)
                else:
                    tuner = _new_tuner(spec, trainable, cfg, storage)
                results = tuner.fit()
                _finish(results, spec, logger, uri)
                return logger.run_id
        finally:
            if previous_uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous_uri
            if started_ray:
                import ray

                ray.shutdown()


def _new_tuner(spec: SweepSpec, trainable, cfg, storage: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    run_config = tune.RunConfig(name=spec.name, storage_path=storage, verbose=1,
                                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    if spec.kind == "prune":
        param_space = {"point": tune.grid_search(list(range(len(spec.prune_points()))))}
        tune_config = tune.TuneConfig(max_concurrent_trials=spec.max_concurrent or None, reuse_actors=True)
        return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    search = OptunaSearch(points_to_evaluate=spec.initial_points or None, seed=cfg.seed)
    if spec.max_concurrent:
        search = ConcurrencyLimiter(search, max_concurrent=spec.max_concurrent)
    scheduler = None
    if spec.scheduler.get("type", "asha") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.epochs,
                                  grace_period=int(spec.scheduler.get("grace_period", 1)),
                                  reduction_factor=float(spec.scheduler.get("reduction_factor", 3)))
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=search, scheduler=scheduler,
                                  num_samples=spec.num_samples, time_budget_s=spec.time_budget_s,
                                  reuse_actors=True)  # a trial's worker keeps torch imported for the next
    return tune.Tuner(trainable, param_space=_search_space(spec), tune_config=tune_config, run_config=run_config)


def _finish(results, spec: SweepSpec, logger, uri: str) -> None:
    """Close every child run Tune stopped (ASHA kills trials mid-run), and mark the best trial."""
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
    for child in client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{logger.run_id}'"):
        if child.info.status == "RUNNING" and child.data.tags.get("ganlab.trial_id") not in known:
            client.delete_run(child.info.run_id)
    logger.log_metrics({"trials": len(results), "trials_errored": sum(r.error is not None for r in results)})
    if spec.kind == "train":
        ok = [r for r in done if r.metrics.get("ganlab_status") == health.OK] or done
        if ok:
            pick = min if spec.mode == "min" else max
            best = pick(ok, key=lambda r: r.metrics[spec.metric])
            logger.set_tags({"ganlab.best_run_id": best.metrics["mlflow_run_id"]})
            logger.log_metrics({f"best_{spec.metric}": best.metrics[spec.metric]})
            logger.log_text(json.dumps({k: best.config[k] for k in best.config}, indent=2), "best_config.json")
