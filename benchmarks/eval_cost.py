"""What per-epoch evaluation costs: one evaluation (FCD, KID, coverage, class KL at 1,000 samples) against
one epoch of training, both measured in one run on this machine.

Training: the default 32 px configuration (ngf/ndf 64, batch 128) on the full 60,000-image Fashion-MNIST
train split — one whole epoch, or ``--steps`` steps scaled to a whole epoch (said in the output). The
evaluator is built first (its real images' features are extracted once, as a run's evaluator does), so
the timed evaluation is what every epoch pays: generating the samples and scoring them.

    python benchmarks/eval_cost.py [--samples 1000] [--steps 0 (a whole epoch)] [--threads N] [--load idle|busy|both]
prints both times and the ratio evaluation / epoch (goal: < 0.10 at 32 px).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_arguments, loads, machine_line, neighbour, set_threads  # noqa: E402

from ganlab.config import TrainConfig  # noqa: E402
from ganlab.device import pick_device  # noqa: E402
from ganlab.gan.data import TensorBatcher, load_images  # noqa: E402
from ganlab.gan.loop import create_state, for_device, train_gan
from ganlab.metrics.distribution import Evaluator  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000, help="evaluation samples (default: 1000, ganlab's default)")
    p.add_argument("--steps", type=int, default=0,
                   help="time this many training steps and scale to a whole epoch (default: 0, a whole epoch)")
    p.add_argument("--image-size", type=int, default=32, choices=(32, 64))
    p.add_argument("--repeats", type=int, default=3, help="evaluations timed (the median is used)")
    p.add_argument("--device", default="auto")
    add_common_arguments(p)
    args = p.parse_args()
    device = pick_device(args.device)
    cfg = for_device(TrainConfig(dataset="fashion-mnist", image_size=args.image_size).resolved(), device)
    train_set = load_images(cfg.dataset, cfg.image_size)
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, progress=False)
    for load in loads(args.load):
        with neighbour(load):
            threads = set_threads(args.threads)  # ganlab's default decides with the neighbour running
            state = create_state(cfg, device)
            images = train_set.images if not args.steps else train_set.images[:args.steps * cfg.batch_size]
            batcher = TensorBatcher(images, cfg.batch_size, device, cfg.seed)
            start = time.perf_counter()
            for _ in train_gan(state, batcher, 1, progress=False):
                pass
            if device.type == "cuda":
                torch.cuda.synchronize()
            trained = time.perf_counter() - start
            epoch = trained * steps_per_epoch / len(batcher) if args.steps else trained
            evaluator.evaluate_generator(state.generator, args.samples, seed=0)  # warm (first-call allocations)
            times = []
            for r in range(args.repeats):
                start = time.perf_counter()
                evaluator.evaluate_generator(state.generator, args.samples, seed=r)
                times.append(time.perf_counter() - start)
            evaluation = statistics.median(times)
            print(machine_line(threads, load))
            what = (f"{len(batcher)} of {steps_per_epoch} steps, scaled to the epoch" if args.steps
                    else f"{steps_per_epoch} steps")
            print(f"{args.image_size} px, ngf/ndf {cfg.ngf}/{cfg.ndf}, batch {cfg.batch_size}, device {device.type}")
            print(f"one training epoch (60,000 images, {what}): {epoch:8.1f} s")
            print(f"one evaluation at {args.samples} samples (median of {args.repeats}): {evaluation:8.2f} s")
            print(f"ratio evaluation / epoch: {evaluation / epoch:.3f} (goal < 0.10)", flush=True)


if __name__ == "__main__":
    main()
