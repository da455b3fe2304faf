"""Run sweeps on Ray Tune: check the input, serve the store, start Ray, open the parent run, fit.

A sweep is one MLflow parent run with a child run per trial (see trials.py). Data and the scoring
classifier are loaded once in the driver and reach trials by reference. A local sqlite store is
served over HTTP for the sweep's duration (mlflow_server.py) so concurrent trials can write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ganlab.config import TrainConfig
from ganlab.errors import ConfigError, StoreUnreachable, Terminated
from ganlab.gan.data import load_images
from ganlab.tracking import schema
from ganlab.tracking import store as tracking
from ganlab.tracking.server import ServedStore, served_store
from ganlab.tracking.storage import check_storage, is_remote
from sweeps.cluster import (
    check_ray_address,
    check_resources,
    import_the_project_in_a_ray_job,
    init_ray,
    leave_a_ray_job_working_dir,
    stop_local_ray,
    this_machine,
)
from sweeps.results import finish, log_frontiers, log_recipe_search, mark_best_trial
from sweeps.sources import Sources, log_repeats, repeat_context, resolve_sources, seeds_to_repeat
from sweeps.spec import SweepSpec, spec_from_dict
from sweeps.storage import STATE_FILE, experiment_path, read_state, storage_root, write_state
from sweeps.trials import TrialContext
from sweeps.tuners import SweepInputs, frontier_search, repeats_tuner, sweep_tuner


def run_sweep(spec: SweepSpec, sources: Sources | None = None, *, address: str | None = None,
              data_dir: str | None = None, new: bool = False) -> str:
    """Run a training or pruning sweep; returns the parent MLflow run id.

    A pruning sweep prunes every source (``sources``: run ids, or the top K trials of a training sweep, its best
    trial and that trial's repeats first). Each grid point runs on each source.
    """
    check_storage(spec.storage_path)
    spec = dataclasses.replace(spec, storage_path=storage_root(spec.storage_path))  # a local one made absolute
    spec = _fresh_folder(spec, new)
    state = {"spec": spec.to_dict(), "address": address, "data_dir": data_dir,
             "tracking_uri_local": tracking.tracking_uri()}
    if spec.kind == "prune":
        state["source_run_ids"] = resolve_sources(sources or Sources(), state["tracking_uri_local"])
    return _execute(_load_inputs(spec, state), state, restore_path=None)


def _fresh_folder(spec: SweepSpec, new: bool) -> SweepSpec:
    """Two sweeps never share a Tune folder: one whose <storage_path>/<name> (a local folder) already holds a sweep
    is refused — or, with ``new``, named <name>-2, -3, ... for the first free folder."""
    if is_remote(spec.storage_path):
        return spec
    taken = lambda name: (Path(experiment_path(spec.storage_path, name)) / STATE_FILE).exists()  # noqa: E731
    if not taken(spec.name):
        return spec
    if not new:
        path = experiment_path(spec.storage_path, spec.name)
        raise ConfigError(f"{path} already holds a sweep: continue it with `ganlab sweep resume {path}`, or give "
                          "--new to start another beside it")
    k = 2
    while taken(f"{spec.name}-{k}"):
        k += 1
    print(f"ganlab sweep: {spec.name} is taken in {spec.storage_path}; this sweep is {spec.name}-{k}", flush=True)
    return dataclasses.replace(spec, name=f"{spec.name}-{k}")


def resume_sweep(path: str) -> str:
    """Continue an interrupted sweep from its Tune experiment directory; returns the parent run id.

    ``path`` is ``<storage_path>/<name>``: a folder, or ``s3://bucket/prefix/<name>``. A sweep directory is
    trusted like code (Tune unpickles its tuner.pkl): one without a valid ganlab state file is refused
    before Ray or the store is touched.
    """
    path = path.rstrip("/") if is_remote(path) else str(Path(path).resolve())
    state = read_state(path)
    if "source_run_id" in state:  # a state file from before sweeps had several sources
        state["source_run_ids"] = [state.pop("source_run_id")]
    spec = spec_from_dict(state["spec"], where=f"{path}/{STATE_FILE}")
    tracking.get_run(state["parent_run_id"], state["tracking_uri_local"])  # the parent run is there
    return _execute(_load_inputs(spec, state), state, restore_path=path)


def _load_inputs(spec: SweepSpec, state: dict) -> SweepInputs:
    """The sweep's config and data: a training sweep's base, or the pruned model's own config."""
    if spec.kind == "train":
        cfg = spec.train_config()
        needs_data = True
    else:
        configs = [_source_config(run_id, state["tracking_uri_local"]) for run_id in state["source_run_ids"]]
        cfg = configs[0]
        for run_id, other in zip(state["source_run_ids"][1:], configs[1:]):
            for key in ("dataset", "image_size"):  # one evaluator and one fine-tuning set serve every source
                if getattr(other, key) != getattr(cfg, key):
                    raise ConfigError(f"sources differ in {key}: run {run_id} has {getattr(other, key)!r}, run "
                                      f"{state['source_run_ids'][0]} has {getattr(cfg, key)!r}; prune them in "
                                      "separate sweeps")
        needs_data = any(p.finetune_epochs or p.method == "sparse" for p in spec.prune_points())
    limit = spec.grid.get("finetune_images", cfg.limit) if spec.kind == "prune" else cfg.limit
    train_set = load_images(cfg.dataset, cfg.image_size, limit=limit, data_dir=state["data_dir"],
                            subset_seed=cfg.seed) if needs_data else None
    return SweepInputs(spec, cfg, train_set)


def _source_config(run_id: str, uri: str):
    """A source's TrainConfig: a train run's params say it; any other run's checkpoint is read."""
    from ganlab.config import TrainConfig
    from ganlab.gan.checkpoint import load_checkpoint
    from ganlab.runs.source import resolve_checkpoint

    run = tracking.get_run(run_id, uri)
    if run.data.tags.get(schema.KIND) == "train":
        try:
            return TrainConfig.from_params(run.data.params)
        except (ConfigError, ValueError, TypeError):
            pass  # params from an older ganlab: the checkpoint says it
    with tempfile.TemporaryDirectory(prefix="ganlab-source-") as tmp:
        return load_checkpoint(resolve_checkpoint(run_id, Path(tmp), uri))["config"]


def _execute(inputs: SweepInputs, state: dict, restore_path: str | None) -> str:
    """Serve the store, start (or join) Ray, open (or reopen) the parent run and fit; returns its run id."""
    spec = inputs.spec
    check_ray_address(state["address"])
    # inside a Ray job (ray job submit) Ray is joined through RAY_ADDRESS even without --address
    joined = bool(state["address"] or os.environ.get("RAY_ADDRESS"))
    if not joined:  # bad resources are bad input: found before a store or Ray exists
        check_resources(spec.resources, joined=False, nodes=this_machine())
    experiment_id = tracking.ensure_experiment(spec.experiment, state["tracking_uri_local"])  # a new store: locked
    started_ray = False
    # the server boots (~5 s) while Ray starts and the classifier loads; at the end both stop together
    with served_store(state["tracking_uri_local"], writers=_writers(spec, joined)) as server:
        try:
            import_the_project_in_a_ray_job()
            started_ray = init_ray(state["address"])
            leave_a_ray_job_working_dir()
            check_resources(spec.resources, joined=joined)
            evaluator = _evaluator(inputs.config, state)
            with _parent_run(spec, state, state["tracking_uri_local"], restore_path) as parent:
                state["parent_run_id"] = parent.run_id
                write_state(spec.storage_path, spec.name, state)
                # trials get the server's address at once and wait for it themselves, so they start while it boots
                ctx = _trial_context(inputs, state, server.address, experiment_id)
                results = _fit(sweep_tuner(inputs, ctx, evaluator, server, restore_path), spec, state, server, parent)
                finish(results, parent, server.uri)
                parent.log_metrics({"trials": len(results),
                                    "trials_errored": sum(r.error is not None for r in results)})
                if spec.searches_recipe:
                    log_recipe_search(results, spec, parent)
                if spec.searches_frontier:
                    log_frontiers(frontier_search(spec, len(ctx.source_run_ids)).read_results(results), parent)
                best = mark_best_trial(results, spec, parent) if spec.kind == "train" else None
                if best is not None and spec.repeats:
                    _repeat_best(best, inputs, ctx, evaluator, (server, state, parent))
                return parent.run_id
        finally:
            server.stop_soon()  # the watchdog ends the server while Ray shuts down
            if started_ray:
                _shutdown_ray()


def _evaluator(config: TrainConfig, state: dict):
    """The real images' features once, here, while the store boots: not once in every trial. On one thread: the
    server's boot keeps a core busy, and a second torch thread there stalls every op (on 2 cores: 0.78 s with 2
    threads, 0.6 s with 1)."""
    from ganlab.device import threads_for
    from ganlab.metrics.distribution import Evaluator

    with threads_for(1):
        return Evaluator.for_dataset(config.dataset, config.image_size, data_dir=state["data_dir"]).ready()


def _trial_context(inputs: SweepInputs, state: dict, uri: str, experiment_id: str) -> TrialContext:
    spec = inputs.spec
    tags = {schema.FINETUNE_IMAGES: str(len(inputs.train_set))} \
        if spec.kind == "prune" and inputs.train_set is not None else {}
    run = tracking.RunContext(uri=uri, experiment=tracking.experiment_name(spec.experiment),
                              parent_run_id=state["parent_run_id"], tags=tags, progress=False,
                              data_dir=state["data_dir"])
    return TrialContext(run=run, experiment_id=experiment_id, cpus=spec.resources.cpu, gpus=spec.resources.gpu,
                        objective=spec.metric, base=dataclasses.asdict(inputs.config) if spec.kind == "train" else {},
                        rules=dataclasses.asdict(spec.stopping), source_run_ids=state.get("source_run_ids", []),
                        points=spec.prune_points() if spec.kind == "prune" else [],
                        report_passes=spec.searches_recipe)


def _repeat_best(best, inputs: SweepInputs, ctx: TrialContext, evaluator, running) -> None:
    """Train the best configuration ``spec.repeats`` more times with new seeds (a resumed sweep runs only the
    repeats that have not finished), then log the objective's mean and std over best + repeats."""
    server, state, parent = running
    spec = inputs.spec
    seeds = seeds_to_repeat(best, spec, ctx, server.uri)
    print(f"ganlab sweep: training the best configuration {spec.repeats} more time(s) with new seeds "
          f"({len(seeds)} to run)", flush=True)
    if seeds:
        tuner = repeats_tuner(inputs, repeat_context(best, ctx), evaluator, server, dict(best.config), seeds)
        finish(_fit(tuner, spec, state, server, parent), parent, server.uri)
    log_repeats(best, spec, ctx, parent, server.uri)


def _writers(spec: SweepSpec, joined: bool) -> int:
    """How many trials may write to the store at once: max_concurrent, else as many as this machine's cores fit
    (a joined cluster: unknown, so the most the served store runs)."""
    from ganlab.device import usable_cores
    from ganlab.tracking.server import MAX_WORKERS

    if spec.max_concurrent:
        return spec.max_concurrent
    return MAX_WORKERS if joined else max(1, int(usable_cores() // max(spec.resources.cpu, 1e-9)))


def _shutdown_ray() -> None:
    stop_local_ray()


def _fit(tuner, spec: SweepSpec, state: dict, server: ServedStore, parent) -> Any:
    """``tuner.fit()``; an interrupt or a lost store closes the sweep's runs and says how to resume."""
    local_uri = state["tracking_uri_local"]  # the store itself: the server may be booting, or gone
    try:
        with _interrupts_stop_tune_gracefully(local=not str(state["address"] or "").startswith("ray://")) \
                as interrupted:
            results = tuner.fit()
        if interrupted:  # Tune stopped early and saved its state: report it as an interrupt
            raise interrupted[0]
        return results
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the parent ends KILLED on the way out
        _close_unfinished_children(local_uri, parent.run_id, "KILLED")
        exc.hint = f"the sweep's runs are marked KILLED; continue it with: ganlab sweep resume " \
                   f"{experiment_path(spec.storage_path, spec.name)}"
        raise
    except StoreUnreachable as exc:  # its server is gone for good: close the runs in the store itself
        server.close()
        _close_unfinished_children(local_uri, parent.run_id, "FAILED", include_parent=True)
        raise StoreUnreachable(f"{exc}; the sweep stopped and its runs are marked FAILED; continue "
                               f"it with: ganlab sweep resume {experiment_path(spec.storage_path, spec.name)}") \
            from None


@contextlib.contextmanager
def _parent_run(spec: SweepSpec, state: dict, uri: str, restore_path: str | None) -> Iterator[tracking.RunLogger]:
    """A new parent run with the spec logged, or (resume) the sweep's parent run reopened."""
    if restore_path is not None:
        with tracking.reopened_run(state["parent_run_id"], uri) as logger:
            yield logger
        return
    params = {"sweep_kind": spec.kind, "name": spec.name}
    if spec.kind == "train":
        params.update(objective=spec.metric, mode=spec.mode)  # what `ganlab analyze` ranks trials by
    ctx = tracking.RunContext(uri=uri, experiment=spec.experiment, run_name=spec.name)
    with tracking.ganlab_run("sweep", ctx, params=params,
                             tags={schema.SOURCE_RUN: ",".join(state.get("source_run_ids", []))}) as logger:
        logger.log_text(yaml.safe_dump(state["spec"], sort_keys=False), schema.SPEC)
        yield logger


@contextlib.contextmanager
def _interrupts_stop_tune_gracefully(local: bool = True) -> Iterator[list[KeyboardInterrupt]]:
    """Around ``tuner.fit()``: collects the interrupt that stopped it, if one did.

    On Ctrl-C, Tune's own handler stops the trials, saves the experiment state one last time (so a
    resume continues every trial from its last checkpoint) and returns from fit() as if the sweep
    had finished. It also puts back the SIGINT handler it found: a sentinel installed here tells
    that it fired. SIGTERM is routed into the same graceful stop through SIGUSR1, which Tune also
    handles. A second Ctrl-C, once Tune has restored the sentinel, stops at once.
    """
    interrupted: list[KeyboardInterrupt] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}

    def sentinel(signum, frame):
        raise KeyboardInterrupt()

    def on_sigterm(signum, frame):
        interrupted.append(Terminated())
        if signal.getsignal(signal.SIGUSR1) in (previous[signal.SIGUSR1], signal.SIG_DFL):
            raise interrupted[0]  # Tune's handler is not there (yet): unwind instead
        os.kill(os.getpid(), signal.SIGUSR1)

    # Tune handles signals only in the main thread of a local driver (not under Ray Client, not when
    # the user disabled it): anywhere else the default KeyboardInterrupt path applies.
    tune_handles = (local and threading.current_thread() is threading.main_thread()
                    and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0))
    if not tune_handles:
        yield interrupted
        return
    signal.signal(signal.SIGINT, sentinel)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield interrupted
        if signal.getsignal(signal.SIGINT) is sentinel and not interrupted:
            interrupted.append(KeyboardInterrupt())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _close_unfinished_children(uri: str, parent_run_id: str, status: str, include_parent: bool = False) -> None:
    client = tracking.mlflow_client(uri)
    parent = client.get_run(parent_run_id)
    runs = schema.child_runs(client, parent.info.experiment_id, parent_run_id)
    for run in [*runs, *([parent] if include_parent else [])]:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)


