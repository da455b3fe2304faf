"""How many samples does FCD need? Its spread over independent evaluation-noise draws at several sample
counts, one generator, and separately its spread over the real reference set.

    python benchmarks/fcd_samples.py --run-id <train or prune run> [--sizes 500 1000 2000 5000] [--draws 20]
                                     [--real-draws 10]

FCD is biased upward at small n (the covariance estimate of 128 classifier features is noisy) and varies with
the evaluation noise. For each sample count this scores the run's generator on ``--draws`` independent noise
draws (every (size, draw) pair its own noise: no draw is a prefix of another) and prints mean, std, the
coefficient of variation and the bias against the largest count's mean. Then, with the generated images fixed
(1,000 of draw 0), it varies the real reference set: ``--real-draws`` random 2,000-image subsets of the held-out
split. Not a speed benchmark: the reference is the largest sample count, measured in the same run.
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
    p.add_argument("--draws", type=int, default=20, help="independent evaluation noise draws per size (default: 20)")
    p.add_argument("--real-draws", type=int, default=10, help="random real reference subsets (default: 10)")
    add_common_arguments(p)
    args = p.parse_args(argv)
    threads = args.threads or usable_cores()
    set_threads(threads)

    import dataclasses

    import torch

    from ganlab.gan.checkpoint import load_checkpoint
    from ganlab.gan.data import load_images
    from ganlab.gan.models import evaluation_noise, generate
    from ganlab.metrics.distribution import Evaluator
    from ganlab.runs.source import resolve_checkpoint, state_from_source

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_checkpoint(resolve_checkpoint(args.run_id, Path(tmp)))["config"]
        generator = state_from_source(args.run_id, Path(tmp) / "s", "cpu", with_optimizers=False).generator.eval()
    evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, progress=False)
    print(machine_line(threads, "idle"))
    print(f"run {args.run_id}: {cfg.dataset} {cfg.image_size} px, ngf {cfg.ngf}; {args.draws} independent noise "
          f"draws per size, {args.real_draws} real reference subsets")
    rows = {}
    for i, n in enumerate(sorted(args.sizes)):
        start = time.perf_counter()
        rows[n] = []
        for k in range(args.draws):  # draw ids never shared between sizes: independent, not nested
            noise = evaluation_noise(n, generator.nz, cfg.seed, draw=1 + i * 10_000 + k)
            rows[n].append(evaluator.evaluate_images(generate(generator, noise))["fcd"])
        print(f"  n={n}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    reference = statistics.mean(rows[max(rows)])
    print("\n| samples | FCD mean | std over draws | CV | bias vs largest n |")
    print("| --- | --- | --- | --- | --- |")
    for n, values in rows.items():
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {n} | {mean:.2f} | {std:.2f} | {std / mean:.1%} | {mean / reference - 1:+.1%} |")
    if args.real_draws > 1:
        fake = generate(generator, evaluation_noise(1000, generator.nz, cfg.seed))
        held_out = load_images(cfg.dataset, cfg.image_size, train=False).images
        values = []
        for k in range(args.real_draws):
            pick = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(k))[:2000]
            subset = dataclasses.replace(evaluator, real_images=held_out[pick], _real_features=None)
            values.append(subset.evaluate_images(fake)["fcd"])
        mean, std = statistics.mean(values), statistics.stdev(values)
        print(f"\nreal reference varied ({args.real_draws} random 2,000-image subsets of the held-out split, the same "
              f"1,000 generated images): FCD {mean:.2f} ± {std:.2f} (CV {std / mean:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
