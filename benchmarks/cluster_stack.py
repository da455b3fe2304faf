"""What the cluster stack costs against the local default, measured in one run on this machine.

Reference: a local sweep — Ray started by the driver, its sqlite store served by the driver
(`served_store`), Tune's state in a local folder. Cluster stack: `ganlab server` on PostgreSQL with
artifacts proxied to an S3-compatible server (moto), Tune's state in that bucket, a Ray head and a worker
node started with `ray start`, the sweep joining them with --address. Both run the same 2-trial sweep (one
CPU per trial, 32 px, tiny widths). Printed for each: the tracking server's boot (until /health answers),
the sweep's first trial start (driver launched -> the first trial's MLflow run created), the whole sweep's
wall time, and the ratios cluster / local.

    python benchmarks/cluster_stack.py [--epochs 2] [--limit 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the stack's real servers, as the tests start them
sys.path.insert(0, str(REPO / "benchmarks"))

from common import machine_line  # noqa: E402
from stack import VENV_BIN, Postgres, RayNodes, S3Server, TrackingServer  # noqa: E402

from ganlab.tracking import schema  # noqa: E402


def _sweep(spec: dict, work: Path, env: dict, address: str | None) -> tuple[float, float]:
    """(first trial start, whole sweep) in seconds for one `ganlab sweep train` subprocess."""
    from mlflow.tracking import MlflowClient

    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start_ms = time.time() * 1000
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "sweep", "train", str(path),
                          *(["--address", address] if address else [])], cwd=work, env=env, capture_output=True,
                         text=True, timeout=1800)
    wall = time.monotonic() - start
    if out.returncode != 0:
        raise SystemExit(f"sweep failed: {(out.stdout + out.stderr)[-2000:]}")
    parent = out.stdout.strip().splitlines()[-1].split("sweep_run_id: ")[1]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_run(parent).info.experiment_id
    trials = client.search_runs([exp], schema.child_filter(parent), order_by=["attributes.start_time"])
    return (trials[0].info.start_time - start_ms) / 1000.0, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=1024)
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-stack-"))
    base = {"dataset": "fashion-mnist", "image_size": 32, "limit": args.limit, "epochs": args.epochs,
            "batch_size": 64, "ngf": 8, "ndf": 8, "eval_samples": 200}
    spec = {"kind": "train", "base": base, "search": {"lr_d": {"loguniform": [1e-4, 4e-4]}},
            "scheduler": {"type": "none"}, "stopping": {"grace_epochs": 1, "min_coverage": 0}, "resources": {"cpu": 1},
            "num_samples": 2, "max_concurrent": 2}
    from ganlab.metrics.distribution import Evaluator
    from ganlab.tracking.server import ServedStore

    Evaluator.for_dataset("fashion-mnist", 32, progress=False)  # the classifier is cached before any clock
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)

    # reference: the served sqlite store a local sweep boots, and a local sweep
    local = work / "local"
    local.mkdir()
    start = time.monotonic()
    served = ServedStore(f"sqlite:///{local / 'boot.db'}")
    served.uri  # noqa: B018 - waits until it answers
    boot_local = time.monotonic() - start
    served.close()
    first_local, wall_local = _sweep({**spec, "name": "local", "storage_path": str(local / "ray")}, local,
                                     {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{local / 'mlflow.db'}"}, None)

    pg = Postgres().start()
    s3 = S3Server(work / "s3").start()
    nodes = None
    try:
        stack_env = {**env, **s3.env}
        server = TrackingServer(pg.uri(), f"s3://{s3.bucket}/mlflow", stack_env, work).start()
        stack_env["MLFLOW_TRACKING_URI"] = server.uri
        nodes = RayNodes(stack_env, Path(tempfile.mkdtemp(prefix="ganlab-ray-", dir="/tmp"))).start(workers=1)
        first_cluster, wall_cluster = _sweep({**spec, "name": "cluster", "storage_path": f"s3://{s3.bucket}/ray"},
                                             work, nodes.env, nodes.address)
        server.stop()
    finally:
        if nodes is not None:
            nodes.stop()
            shutil.rmtree(nodes.temp_dir, ignore_errors=True)
        s3.stop()
        pg.stop()

    print(machine_line(1, "idle"))
    print(f"2 trials x {args.epochs} epochs x {args.limit} images, 32 px, ngf/ndf 8, 1 CPU each")
    print(f"{'':34s}{'served sqlite (local)':>24s}{'PostgreSQL + S3 + ray start':>30s}{'ratio':>8s}")
    for what, a, b in [("tracking server boot (s)", boot_local, server.boot_s),
                       ("first trial start (s)", first_local, first_cluster),
                       ("whole sweep (s)", wall_local, wall_cluster)]:
        print(f"{what:34s}{a:24.1f}{b:30.1f}{b / a:8.2f}")
    print("(the cluster's first trial starts on nodes that are already up; its sweep includes S3 round trips for "
          "Tune's state and checkpoints, and HTTP through the server for every artifact)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
