"""``ganlab sweep {train,prune,list,resume}``: registered into the ganlab CLI as a plugin (entry point).

A command here is two steps, as a reader would do them: the sweep (sweeps.runner, the engine), then for a
pruning sweep the step after it (analysis.best: the operating point judged, charted and registered).
"""

from __future__ import annotations

from ganlab.tracking import schema


def register(sub) -> None:
    p = sub.add_parser("sweep", help="Ray Tune sweeps: training hyperparameters, pruning grids, resume",
                       description="Run sweeps on Ray Tune; one MLflow parent run per sweep, a child run per "
                       "trial. Specs are YAML files (see sweeps/specs/*.yaml).")
    kinds = p.add_subparsers(dest="sweep_command", metavar="SWEEP", parser_class=type(p))
    kinds.required = True

    t = kinds.add_parser("train", help="search training hyperparameters (Optuna TPE + ASHA)",
                         description="Search the training hyperparameters the spec lists with Optuna's TPE "
                         "under ASHA. Mode-collapsed (coverage below stopping.min_coverage) and diverged "
                         "(non-finite loss, D loss stuck near 0) trials end early and are tagged "
                         f"{schema.STATUS}=collapsed|diverged; the sweep goes on.")
    t.add_argument("spec", help="sweep spec: a YAML file, or a bundled spec's name (ganlab sweep list)")
    _new(t)
    _address(t)
    t.set_defaults(func=_cmd_train)

    pr = kinds.add_parser("prune", help="a grid of pruning method x s|q x fine-tune epochs",
                          description="Prune trained models over the spec's grid: every grid point on every "
                          "source model. Each trial logs exactly what `ganlab prune` logs, as a child run of the "
                          "sweep; with several sources `ganlab analyze` draws mean +- std per grid point.")
    pr.add_argument("spec", help="sweep spec: a YAML file, or a bundled spec's name (ganlab sweep list)")
    _new(pr)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-run", action="append", metavar="RUN_ID",
                     help="MLflow run id of a trained model; give it several times for several sources")
    src.add_argument("--from-sweep", metavar="SWEEP_RUN_ID",
                     help="parent run id of a training sweep: its --top best trials are pruned")
    pr.add_argument("--top", type=int, default=1, metavar="K",
                    help="with --from-sweep: prune the K best trials, the best trial and its repeats (spec key "
                    "`repeats`) first (default: 1)")
    _address(pr)
    pr.set_defaults(func=_cmd_prune)

    ls = kinds.add_parser("list", help="the sweep specs that come with ganlab, usable by name anywhere",
                          description="The bundled specs: `ganlab sweep train NAME` or `ganlab sweep prune NAME ...` "
                          "finds them from any directory (a path is read first when it exists).")
    ls.set_defaults(func=_cmd_list, store=False)

    r = kinds.add_parser("resume", help="continue an interrupted sweep (Tuner.restore)",
                         description="Finished trials are not run again and their MLflow runs are not "
                         "duplicated; unfinished trials continue from their last checkpoint, and runs of trials "
                         "that died with the driver end KILLED. The spec saved with the sweep is what runs (a line "
                         "says so when its file has been edited since). A sweep stopped before Tune saved its "
                         "trials starts them afresh under the same parent run; a finished sweep is left as it is "
                         "(nothing logged or registered again).")
    r.add_argument("path", help="the sweep's Tune directory: <storage_path>/<name>")
    _verbose(r)
    r.set_defaults(func=_cmd_resume)


def _new(p) -> None:
    p.add_argument("--new", action="store_true",
                   help="when <storage_path>/<name> already holds a sweep, start this one beside it (<name>-2, ...) "
                   "instead of refusing (`ganlab sweep resume` continues the old one)")


def _cmd_list(args) -> int:
    import yaml

    from sweeps.spec import bundled_specs

    for name, path in bundled_specs().items():
        text = path.read_text()
        spec = yaml.safe_load(text)
        about = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        print(f"{name:<22} kind {spec.get('kind'):<6} {about}")
    return 0


def _verbose(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray Tune's own per-trial tables (default: one progress line — trials done, "
                   "running, stopped early, failed, the best so far, time left — redrawn on a terminal, a line per "
                   "finished trial elsewhere)")


def _address(p) -> None:
    p.add_argument("--address",
                   help="join a running Ray cluster: 'auto' or ray://HOST:10001 (default: start a local Ray)")
    p.add_argument("--data-dir", help="where datasets live (default: $GANLAB_DATA_DIR or ~/.cache/ganlab/data)")
    _verbose(p)



def _cmd_train(args) -> int:
    from sweeps.runner import run_sweep
    from sweeps.spec import load_spec

    spec = _expect(load_spec(args.spec), "train", args.spec)
    return _done(run_sweep(spec, options=_options(args)))


def _cmd_prune(args) -> int:
    from sweeps.runner import run_sweep
    from sweeps.sources import Sources
    from sweeps.spec import load_spec

    spec = _expect(load_spec(args.spec), "prune", args.spec)
    return _done(run_sweep(spec, Sources.of(args.from_run, args.from_sweep, args.top), _options(args)))


def _options(args):
    from sweeps.runner import SweepOptions
    from sweeps.spec import find_spec

    return SweepOptions(address=args.address, data_dir=args.data_dir, new=args.new,
                        spec_file=str(find_spec(args.spec)), verbose=args.verbose)


def _cmd_resume(args) -> int:
    from sweeps.runner import resume_sweep

    return _done(resume_sweep(args.path, verbose=args.verbose))


def _done(parent_run_id: str) -> int:
    """After the sweep: a pruning sweep's operating point registered; then where to look at it in the MLflow UI
    (a tracking server's), then its run id."""
    from analysis.best import register_best
    from ganlab.tracking import store as tracking

    uri = tracking.tracking_uri()
    if tracking.get_run(parent_run_id, uri).data.params.get("sweep_kind") == "prune":
        register_best(parent_run_id, uri)
    if tracking.ui_url(uri) is not None:
        run = tracking.get_run(parent_run_id, uri)
        print(f"ui: {tracking.ui_url(uri, run.info.experiment_id)}")
    print(f"sweep_run_id: {parent_run_id}")
    return 0


def _expect(spec, kind: str, path: str):
    from ganlab.errors import ConfigError

    if spec.kind != kind:
        raise ConfigError(f"{path} is a kind={spec.kind!r} spec; `ganlab sweep {kind}` needs kind: {kind}")
    return spec
