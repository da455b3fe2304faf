"""How many samples does FCD need? Its spread over evaluation seeds at several sample counts, one generator.

    python benchmarks/fcd_samples.py --run-id <train or prune run> [--sizes 500 1000 2000 5000] [--seeds 5]

FCD is biased upward at small n (the covariance estimate of 128 classifier features is noisy) and
varies with the evaluation noise. For each sample count this scores the run's generator on ``--seeds``
different noise draws and prints mean, std, the coefficient of variation and the bias against the
largest count's mean, as a markdown table (the README's). Not a speed benchmark: the reference is
the largest sample count, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_common_arguments, machine_line, set_threads, usable_cores  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True, help="an MLflow run with a generator (train or prune)")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    p.add_argument("--seeds", type=int, default=5, help="evaluation noise draws per size (default: 5)")
    add_common_arguments(p)
    args = p.parse_args(argv)
    threads = args.threads or usable_cores()
    set_threads(threads)

    from ganlab.checkpoint import load_checkpoint, resolve_checkpoint
    from ganlab.distribution_quality import Evaluator
    from ganlab.train import state_from_source

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_checkpoint(resolve_checkpoint(args.run_id, Path(tmp)))["config"]
        generator = state_from_source(args.run_id, Path(tmp) / "s", "cpu", with_optimizers=False).generator.eval()
    evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, progress=False)
    print(machine_line(threads, "idle"))
    print(f"run {args.run_id}: {cfg.dataset} {cfg.image_size} px, ngf {cfg.ngf}; {args.seeds} noise draws per size")
    rows = {}
    for n in sorted(args.sizes):
        start = time.perf_counter()
        rows[n] = [evaluator.evaluate_generator(generator, n, seed=1000 + k)["fcd"] for k in range(args.seeds)]
        print(f"  n={n}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    reference = statistics.mean(rows[max(rows)])
    print("\n| samples | FCD mean | std over seeds | CV | bias vs largest n |")
    print("| --- | --- | --- | --- | --- |")
    for n, values in rows.items():
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {n} | {mean:.2f} | {std:.2f} | {std / mean:.1%} | {mean / reference - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
