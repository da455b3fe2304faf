"""``ganlab study --scale {cpu,seed}``: the seed's whole study through the same CLI a user types.

five dense sources -> a recipe search at 80 % for plain fine-tuning, distillation and AGP + distillation -> the
frontier of one-shot pruning per method, of each searched recipe, of iterative pruning with late rewinding, and
sparse training's own grid, on every source -> what each frontier buys -> one report -> ``results.md``. The steps
are studies/steps.py; each is a ``ganlab`` subprocess in one MLflow experiment, and a study stopped anywhere
continues where it was when run again (``<out>/study_state.json``, ``ganlab sweep resume``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from studies.steps import STEPS

# every bundled spec (sweeps.spec.BUNDLED), not imported: `ganlab --help` stays light
SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"
SCALES = {"cpu": "32 px, full Fashion-MNIST train split, 5 dense sources: about 3 hours on 2 CPU cores",
          "seed": "the seed's setting (64 px; 15 epochs Fashion-MNIST, 30 CIFAR-10), 5 dense sources, "
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
    p.add_argument("--specs", default=str(SPECS), help="folder with a <scale>_<step>.yaml per step ("
                   f"{', '.join(step.key for step in STEPS)}; default: the shipped sweeps/specs/)")
    p.add_argument("--train-sweep", metavar="SWEEP_RUN_ID",
                   help="reuse a finished training sweep's dense sources (skip step 1)")
    p.add_argument("--report-only", nargs="*", metavar="SWEEP_RUN_ID",
                   help="skip the sweeps: redo the report and results.md from the study's state file (<out>/"
                   "study_state.json), or from the sweep run ids given: TRAIN, then its pruning sweeps")
    p.add_argument("--address", help="join a running Ray cluster: 'auto' or ray://HOST:10001")
    p.add_argument("--data-dir", help="where datasets live (default: $GANLAB_DATA_DIR or ~/.cache/ganlab/data)")
    p.set_defaults(func=run_study)


def machine() -> str:
    import torch

    from ganlab.device import cpu_model

    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu} ({os.cpu_count()} cores), {gpu}, torch {torch.__version__}"


def run_study(args) -> int:
    import pandas as pd

    from analysis import report as report_mod
    from analysis.frontiers import frontiers_of
    from analysis.recipes import recipe_searches
    from analysis.results import Study, write_results
    from analysis.runs import get_run, sweep_children
    from studies.steps import StudyState, run_steps, study_env, what_it_buys

    scale, dataset = args.scale, args.dataset
    out = Path(args.out or f"study_{scale}_{dataset}")
    results_md = Path(args.results_md) if args.results_md else out / "results.md"
    state = StudyState(out / "study_state.json")
    if not args.report_only:
        run_steps(args, state)
    done = state.sweeps(args.report_only)
    train, pruning = done["train"], [v for k, v in done.items() if k != "train"]
    minutes = {key: _minutes(get_run(sweep).info) for key, sweep in done.items()}
    print("\n== the report and results.md", flush=True)
    start = time.monotonic()
    frontiers = frontiers_of(pruning)
    buys = what_it_buys(frontiers, state, study_env(args))
    report = report_mod.analyze(sweep_id=pruning, out=out.parent, name=out.name)
    runs = report_mod.usable_prune_runs(pd.concat([sweep_children(s) for s in pruning], ignore_index=True))
    minutes["report"] = (time.monotonic() - start) / 60
    write_results(report.parent, runs, results_md,
                  Study(title=f"Pruning the seed's DCGAN: study-{scale}-{dataset}",
                        command=f"ganlab study --scale {scale} --dataset {dataset}", machine=machine(),
                        minutes=minutes, sources=_sources(train), frontiers=frontiers,
                        recipes=recipe_searches(pruning), buys=buys, budget=_budget(done)))
    print("\n".join(f"{key:<20} sweep_run_id {sweep}" for key, sweep in done.items()))
    print(f"report {report}\nresults: {results_md.resolve()}")
    return 0


def _budget(done: dict[str, str]) -> dict[str, str]:
    """Each step's recovery budget, as its sweep ran it: passes (and rounds) over its fixed fine-tuning subset."""
    import pandas as pd

    from analysis.runs import sweep_children
    from ganlab.tracking import schema

    def most(trials: pd.DataFrame, column: str) -> float:
        return pd.to_numeric(trials.get(column, pd.Series(dtype=float)), errors="coerce").max()

    budget = {}
    for key, sweep in done.items():
        trials = sweep_children(sweep)  # the subset's size is a tag of each fine-tuned trial
        images, passes = most(trials, schema.column(schema.FINETUNE_IMAGES)), most(trials, "param_finetune_epochs")
        if pd.isna(images) or pd.isna(passes) or not images or not passes:
            continue
        rounds = most(trials, "param_iterative_steps")
        rounds = 1 if pd.isna(rounds) else int(rounds)
        total, passes = int(images) * int(passes) * rounds, int(passes)
        budget[key] = (f"{total:,} images" + (f" ({rounds} rounds of " if rounds > 1 else " (")
                       + f"{passes} pass{'es' if passes > 1 else ''} over a fixed {int(images):,}-image subset)")
    return budget


def _minutes(info) -> float:
    """A step's minutes as its MLflow parent run recorded them (a resumed sweep: from its first start)."""
    return ((info.end_time or info.start_time) - info.start_time) / 60000


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
    from ganlab.tracking.store import mlflow_client, tracking_uri

    return len(mlflow_client(tracking_uri()).get_metric_history(trial["run_id"], "images_per_sec"))
