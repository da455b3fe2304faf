"""How `ganlab analyze` grows with a pruning sweep's size: time, peak memory and report size at N trials.

A real tiny prune run is made first (``ganlab train`` + ``ganlab prune`` on Fashion-MNIST, a few seconds): its
params, every metric's whole history (per-draw values, system metrics), tags and the artifacts analyze can read
(strips, sparsity tables) are copied into synthetic sweeps of N children with the real keys — two sources,
sensitivity and percentage pruning with and without fine-tuning, amounts spread over the grid, FCD rising with
sparsity plus noise. (The pruned checkpoint and the before/after grid are not copied: analyze never reads them,
and 10,000 copies would take 39 GB.) Each store is built once under ``--stores`` and reused.

    python benchmarks/analyze_scale.py [--sizes 100 1000 10000] [--stores DIR] [--before TREE]

prints, per N: the wall time of ``ganlab analyze --sweep`` (a fresh process, as a user runs it), its peak
memory (the child's own max RSS), the report's size (HTML + figures) and the time relative to the smallest N
measured in the same run, then the growth exponent (the slope of log time against log N) and the issue's goals
(<= 30 s and 1 GB at 1,000, <= 3 min and 1.5 GB at 10,000, exponent <= 1.1). ``--before TREE`` also runs an
older checkout's analyze on the same stores and prints after / before.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

from ganlab.tracking import schema  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOALS = {1000: (30.0, 1.0), 10000: (180.0, 1.5)}  # N: (seconds, GB)
COPIED = (schema.STRIP_DENSE, schema.STRIP_PRUNED,
          schema.sparsity_table("generator"), schema.sparsity_table("generator", "md"))


def _ganlab(args: list[str], env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "ganlab", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ganlab {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def template(work: Path) -> dict:
    """One real prune run (tiny): params, metric histories, tags and the files analyze reads."""
    from mlflow.tracking import MlflowClient

    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GANLAB_OFFLINE": "1"}
    tiny = ["--dataset", "fashion-mnist", "--image-size", "32", "--limit", "512", "--epochs", "1", "--batch-size",
            "64", "--ngf", "16", "--ndf", "16", "--no-progress"]
    source = _ganlab(["train", *tiny], env).strip().splitlines()[-1].split("run_id: ")[1]
    out = _ganlab(["prune", "--run-id", source, "--method", "percentage", "--q", "50", "--samples", "200",
                   "--eval-draws", "3", "--no-progress"], env)
    run_id = out.strip().splitlines()[-1].split("run_id: ")[1]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    history = {k: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, k)]
               for k in run.data.metrics}
    files = {}
    for path in COPIED:
        local = client.download_artifacts(run_id, path, str(work / "files"))
        files[path] = local
    return {"params": dict(run.data.params), "history": history, "source": source,
            "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}, "files": files}


def build_store(root: Path, n: int, tpl: dict) -> str:
    """A store with one sweep of ``n`` prune children cloned from ``tpl``; returns the sweep's run id."""
    import numpy as np
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.create_experiment("ganlab", artifact_location=(root / "mlartifacts").as_uri())
    parent = client.create_run(exp, run_name=f"prune-grid-{n}", tags={schema.KIND: "sweep"})
    rng = np.random.default_rng(n)
    sources = [tpl["source"], "f" * 32]
    families = [("percentage", "q", 0), ("percentage", "q", 1), ("sensitivity", "s", 0), ("sensitivity", "s", 1)]
    per_family = max(1, n // (len(sources) * len(families)))
    dense = np.array([v for _, v, _ in sorted(tpl["history"]["dense_fcd_draw"])])
    started = time.perf_counter()
    for i in range(n):
        method, key, ft = families[(i // len(sources)) % len(families)]
        k = i // (len(sources) * len(families))
        frac = (k + 0.5) / per_family  # where along the grid this point sits, 0..1
        amount = round(95 * frac, 6) if key == "q" else round(2.5 * frac, 6)
        sparsity = frac * 0.95 if key == "q" else math.erf(amount / math.sqrt(2))
        ratio = (1 + 2.5 * sparsity ** 3) * (0.9 if ft else 1.0) * float(np.exp(rng.normal(0, 0.02)))
        params = {**tpl["params"], "method": method, "q": "", "s": "", key: str(amount), "finetune_epochs": str(ft),
                  "recovery": "ft" if ft else "none"}
        params = {k_: v for k_, v in params.items() if v != ""}
        tags = {**tpl["tags"], schema.SOURCE_RUN: sources[i % len(sources)], schema.PARENT_RUN:
                parent.info.run_id}
        run = client.create_run(exp, run_name=f"{method}-{key}{amount:g}-ft{ft}-{i}", tags=tags)
        metrics = []
        for name, history in tpl["history"].items():
            for step, value, ts in history:
                if name in ("fcd", "fcd_draw"):
                    value = value / (tpl["history"]["fcd"][-1][1] or 1) * float(dense.mean()) * ratio * float(
                        np.exp(rng.normal(0, 0.03)))
                elif name == "sparsity":
                    value = sparsity
                elif name in ("ssim_mean", "msssim_mean", "uqi_mean"):
                    value = 1 - 0.5 * sparsity ** 2
                metrics.append(Metric(name, float(value), ts, step))
        for start in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000],
                             params=[Param(k_, v) for k_, v in params.items()] if start == 0 else [],
                             tags=[])
        for path, local in tpl["files"].items():
            client.log_artifact(run.info.run_id, local, path.rsplit("/", 1)[0])
        client.set_terminated(run.info.run_id)
        if (i + 1) % 500 == 0:
            print(f"  store {n}: {i + 1} runs, {time.perf_counter() - started:.0f} s", flush=True)
    client.set_terminated(parent.info.run_id)
    (root / "sweep_id").write_text(parent.info.run_id)
    return parent.info.run_id


def measure(root: Path, sweep: str, tree: Path, out: Path) -> tuple[float, float, int, int]:
    """(seconds, peak GB, report bytes, html bytes) of one `ganlab analyze` in a fresh process from ``tree``."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", "analyze", "--sweep", sweep, "--out", str(out)],
                            env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"analyze at {root} from {tree} failed ({proc.returncode}):\n{err[-2000:]}")
    files = [f for f in out.rglob("*") if f.is_file()]
    html = sum(f.stat().st_size for f in files if f.suffix == ".html")
    return seconds, usage.ru_maxrss / 2 ** 20, sum(f.stat().st_size for f in files), html


def exponent(ns: list[int], secs: list[float]) -> float:
    if len(ns) < 2:
        return float("nan")
    x, y = [math.log(n) for n in ns], [math.log(s) for s in secs]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="sweep sizes N (trials)")
    p.add_argument("--stores", type=Path, default=REPO / ".cache" / "bench-analyze",
                   help="where the synthetic stores are built once and reused (default: .cache/bench-analyze)")
    p.add_argument("--before", type=Path, default=None,
                   help="an older checkout (e.g. `git worktree add /tmp/before <commit>`) to measure as well")
    args = p.parse_args()
    args.stores.mkdir(parents=True, exist_ok=True)
    print(machine_line(1, "idle"), flush=True)
    tpl = None
    rows = []
    with tempfile.TemporaryDirectory(prefix="ganlab-analyze-") as tmp:
        for n in sorted(args.sizes):
            root = args.stores / f"n{n}"
            if not (root / "sweep_id").is_file():
                shutil.rmtree(root, ignore_errors=True)
                tpl = tpl or template(args.stores / "template")
                t0 = time.perf_counter()
                build_store(root, n, tpl)
                print(f"built the {n}-trial store in {time.perf_counter() - t0:.0f} s", flush=True)
            sweep = (root / "sweep_id").read_text().strip()
            after = measure(root, sweep, REPO, Path(tmp) / f"after{n}")
            before = measure(root, sweep, args.before, Path(tmp) / f"before{n}") if args.before else None
            rows.append((n, after, before))
            line = (f"N={n:>6}: {after[0]:7.1f} s, peak {after[1]:.2f} GB, report {after[2] / 1e6:.1f} MB "
                    f"(HTML {after[3] / 1e3:.0f} kB), {after[0] / rows[0][1][0]:.1f}x the N={rows[0][0]} time")
            if before:
                line += (f"; before: {before[0]:.1f} s, {before[1]:.2f} GB, {before[2] / 1e6:.1f} MB -> "
                         f"after/before time {after[0] / before[0]:.2f}")
            print(line, flush=True)
    slope = exponent([r[0] for r in rows], [r[1][0] for r in rows])
    print(f"growth exponent (log time vs log N): {slope:.2f}" + (
        f"; before: {exponent([r[0] for r in rows], [r[2][0] for r in rows]):.2f}" if args.before else ""))
    for n, (secs, gb, _, _), _ in rows:
        if n in GOALS:
            goal_s, goal_gb = GOALS[n]
            ok = secs <= goal_s and gb <= goal_gb
            print(f"goal at {n}: <= {goal_s:.0f} s and <= {goal_gb} GB: {'met' if ok else 'NOT met'}")
    print(f"goal exponent <= 1.1: {'met' if slope <= 1.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
