"""``ganlab demo``: the whole study on embedded defaults, through the same CLI a user types.

training sweep (Fashion-MNIST, 32 px, local Ray) -> pruning sweep on its best trial -> Pareto
report, all in the local MLflow store. Each step is a ``ganlab`` subprocess whose last line
(``sweep_run_id: ...`` / ``report: ...``) feeds the next step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ganlab.tracking.store import tracking_uri, ui_url

SPECS = Path(__file__).resolve().parents[1] / "sweeps" / "specs"  # sweeps.spec.BUNDLED, shipped with sweeps


def register(sub) -> None:
    """``ganlab demo``, added to the ganlab CLI through the ``ganlab.commands`` entry point."""
    p = sub.add_parser("demo", help="the whole study on 2 CPU cores in about 4 minutes",
                       description="Training sweep on a Fashion-MNIST subset (32 px, local Ray) -> pruning sweep "
                       "on its best trial (s, q and channel ratio, with and without fine-tuning; the best "
                       "generator registered as demo-prune-generator@best) -> Pareto report; everything in the "
                       "local MLflow store. About 4 minutes on 2 CPU cores once set up.")
    p.add_argument("--out", default="demo_out", help="where the report and figures go (default: demo_out)")
    p.set_defaults(func=lambda args: run_demo(args.out))


def run_step(title: str, args: list[str], env: dict[str, str]) -> str:
    print(f"\n== {title}\n$ ganlab {' '.join(args)}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", *args], stdout=subprocess.PIPE, text=True, env=env)
    last = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.strip():
            last = line.strip()
    if proc.wait() != 0:
        raise SystemExit(proc.returncode)
    print(f"   ({time.monotonic() - start:.0f} s)", flush=True)
    return last.split(": ", 1)[1]


def run_demo(out: str = "demo_out") -> int:
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": os.environ.get("MLFLOW_EXPERIMENT_NAME", "ganlab-demo"),
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    uri = tracking_uri()
    start = time.monotonic()
    train_sweep = run_step("1/3 training sweep: Optuna TPE + ASHA over lr_d, lr_g, beta1, label smoothing",
                           ["sweep", "train", str(SPECS / "demo_train.yaml"), "--new"], env)
    prune_sweep = run_step("2/3 pruning sweep on the best trial: s, q and channel ratio, with and without fine-tuning",
                           ["sweep", "prune", str(SPECS / "demo_prune.yaml"), "--from-sweep", train_sweep,
                            "--new"], env)
    report = run_step("3/3 analysis: Pareto fronts and the report",
                      ["analyze", "--sweep", prune_sweep, "--out", out], env)
    print(f"""
== done in {(time.monotonic() - start) / 60:.1f} min
training sweep   sweep_run_id {train_sweep}
pruning sweep    sweep_run_id {prune_sweep}
report           {report}
figures          {Path(report).parent}/*.png, Pareto front as CSV in {Path(report).parent}/pareto_front.csv
MLflow store     {uri} (experiment {env['MLFLOW_EXPERIMENT_NAME']})
look at it       ganlab server   (serves this store), then open {ui_url("http://127.0.0.1:5000", via_ganlab=True)}""")
    print(f"report: {report}")
    return 0
