"""The Tune objects a sweep runs: its Tuner (a grid over points x sources, or Optuna TPE under ASHA), the
Tuner of a training sweep's repeats, their RunConfig, and StoreWatch, the callback that keeps the served
tracking store answering."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from ray.tune import Callback

from ganlab.config import TrainConfig
from ganlab.errors import StoreUnreachable
from ganlab.gan.data import ImageSet
from ganlab.tracking.server import ServedStore
from sweeps.frontier import FrontierSearch
from sweeps.progress import SweepProgress
from sweeps.search import Counted, GridSearch, RestorableOptunaSearch, TrialListSync, search_space
from sweeps.spec import SweepSpec
from sweeps.storage import storage_root
from sweeps.trials import OBJECTIVE, TrialContext, prune_trial, train_trial


@dataclass
class SweepInputs:
    """Everything a sweep reads before any store or Ray is touched (all bad input fails there)."""

    spec: SweepSpec
    config: TrainConfig  # train: the base config; prune: the source model's config
    train_set: ImageSet | None  # train: always; prune: only when a grid point fine-tunes
    verbose: bool = False  # Ray Tune's own per-trial tables beside ganlab's progress line


class StoreWatch(Callback):
    """Every few seconds of the driver's loop: is the served store answering? If not, restart it on the
    same store and port (trials' HTTP retries then reach it); if that fails, stop the sweep.

    Tune pickles callbacks into tuner.pkl: the server (this process's) is left out of the pickle, and a
    restored sweep attaches its own new server with :func:`watch`.
    """

    every_s = 5.0

    def __init__(self, store: ServedStore | None = None):
        self.store = store
        self._last = 0.0

    def __getstate__(self):
        return {"store": None, "_last": 0.0}

    def on_step_begin(self, iteration, trials, **info):
        store = self.store
        if store is None or time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        try:
            restarted = store.ensure_alive()
        except RuntimeError as exc:
            raise StoreUnreachable(f"the tracking server for {store.store_uri} died and could not be "
                                   f"restarted ({str(exc).split(';')[0]})") from None
        if restarted:
            print(f"ganlab sweep: warning: the tracking server for {store.store_uri} stopped answering; "
                  "restarted it on the same store", file=sys.stderr, flush=True)


def watch(tuner, store: ServedStore):
    """A restored Tuner's StoreWatch callbacks watch ``store`` (the pickle held none). Ray Client tuners run
    their callbacks on the cluster, where no store of this process can be watched: left alone."""
    local = getattr(tuner, "_local_tuner", None)  # Tuner.restore keeps the RunConfig it unpickled here
    if local is not None:
        for callback in local.get_run_config().callbacks or []:
            if isinstance(callback, StoreWatch):
                callback.store = store
    return tuner


def run_config(inputs: SweepInputs, name: str, store: ServedStore | None, callbacks: tuple[Callback, ...] = (),
               total: int | None = None):
    """Where a sweep's Tune experiment lives, how it fails and checkpoints, and what it shows while it runs: ganlab's
    progress line over ``total`` trials (sweeps/progress.py), Ray's own tables only when ``inputs.verbose``."""
    import os

    from ray import tune

    if not inputs.verbose:
        # Ray 2.x's newer output engine prints its experiment banner and a TensorBoard hint at every verbosity; its
        # first engine (Ray's own switch, RAY_AIR_NEW_OUTPUT=0) honours verbose=0. A user's own setting wins.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    spec = inputs.spec
    progress = SweepProgress(name, total=total, metric=spec.metric if spec.kind == "train" else OBJECTIVE,
                             mode=spec.mode if spec.kind == "train" else "min",
                             iterations=inputs.config.epochs if spec.kind == "train" else None)
    return tune.RunConfig(name=name, storage_path=storage_root(spec.storage_path), verbose=2 if inputs.verbose else 0,
                          callbacks=[StoreWatch(store), progress, *callbacks],
                          failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def _trainable(inputs: SweepInputs, ctx: TrialContext, evaluator):
    from ray import tune

    spec = inputs.spec
    trial = train_trial if spec.kind == "train" else prune_trial
    trainable = tune.with_parameters(trial, ctx=ctx, train_set=inputs.train_set, evaluator=evaluator)
    return tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def sweep_tuner(inputs: SweepInputs, ctx: TrialContext, evaluator, store: ServedStore, restore_path: str | None):
    """The sweep's Tuner: a new one, or (``restore_path``) the interrupted one restored and watching ``store``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = inputs.spec
    trainable = _trainable(inputs, ctx, evaluator)
    if restore_path is not None:
        return watch(tune.Tuner.restore(restore_path, trainable=trainable, resume_unfinished=True,
                                        resume_errored=True), store)
    # both searchers count trials and keep to max_concurrent from Tune's trial list (TrialListSync), not from
    # their own saved state, which a resumed sweep may find older or newer than the trials; they say when the
    # sweep is done, so Tune's own count (num_samples=-1: no limit) cannot end it early from stale state either
    if spec.searches_recipe:
        return _recipe_tuner(inputs, trainable, store)
    if spec.kind == "prune":
        search = frontier_search(spec, len(ctx.source_run_ids)) if spec.searches_frontier else GridSearch(
            [{"point": p, "source": s} for p in range(len(ctx.points))  # every point on every source
             for s in range(len(ctx.source_run_ids))], max_concurrent=spec.max_concurrent)
        tune_config = tune.TuneConfig(search_alg=Counted(search), num_samples=-1, reuse_actors=True)
        total = None if spec.searches_frontier else search.num_samples
        return tune.Tuner(trainable, param_space={}, tune_config=tune_config,
                          run_config=run_config(inputs, spec.name, store, (TrialListSync(search),), total))
    search = RestorableOptunaSearch(points_to_evaluate=spec.initial_points or None, seed=inputs.config.seed,
                                    num_samples=spec.num_samples, max_concurrent=spec.max_concurrent)
    scheduler = None
    if spec.scheduler.get("type", "asha") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=inputs.config.epochs,
                                  grace_period=int(spec.scheduler.get("grace_period", 1)),
                                  reduction_factor=float(spec.scheduler.get("reduction_factor", 3)))
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=Counted(search), scheduler=scheduler,
                                  num_samples=-1, time_budget_s=spec.time_budget_s,
                                  reuse_actors=True)  # a trial's worker keeps torch imported for the next
    return tune.Tuner(trainable, param_space=search_space(spec), tune_config=tune_config,
                      run_config=run_config(inputs, spec.name, store, (TrialListSync(search),), spec.num_samples))


def _recipe_tuner(inputs: SweepInputs, trainable, store: ServedStore):
    """A recipe search: Optuna's TPE over the recovery settings of the grid's one point (on the first source),
    the study kept in an RDB storage beside the tracking store (optuna-dashboard reads it), under ASHA on the
    per-pass FCD; minimise the pruned FCD."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    spec = inputs.spec
    passes = next(p for p in spec.prune_points() if not p.control).finetune_epochs
    search = RestorableOptunaSearch(points_to_evaluate=spec.initial_points or None, seed=inputs.config.seed,
                                    num_samples=spec.num_samples, max_concurrent=spec.max_concurrent,
                                    storage=optuna_storage(store.store_uri if store else None),
                                    study_name=spec.name)
    scheduler = None
    if spec.scheduler.get("type", "asha") == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=passes + 1,  # each pass, then the final
                                  grace_period=int(spec.scheduler.get("grace_period", 1)),
                                  reduction_factor=float(spec.scheduler.get("reduction_factor", 3)))
    tune_config = tune.TuneConfig(metric=OBJECTIVE, mode="min", search_alg=Counted(search), scheduler=scheduler,
                                  num_samples=-1, reuse_actors=True)
    space = {**search_space(spec), "point": 0, "source": 0}
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                      run_config=run_config(inputs, spec.name, store, (TrialListSync(search),), spec.num_samples))


def optuna_storage(store_uri: str | None):
    """The Optuna study's storage beside the tracking store: ``optuna.db`` next to a local sqlite store, the
    ``<database>_optuna`` database of a PostgreSQL store's server (made by the cluster's set-up), else Optuna's
    memory (said on stderr: optuna-dashboard has nothing to read then)."""
    import optuna

    from ganlab.tracking.store import sqlite_path

    db = sqlite_path(store_uri) if store_uri else None
    if db is not None:
        return optuna.storages.RDBStorage(f"sqlite:///{db.parent / 'optuna.db'}")
    if store_uri and store_uri.startswith("postgresql"):
        base, _, name = store_uri.rpartition("/")
        return optuna.storages.RDBStorage(f"{base}/{name.split('?')[0]}_optuna")
    print("ganlab sweep: note: the recipe search's Optuna study is kept in memory (no sqlite or PostgreSQL store "
          "to keep it beside)", file=sys.stderr)
    return None


def frontier_search(spec: SweepSpec, sources: int) -> FrontierSearch:
    """The bisection of a ``search: frontier`` sweep: every family of its grid, on ``sources`` sources."""
    return FrontierSearch(spec.frontier_families(), sources, tolerance=spec.tolerance,
                          bracket=float(spec.frontier.get("bracket", 0.05)),
                          max_steps=int(spec.frontier.get("max_steps", 8)), max_concurrent=spec.max_concurrent)


def repeats_tuner(inputs: SweepInputs, ctx: TrialContext, evaluator, store: ServedStore, config: dict,
                  seeds: list[int]):
    """A training sweep's repeats: ``config`` once per seed, same storage, callbacks and failure handling as
    the sweep's, in a Tune experiment of their own (<name>-repeats)."""
    from ray import tune

    spec = inputs.spec
    return tune.Tuner(_trainable(inputs, ctx, evaluator),
                      param_space={**config, "seed": tune.grid_search(seeds)},
                      tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent or None,
                                                  reuse_actors=True),
                      run_config=run_config(inputs, f"{spec.name}-repeats", store, total=len(seeds)))
