"""Issue 31's check of the verdict's figure: does FCD∞ (Chong & Forsyth's 1/N extrapolation,
ganlab.metrics.distribution.fcd_infinity) computed from 1,000 generated images read what FCD at 5,000 reads, where
FCD at 1,000 reads high? And does the ratio of a pruned generator to its dense source move toward the ratio at
5,000?

Trains a dense source (the study's 32 px Fashion-MNIST DCGAN, width 32, --epochs on the 60,000 images) and prunes a
copy (q = --q %, BN recalibrated); scores both on --draws independent evaluation-noise draws of 1,000 and of 5,000
images; prints mean ± sd of FCD and FCD∞ at each size, their bias against FCD at 5,000, and the pruned/dense ratio
of each figure. Pure torch (no MLflow, no Ray): runs on a bare GPU machine.

    python benchmarks/fcd_infinity.py                 # GPU: ~2 min on one H200; CPU: ~20 min at --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, set_threads, usable_cores  # noqa: E402

from ganlab.config import TrainConfig  # noqa: E402
from ganlab.device import pick_device  # noqa: E402
from ganlab.gan.data import TensorBatcher, load_images  # noqa: E402
from ganlab.gan.loop import create_state, train_gan  # noqa: E402
from ganlab.gan.models import evaluation_noise, generate  # noqa: E402
from ganlab.metrics.distribution import Evaluator  # noqa: E402
from ganlab.pruning.magnitude import make_permanent, prune_model, recalibrate_batchnorm  # noqa: E402


def scores(generator, evaluator, n: int, draws: int, seed: int) -> np.ndarray:
    """(draws, 2): FCD and FCD∞ of ``n`` images on each of ``draws`` independent evaluation-noise draws."""
    device = next(generator.parameters()).device
    rows = []
    for k in range(draws):
        got = evaluator.evaluate_images(generate(generator, evaluation_noise(n, generator.nz, seed, draw=k).to(device)))
        rows.append((got["fcd"], got["fcd_inf"]))
    return np.array(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--q", type=float, default=50.0)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = pick_device("auto")
    if device.type == "cpu":
        set_threads(usable_cores())
    start = time.monotonic()
    evaluator = Evaluator.for_dataset("fashion-mnist", 32, real_samples=2000, progress=False).ready()
    cfg = TrainConfig(dataset="fashion-mnist", image_size=32, ngf=32, ndf=32, epochs=args.epochs,
                      seed=args.seed).resolved()
    state = create_state(cfg, device)
    train = load_images("fashion-mnist", 32)
    for _ in train_gan(state, TensorBatcher(train.images, cfg.batch_size, device, cfg.seed), cfg.epochs,
                       progress=False):
        pass
    dense = copy.deepcopy(state.generator)
    pruned = copy.deepcopy(state.generator)
    prune_model(pruned, "percentage", args.q)
    make_permanent(pruned)
    for g in (dense, pruned):
        recalibrate_batchnorm(g, cfg.seed)
        g.eval()
    got = {(name, n): scores(g, evaluator, n, args.draws, cfg.seed) for name, g in (("dense", dense),
                                                                                    ("pruned", pruned))
           for n in (1000, 5000)}
    print(f"\n{machine_line(torch.get_num_threads(), 'idle')}; source trained {args.epochs} epochs; "
          f"{args.draws} draws per size; {(time.monotonic() - start) / 60:.1f} min\n")
    print("| generator | figure | at 1,000 images | at 5,000 images | 1,000 vs FCD at 5,000 |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("dense", "pruned"):
        reference = got[(name, 5000)][:, 0].mean()
        for j, figure in enumerate(("FCD", "FCD∞")):
            small, large = got[(name, 1000)][:, j], got[(name, 5000)][:, j]
            print(f"| {name} | {figure} | {small.mean():.3f} ± {small.std(ddof=1):.3f} | {large.mean():.3f} ± "
                  f"{large.std(ddof=1):.3f} | {100 * (small.mean() / reference - 1):+.1f} % |")
    print("\n| figure | pruned / dense at 1,000 (paired draws, mean ± sd) | at 5,000 |\n| --- | --- | --- |")
    for j, figure in enumerate(("FCD", "FCD∞")):
        ratios = {n: got[("pruned", n)][:, j] / got[("dense", n)][:, j] for n in (1000, 5000)}
        print(f"| {figure} | {ratios[1000].mean():.4f} ± {ratios[1000].std(ddof=1):.4f} | "
              f"{ratios[5000].mean():.4f} ± {ratios[5000].std(ddof=1):.4f} |")
    return 0


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    sys.exit(main())
