"""Speed of ganlab's batched UQI/SSIM/MS-SSIM against the per-image sewar loop, same inputs.

    python benchmarks/quality_speed.py [--pairs 200] [--image-size 32] [--channels 1] [--threads N] [--load both]
prints both times, the largest difference (they must agree) and the speed-up ratio, on an idle
machine and/or with a CPU-bound process beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sewar
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_arguments, loads, machine_line, neighbour, set_threads  # noqa: E402

from ganlab.metrics.pairwise import uqi_ssim_msssim  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timings per side, interleaved; the best is used")
    add_common_arguments(p)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (args.pairs, args.image_size, args.image_size, args.channels), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    for load in loads(args.load):
        with neighbour(load):
            threads = set_threads(args.threads)  # ganlab's default decides with the neighbour running
            print(machine_line(threads, load))
            times_sewar, times_ours = [], []
            for _ in range(args.repeats):  # interleaved, best of N: less sensitive to the machine's other load
                t, ref = _sewar(a, b)
                times_sewar.append(t)
                t, ours = _ours(a, b)
                times_ours.append(t)
            t_sewar, t_ours = min(times_sewar), min(times_ours)
        print(f"{args.pairs} pairs of {args.image_size}x{args.image_size}x{args.channels}")
        print(f"sewar per-image loop: {t_sewar:7.3f} s")
        print(f"ganlab batched:       {t_ours:7.3f} s   (max |difference| {np.abs(ours - ref).max():.1e})")
        print(f"speed-up ratio sewar / ganlab: {t_sewar / t_ours:.1f}\n")


def _sewar(a, b):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.array([[sewar.uqi(x, y), sewar.ssim(x, y, MAX=255)[0], sewar.msssim(x, y, MAX=255)]
                        for x, y in zip(a, b)], dtype=float)
    return time.perf_counter() - start, ref


def _ours(a, b):
    start = time.perf_counter()
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).double() / 255
    ours = torch.stack(uqi_ssim_msssim(ta, tb), dim=1).numpy()  # what a prune run computes
    return time.perf_counter() - start, ours


if __name__ == "__main__":
    main()
