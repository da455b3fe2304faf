"""``ganlab study --scale {cpu,seed}``: the seed's whole study through the same CLI a user types.

training sweep (the dense sources) -> pruning grid without fine-tuning (the seed's table) -> the
high-sparsity end with fine-tuning, on every source -> one report -> ``results.md``. The specs are in
``sweeps/specs/``; each step is a ``ganlab`` subprocess (see studies/demo.py) in one MLflow experiment.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

# every bundled spec (sweeps.spec.BUNDLED), not imported: `ganlab --help` stays light
SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
SCALES = {"cpu": "32 px, full Fashion-MNIST train split, 3 dense sources: about 1.5 hours on 2 CPU cores",
          "seed": "the seed's setting (64 px; 15 epochs Fashion-MNIST, 30 CIFAR-10), 3 dense sources, "
                  "fractional GPUs: a GPU machine or a cluster"}
DATASETS = ("fashion-mnist", "cifar10")


def register(sub) -> None:
    p = sub.add_parser("study", help="the seed's whole study at a real scale, published as results.md",
                       description="Run the seed's study: a training sweep for the dense sources, the pruning grid "
                       "(s = 0.25..1.25, q = 20..90 and channel pruning, no fine-tuning) and the high-sparsity end "
                       "with fine-tuning, on every source; then one report with error bars and a results.md "
                       "that answers 'how far can I prune before the images suffer'. Scales: "
                       + "; ".join(f"{k}: {v}" for k, v in SCALES.items()) + ".")
    p.add_argument("--scale", required=True, choices=tuple(SCALES), help="cpu or seed (see above)")
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="default: fashion-mnist")
    p.add_argument("--out", help="folder for the report and figures (default: study_<scale>_<dataset>)")
    p.add_argument("--results-md", help="where results.md goes (default: <out>/results.md)")
    p.add_argument("--specs", default=str(SPECS), help="folder with <scale>_train.yaml, <scale>_prune.yaml and "
                   "<scale>_prune_finetune.yaml (default: the shipped sweeps/specs/)")
    p.add_argument("--train-sweep", metavar="SWEEP_RUN_ID",
                   help="reuse a finished training sweep's dense sources (skip step 1)")
    p.add_argument("--report-only", nargs="+", metavar="SWEEP_RUN_ID",
                   help="skip the sweeps: redo the report and results.md from a finished study's sweep run ids: "
                   "TRAIN GRID FINETUNE, then any more pruning sweeps of the same sources to include")
    p.add_argument("--address", help="join a running Ray cluster: 'auto' or ray://HOST:10001")
    p.add_argument("--data-dir", help="where datasets live (default: $GANLAB_DATA_DIR or ~/.cache/ganlab/data)")
    p.set_defaults(func=run_study)


def _spec(specs: Path, name: str, dataset: str, tmp: Path) -> str:
    """The scale's spec with the dataset swapped in (its epochs follow the dataset unless the spec sets them)."""
    from ganlab.config import read_yaml
    from ganlab.errors import ConfigError
    from sweeps.spec import spec_from_dict

    if not (specs / name).is_file():
        raise ConfigError(f"--specs {specs}: no {name} there")
    spec = read_yaml(specs / name, f"--specs {specs}:")
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"--specs {specs}: {name} must be a mapping of a sweep spec's keys (it is "
                          f"{'empty' if not spec else type(spec).__name__})")
    if spec.get("kind") == "train" and isinstance(spec.get("base"), dict):
        spec["base"]["dataset"] = dataset
    try:  # every step's spec valid before the first one runs
        spec_from_dict(spec, where=f"--specs {specs}: {name}")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if name in message else f"--specs {specs}: {name}: {message}") from None
    path = tmp / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def machine() -> str:
    import torch

    from ganlab.device import cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu} ({os.cpu_count()} cores), {gpu}, torch {torch.__version__}"


def run_study(args) -> int:
    import pandas as pd

    from analysis import report as report_mod
    from analysis.results import Study, write_results
    from analysis.runs import get_run, sweep_children

    scale, dataset = args.scale, args.dataset
    out = Path(args.out or f"study_{scale}_{dataset}")
    results_md = Path(args.results_md) if args.results_md else out / "results.md"
    train, grid, tuned, *more = _sweeps(args)
    minutes: dict[str, float] = {}
    for label, sweep in (("training", train), ("pruning grid", grid), ("fine-tuning", tuned),
                         *((f"extra pruning sweep{'' if len(more) == 1 else f' {i}'}", m)
                           for i, m in enumerate(more, 1))):
        info = get_run(sweep).info  # each step's time as its MLflow parent run recorded it
        minutes[label] = ((info.end_time or info.start_time) - info.start_time) / 60000
    print("\n== 4/4 the report and results.md", flush=True)
    start = time.monotonic()
    name = f"study-{scale}-{dataset}"
    report = report_mod.analyze(sweep_id=[grid, tuned, *more], out=out.parent, name=out.name)
    runs = report_mod.usable_prune_runs(pd.concat([sweep_children(s) for s in (grid, tuned, *more)],
                                                  ignore_index=True))
    minutes["report"] = (time.monotonic() - start) / 60
    write_results(report.parent, runs, results_md,
                  Study(title=f"Pruning the seed's DCGAN: {name}", command=f"ganlab study --scale {scale} --dataset "
                        f"{dataset}", machine=machine(), minutes=minutes, sources=_sources(train)))
    print(f"training sweep {train}\npruning sweeps {grid} {tuned} {' '.join(more)}\nreport {report}\n"
          f"parent run of the training sweep: {get_run(train).info.run_id}")
    print(f"results: {results_md.resolve()}")
    return 0


def _sweeps(args) -> list[str]:
    """The study's sweeps, run in turn as `ganlab sweep` subprocesses (or, --report-only, given): the training
    sweep, the pruning grid, the fine-tuning sweep, and any more; every spec is read before anything starts."""
    from ganlab.errors import ConfigError
    from studies.demo import run_step

    scale, dataset = args.scale, args.dataset
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": os.environ.get("MLFLOW_EXPERIMENT_NAME", f"study-{scale}-{dataset}"),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    extra = [*(["--address", args.address] if args.address else []),
             *(["--data-dir", args.data_dir] if args.data_dir else [])]
    with tempfile.TemporaryDirectory(prefix="ganlab-study-") as tmp:
        paths = {step: _spec(Path(args.specs), f"{scale}_{step}.yaml", dataset, Path(tmp))
                 for step in ("train", "prune", "prune_finetune")}
        if args.report_only:
            if len(args.report_only) < 3:
                raise ConfigError("--report-only needs TRAIN GRID FINETUNE sweep run ids (and optionally more)")
            return list(args.report_only)
        trained = yaml.safe_load(Path(paths["train"]).read_text())  # written above: every dense source is used
        top = str(1 + trained["repeats"] if trained.get("repeats") else trained.get("num_samples", 1))
        train = args.train_sweep or run_step(f"1/4 dense sources ({scale} scale, {dataset})",
                                             ["sweep", "train", paths["train"], "--new", *extra], env)
        grid = run_step("2/4 the seed's pruning table on every source, no fine-tuning",
                        ["sweep", "prune", paths["prune"], "--from-sweep", train, "--top", top, "--new", *extra], env)
        tuned = run_step("3/4 the high-sparsity end with the recovery methods and dense controls, on every source",
                         ["sweep", "prune", paths["prune_finetune"], "--from-sweep", train, "--top", top, "--new",
                          *extra], env)
        return [train, grid, tuned]


def _sources(train_sweep: str):
    """The dense models: seed, epochs trained (stopped early or not), final FCD."""
    import pandas as pd

    from analysis.runs import sweep_children

    trials = sweep_children(train_sweep)
    rows = []
    for _, t in trials.iterrows():
        rows.append({"run": t["run_id"][:8], "seed": t.get("param_seed"), "lr_d": t.get("param_lr_d"),
                     "lr_g": t.get("param_lr_g"), "epochs trained": _epochs(t),
                     "stopped": t.get("ganlab_stopped_early") if isinstance(t.get("ganlab_stopped_early"), str)
                     else "at the epoch cap", "status": t.get("ganlab_status"), "FCD": t.get("fcd"),
                     "coverage": t.get("coverage")})
    return pd.DataFrame(rows)


def _epochs(trial) -> int:
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.store import tracking_uri

    return len(MlflowClient(tracking_uri()).get_metric_history(trial["run_id"], "images_per_sec"))
