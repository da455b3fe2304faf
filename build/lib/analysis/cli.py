"""``ganlab analyze``: registered into the ganlab CLI as a plugin (entry point)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("analyze", help="Pareto plots and an HTML report from a sweep's runs",
                       description="Read a sweep's child runs (or every prune/train run of an experiment) from "
                       "MLflow and draw: the Pareto front of sparsity against each quality metric (also as CSV), "
                       "sensitivity vs percentage pruning, image strips per pruning level, per-layer sparsity, "
                       "and training-sweep views. Writes one self-contained HTML report and logs everything to "
                       "the sweep's parent run.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sweep", action="append", metavar="SWEEP_RUN_ID",
                     help="parent run id of a sweep (sweep_run_id); several pruning sweeps give one report")
    src.add_argument("--experiment", help="MLflow experiment name: all its prune and train runs")
    p.add_argument("--out", default="reports", help="directory for the PNGs, CSV and report.html (default: reports)")
    p.add_argument("--name", help="the report's title and folder name (default: the sweep's or experiment's name)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="the answer's 'within X of dense FCD', relative (default: 0.05, i.e. 5 %%)")
    p.add_argument("--ui-url", help="the MLflow UI's address, e.g. http://127.0.0.1:5000: run ids in the report "
                   "link to it (default: the tracking URI when it is an http(s) server)")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args) -> int:
    import warnings

    from analysis.report import analyze
    from analysis.runs import AnalysisInputError
    from ganlab.errors import GanlabError

    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
    import math

    if not (math.isfinite(args.tolerance) and 0 <= args.tolerance < 1):
        raise GanlabError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.ui_url is not None and not args.ui_url.startswith(("http://", "https://")):
        raise GanlabError(f"--ui-url must be an http(s):// address, got {args.ui_url!r}")
    try:
        path = analyze(sweep_id=args.sweep, experiment=args.experiment, out=args.out, tolerance=args.tolerance,
                       ui_url=args.ui_url, name=args.name)
    except AnalysisInputError as exc:
        raise GanlabError(str(exc)) from None
    print(f"report: {path.resolve()}")
    return 0
