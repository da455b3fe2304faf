"""Wall time of N small trainings through `ganlab sweep train` vs back-to-back plain training calls.

Both sides do the same work in one process on this machine: load the data and the scoring
classifier once, then N trainings with per-epoch evaluation (sweeps always evaluate: it is their
objective), logged to MLflow. The sweep runs its trials one at a time with all CPUs, so the ratio
shows Ray Tune's and the served MLflow store's overhead, not parallelism. Ray is started before the
clock (the goal is about overhead once Ray is up).

    python benchmarks/sweep_overhead.py [--trials 3] [--limit 1024] [--epochs 2]
prints both wall times and the ratio sweep / plain (goal: <= 1.3), and the same ratio per trial once
the sweep's worker is up (trials after the first, from their MLflow runs' start and end times): the
first includes the one-off costs of a sweep — the MLflow server's boot and a Ray worker importing torch —
and how far into the sweep the first trial's MLflow run started.
The store (a new sqlite file) is created before either clock, as a user's mlflow.db already exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from ganlab.tracking import schema  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--limit", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--server", action="store_true",
                   help="both sides log to one MLflow server started before the clocks (a long-running "
                   "`ganlab server`, as on a cluster) instead of the sweep serving a local sqlite file itself")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ganlab-bench-"))
    os.chdir(tmp)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = store

    import ray

    from ganlab.gan.data import load_images
    from ganlab.metrics.distribution import Evaluator
    from ganlab.runs.train import TrainInputs, train_run
    from ganlab.tracking.store import RunContext, ensure_experiment
    from sweeps.runner import run_sweep
    from sweeps.spec import spec_from_dict

    cpus = os.cpu_count() or 1
    base = {"dataset": "fashion-mnist", "image_size": 32, "limit": args.limit, "epochs": args.epochs,
            "batch_size": 64, "ngf": 32, "ndf": 32, "eval_samples": 500}
    lrs = [1e-4 * (1.5 ** i) for i in range(args.trials)]
    spec = spec_from_dict({"kind": "train", "name": "overhead", "storage_path": str(tmp / "ray"), "base": base,
                           "search": {"lr_d": {"choice": lrs}}, "initial_points": [{"lr_d": lr} for lr in lrs],
                           "num_samples": args.trials, "max_concurrent": 1, "scheduler": {"type": "none"},
                           "resources": {"cpu": cpus}})
    Evaluator.for_dataset("fashion-mnist", 32, progress=False)  # the classifier is cached before either clock
    # and the store exists, as a user's mlflow.db does: whichever side ran first would otherwise pay for
    # creating it (MLflow's schema migrations, ~1.3 s here) and the other would not
    ensure_experiment("ganlab", store)
    server = None
    if args.server:
        from ganlab.tracking.server import ServedStore

        server = ServedStore(store)
        os.environ["MLFLOW_TRACKING_URI"] = server.uri  # waits until it answers
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")

    start, started_at = time.perf_counter(), time.time()
    run_sweep(spec)
    t_sweep = time.perf_counter() - start

    start = time.perf_counter()
    cfg = spec.train_config()
    train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, subset_seed=cfg.seed)
    evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, progress=False)
    for lr in lrs:
        train_run(dataclasses.replace(cfg, lr_d=lr), RunContext.here(progress=False),
                  inputs=TrainInputs(train_set, evaluator))
    t_plain = time.perf_counter() - start
    ray.shutdown()
    if server is not None:
        server.close()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("ganlab").experiment_id],
                              schema.tag_filter(schema.KIND, "train"),
                              order_by=["attributes.start_time ASC"])
    swept = [r for r in runs if r.data.tags.get(schema.PARENT_RUN)]
    plain = [r for r in runs if not r.data.tags.get(schema.PARENT_RUN)]
    span = lambda rs: (rs[-1].info.end_time - rs[0].info.start_time) / 1000.0  # noqa: E731

    print(machine_line(cpus, "idle"))
    print(f"{args.trials} trainings of {args.limit} images x {args.epochs} epochs, 32 px, ngf/ndf 32, one at a time, "
          + ("both logging to one running MLflow server" if args.server else "the sweep serving the sqlite store"))
    print(f"plain ganlab training calls: {t_plain:7.1f} s")
    print(f"ganlab sweep train:          {t_sweep:7.1f} s")
    print(f"ratio sweep / plain: {t_sweep / t_plain:.2f}")
    if len(swept) > 1:
        per_trial = span(swept[1:]) / span(plain[1:])
        print(f"ratio per trial once the worker is up (trials 2..{len(swept)}): {per_trial:.2f}")
        # what does not grow with the sweep: served store, Ray worker start, Tune's set-up and wrap-up
        print(f"fixed cost (sweep - plain x per-trial ratio): {t_sweep - t_plain * per_trial:.1f} s")
    if swept:  # the one-off costs before it: the store's boot and its worker's imports, side by side
        print(f"first trial's run started {swept[0].info.start_time / 1000.0 - started_at:.1f} s into the sweep")


if __name__ == "__main__":
    main()
