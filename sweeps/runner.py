"""Run sweeps on Ray Tune: check the input, serve the store, start Ray, open the parent run, fit.

A sweep is one MLflow parent run with a child run per trial (see trials.py). Data and the scoring
classifier are loaded once in the driver and reach trials by reference. A local sqlite store is
served over HTTP for the sweep's duration (mlflow_server.py) so concurrent trials can write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ganlab.config import TrainConfig
from ganlab.errors import ConfigError, IncompleteSweep, StoreUnreachable
from ganlab.faults import pause_point
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
from sweeps.interrupts import close_unfinished_children, interrupts_stop_tune_gracefully
from sweeps.results import finish, log_frontiers, log_recipe_search, mark_best_trial
from sweeps.sources import Sources, log_repeats, repeat_context, resolve_sources, seeds_to_repeat
from sweeps.spec import SweepSpec, load_spec, spec_differences, spec_from_dict
from sweeps.storage import (
    FITTED,
    RESTART,
    RUNNING,
    STATE_FILE,
    SweepState,
    clear_tune_files,
    experiment_path,
    read_state,
    storage_root,
    trial_temp_dir,
    tune_has_started,
    write_state,
)
from sweeps.trials import TrialContext
from sweeps.tuners import SweepInputs, frontier_search, repeats_tuner, sweep_tuner


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs, beside its spec and sources (the command line's flags): ``address`` of a Ray cluster to
    join (None: a local Ray of its own), ``data_dir``, ``new`` (start beside a sweep already in the folder),
    ``spec_file`` (where the spec was read: a resume says when it has changed since), ``verbose`` (Ray Tune's own
    per-trial tables beside ganlab's progress line)."""

    address: str | None = None
    data_dir: str | None = None
    new: bool = False
    spec_file: str | None = None
    verbose: bool = False


def run_sweep(spec: SweepSpec, sources: Sources | None = None, options: SweepOptions = SweepOptions()) -> str:
    """Run a training or pruning sweep; returns the parent MLflow run id.

    A pruning sweep prunes every source (``sources``: run ids, or the top K trials of a training sweep, its best
    trial and that trial's repeats first). Each grid point runs on each source.
    """
    check_storage(spec.storage_path)
    spec = dataclasses.replace(spec, storage_path=storage_root(spec.storage_path))  # a local one made absolute
    spec = _fresh_folder(spec, options.new)
    state = SweepState(spec=spec.to_dict(), tracking_uri=tracking.tracking_uri(), data_dir=options.data_dir,
                       address=options.address,
                       spec_file=str(Path(options.spec_file).resolve()) if options.spec_file else None)
    if spec.kind == "prune":
        state.source_run_ids = resolve_sources(sources or Sources(), state.tracking_uri)
    return _execute(_load_inputs(spec, state, options.verbose), state, restore_path=None)


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


def resume_sweep(path: str, verbose: bool = False) -> str:
    """Continue an interrupted sweep from its Tune experiment directory; returns the parent run id.

    ``path`` is ``<storage_path>/<name>``: a folder, or ``s3://bucket/prefix/<name>``. A sweep directory is
    trusted like code (Tune unpickles its tuner.pkl): one without a valid ganlab state file is refused
    before Ray or the store is touched. A finished sweep is left as it is. A sweep stopped before Tune recorded
    its first experiment state is started afresh under the same parent run (``Tuner.restore`` could only rebuild
    part of it); grid points that finished meanwhile are found in MLflow, not run again.
    """
    path = path.rstrip("/") if is_remote(path) else str(Path(path).resolve())
    state = read_state(path)
    spec = spec_from_dict(state.spec, where=f"{path}/{STATE_FILE}")
    parent = tracking.get_run(state.parent_run_id, state.tracking_uri)  # the parent run is there
    if state.phase == FITTED or parent.info.status == "FINISHED":
        print(f"ganlab sweep: {spec.name} has finished (every trial its spec names ran): nothing to resume",
              flush=True)
        return state.parent_run_id
    _say_if_the_spec_file_changed(state, spec)
    _close_dead_attempts(state)
    restore_path = path if tune_has_started(path) and state.phase != RESTART else None
    if restore_path is None:
        clear_tune_files(path)
        print(f"ganlab sweep: Tune cannot restore {spec.name} (stopped before Tune saved its trials, or short of its "
              "spec): it starts afresh under the same parent run; finished points are not run again", flush=True)
    return _execute(_load_inputs(spec, state, verbose), state, restore_path=restore_path)


def _say_if_the_spec_file_changed(state: SweepState, spec: SweepSpec) -> None:
    """One line when the file the sweep's spec was read from now says something else: the saved spec runs."""
    if not state.spec_file or not Path(state.spec_file).is_file():
        return
    try:
        edited = load_spec(state.spec_file).to_dict()
    except ConfigError as exc:
        print(f"ganlab sweep: note: {state.spec_file} no longer reads as a spec ({exc}); the spec saved with the "
              "sweep is used", flush=True)
        return
    differ = spec_differences(state.spec, edited, ignore=("storage_path", "name"))
    if differ:
        print(f"ganlab sweep: note: {state.spec_file} has changed since the sweep started ({', '.join(differ)}); "
              "the spec saved with the sweep is used", flush=True)


def _close_dead_attempts(state: SweepState) -> None:
    """Before a resume: the trials of the stopped driver are gone, so runs of theirs still RUNNING end KILLED
    (what a trial restarts in is decided by the trial), and their temporary files on this machine go."""
    close_unfinished_children(state.tracking_uri, state.parent_run_id, "KILLED")
    shutil.rmtree(trial_temp_dir(state.parent_run_id), ignore_errors=True)


def _load_inputs(spec: SweepSpec, state: SweepState, verbose: bool = False) -> SweepInputs:
    """The sweep's config and data: a training sweep's base, or the pruned model's own config."""
    if spec.kind == "train":
        cfg = spec.train_config()
        needs_data = True
    else:
        configs = [_source_config(run_id, state.tracking_uri) for run_id in state.source_run_ids]
        cfg = configs[0]
        for run_id, other in zip(state.source_run_ids[1:], configs[1:]):
            for key in ("dataset", "image_size"):  # one evaluator and one fine-tuning set serve every source
                if getattr(other, key) != getattr(cfg, key):
                    raise ConfigError(f"sources differ in {key}: run {run_id} has {getattr(other, key)!r}, run "
                                      f"{state.source_run_ids[0]} has {getattr(cfg, key)!r}; prune them in "
                                      "separate sweeps")
        needs_data = any(p.finetune_epochs or p.method == "sparse" for p in spec.prune_points())
    limit = spec.grid.get("finetune_images", cfg.limit) if spec.kind == "prune" else cfg.limit
    train_set = load_images(cfg.dataset, cfg.image_size, limit=limit, data_dir=state.data_dir,
                            subset_seed=cfg.seed) if needs_data else None
    return SweepInputs(spec, cfg, train_set, verbose)


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


@dataclass
class Sweep:
    """A sweep as its driver runs it: what it reads, its state file's contents, the served store its trials log
    to, and (once opened) its parent run."""

    inputs: SweepInputs
    state: SweepState
    server: ServedStore
    parent: tracking.RunLogger | None = None

    @property
    def spec(self) -> SweepSpec:
        return self.inputs.spec

    def advance(self, phase: str) -> None:
        """The sweep's state moves to ``phase`` (RUNNING, RESTART or FITTED), saved at once: a resume reads it."""
        self.state.phase = phase
        write_state(self.spec.storage_path, self.spec.name, self.state)


def _execute(inputs: SweepInputs, state: SweepState, restore_path: str | None) -> str:
    """Serve the store, start (or join) Ray, open (or reopen) the parent run and fit; returns its run id."""
    spec = inputs.spec
    check_ray_address(state.address)
    # inside a Ray job (ray job submit) Ray is joined through RAY_ADDRESS even without --address
    joined = bool(state.address or os.environ.get("RAY_ADDRESS"))
    if not joined:  # bad resources are bad input: found before a store or Ray exists
        check_resources(spec.resources, joined=False, nodes=this_machine())
    experiment_id = tracking.ensure_experiment(spec.experiment, state.tracking_uri)  # a new store: locked
    started_ray = False
    # the server boots (~5 s) while Ray starts and the classifier loads; at the end both stop together
    with served_store(state.tracking_uri, writers=_writers(spec, joined)) as server:
        try:
            import_the_project_in_a_ray_job()
            started_ray = init_ray(state.address)
            leave_a_ray_job_working_dir()
            check_resources(spec.resources, joined=joined)
            evaluator = _evaluator(inputs.config, state)
            sweep = Sweep(inputs, state, server)
            try:
                with _parent_run(spec, state) as parent:
                    sweep.parent, state.parent_run_id = parent, parent.run_id
                    sweep.advance(RUNNING)
                    pause_point("sweep-state-saved")
                    # trials get the server's address at once and wait for it themselves: they start while it boots
                    ctx = _trial_context(inputs, state, server.address, experiment_id)
                    tuner = sweep_tuner(inputs, ctx, evaluator, server, restore_path)  # writes tuner.pkl
                    pause_point("tuner-saved")
                    results = _fit(tuner, sweep)
                    search = _frontier_found(results, spec, ctx)  # read once: checked, then logged
                    short = _what_did_not_run(results, sweep, ctx, search)
                    if short:  # the parent ends FAILED, not FINISHED, and nothing is registered
                        sweep.advance(RESTART)
                        raise _StoppedShort(short)
                    _answer(results, sweep, ctx, evaluator, search)
                    sweep.advance(FITTED)  # a resume from here on changes nothing
                    return parent.run_id
            except _StoppedShort as exc:
                raise IncompleteSweep(f"sweep {spec.name} stopped short: {exc}; its parent run is marked FAILED; "
                                      f"`ganlab sweep resume {experiment_path(spec.storage_path, spec.name)}` "
                                      "restarts it under the same parent run (finished points are not run "
                                      "again)") from None
        finally:
            server.stop_soon()  # the watchdog ends the server while Ray shuts down
            if started_ray:
                _shutdown_ray()
            if state.parent_run_id:
                shutil.rmtree(trial_temp_dir(state.parent_run_id), ignore_errors=True)


def _frontier_found(results, spec: SweepSpec, ctx: TrialContext):
    """A frontier search's answer, read from Tune's results (None for any other sweep)."""
    return frontier_search(spec, len(ctx.source_run_ids)).read_results(results) if spec.searches_frontier else None


def _answer(results, sweep: Sweep, ctx: TrialContext, evaluator, search) -> None:
    """What a sweep that ran every trial logs on its parent run: trial counts, a recipe search's recipe, a frontier
    search's frontiers, a training sweep's best trial (and its repeats)."""
    spec, parent = sweep.spec, sweep.parent
    finish(results, parent, sweep.server.uri)
    parent.log_metrics({"trials": len(results), "trials_errored": sum(r.error is not None for r in results)})
    if spec.searches_recipe:
        log_recipe_search(results, spec, parent)
    if search is not None:
        log_frontiers(search, parent)
    best = mark_best_trial(results, spec, parent) if spec.kind == "train" else None
    if best is not None and spec.repeats:
        _repeat_best(best, sweep, ctx, evaluator)


class _StoppedShort(Exception):
    """Tune's fit ended with fewer trials than the spec names (raised inside the parent run: it ends FAILED)."""


def _what_did_not_run(results, sweep: Sweep, ctx: TrialContext, search) -> str | None:
    """What of the spec never ran, if anything: a sweep never ends FINISHED with fewer trials than its spec names
    (a grid: every point on every source; a frontier search: until its searcher says each family is done; a
    training or recipe search: num_samples, unless its time budget ended it)."""
    spec = sweep.spec
    if search is not None:
        open_ = [name for name, f in search.frontiers().items() if f["status"] is None]
        return f"the frontier search of {', '.join(open_)} has not ended" if open_ else None
    if spec.kind == "prune" and not spec.searches_recipe:
        wanted = {(p, s) for p in range(len(ctx.points)) for s in range(len(ctx.source_run_ids))}
        ran = {(r.config.get("point", 0), r.config.get("source", 0)) for r in results if r.config}
        return f"{len(wanted - ran)} of its {len(wanted)} grid points x sources never ran" if wanted - ran else None
    if not spec.time_budget_s and len(results) < spec.num_samples:
        return f"{len(results)} of its {spec.num_samples} trials ran"
    return None


def _evaluator(config: TrainConfig, state: SweepState):
    """The real images' features once, here, while the store boots: not once in every trial. On one thread: the
    server's boot keeps a core busy, and a second torch thread there stalls every op (on 2 cores: 0.78 s with 2
    threads, 0.6 s with 1)."""
    from ganlab.device import threads_for
    from ganlab.metrics.distribution import Evaluator

    with threads_for(1):
        return Evaluator.for_dataset(config.dataset, config.image_size, data_dir=state.data_dir).ready()


def _trial_context(inputs: SweepInputs, state: SweepState, uri: str, experiment_id: str) -> TrialContext:
    spec = inputs.spec
    tags = {schema.FINETUNE_IMAGES: str(len(inputs.train_set))} \
        if spec.kind == "prune" and inputs.train_set is not None else {}
    run = tracking.RunContext(uri=uri, experiment=tracking.experiment_name(spec.experiment),
                              parent_run_id=state.parent_run_id, tags=tags, progress=False,
                              data_dir=state.data_dir)
    return TrialContext(run=run, experiment_id=experiment_id, cpus=spec.resources.cpu, gpus=spec.resources.gpu,
                        objective=spec.metric, base=dataclasses.asdict(inputs.config) if spec.kind == "train" else {},
                        rules=dataclasses.asdict(spec.stopping), source_run_ids=state.source_run_ids,
                        points=spec.prune_points() if spec.kind == "prune" else [],
                        report_passes=spec.searches_recipe)


def _repeat_best(best, sweep: Sweep, ctx: TrialContext, evaluator) -> None:
    """Train the best configuration ``spec.repeats`` more times with new seeds (a resumed sweep runs only the
    repeats that have not finished), then log the objective's mean and std over best + repeats."""
    spec, server = sweep.spec, sweep.server
    seeds = seeds_to_repeat(best, spec, ctx, server.uri)
    print(f"ganlab sweep: training the best configuration {spec.repeats} more time(s) with new seeds "
          f"({len(seeds)} to run)", flush=True)
    if seeds:
        tuner = repeats_tuner(sweep.inputs, repeat_context(best, ctx), evaluator, server, dict(best.config), seeds)
        finish(_fit(tuner, sweep), sweep.parent, server.uri)
    log_repeats(best, spec, ctx, sweep.parent, server.uri)


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


def _fit(tuner, sweep: Sweep) -> Any:
    """``tuner.fit()``; an interrupt or a lost store closes the sweep's runs and says how to resume."""
    spec, state = sweep.spec, sweep.state
    local_uri = state.tracking_uri  # the store itself: the server may be booting, or gone
    try:
        with interrupts_stop_tune_gracefully(local=not str(state.address or "").startswith("ray://")) \
                as interrupted:
            results = tuner.fit()
        if interrupted:  # Tune stopped early and saved its state: report it as an interrupt
            raise interrupted[0]
        return results
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the parent ends KILLED on the way out
        close_unfinished_children(local_uri, sweep.parent.run_id, "KILLED")
        exc.hint = f"the sweep's runs are marked KILLED; continue it with: ganlab sweep resume " \
                   f"{experiment_path(spec.storage_path, spec.name)}"
        raise
    except StoreUnreachable as exc:  # its server is gone for good: close the runs in the store itself
        sweep.server.close()
        close_unfinished_children(local_uri, sweep.parent.run_id, "FAILED", include_parent=True)
        raise StoreUnreachable(f"{exc}; the sweep stopped and its runs are marked FAILED; continue "
                               f"it with: ganlab sweep resume {experiment_path(spec.storage_path, spec.name)}") \
            from None


@contextlib.contextmanager
def _parent_run(spec: SweepSpec, state: SweepState) -> Iterator[tracking.RunLogger]:
    """A new parent run with the spec logged, or (a resume: the state names one) the sweep's parent run reopened."""
    if state.parent_run_id is not None:
        with tracking.reopened_run(state.parent_run_id, state.tracking_uri) as logger:
            yield logger
        return
    params = {"sweep_kind": spec.kind, "name": spec.name}
    if spec.kind == "train":
        params.update(objective=spec.metric, mode=spec.mode)  # what `ganlab analyze` ranks trials by
    ctx = tracking.RunContext(uri=state.tracking_uri, experiment=spec.experiment, run_name=spec.name)
    with tracking.ganlab_run("sweep", ctx, params=params,
                             tags={schema.SOURCE_RUN: ",".join(state.source_run_ids)}) as logger:
        logger.log_text(yaml.safe_dump(state.spec, sort_keys=False), schema.SPEC)
        yield logger
