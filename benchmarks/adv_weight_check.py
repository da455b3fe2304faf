"""Issue 31's first recipe check, pure torch (no MLflow, no Ray: runs on a bare GPU machine): at q = 90 %, does
turning the adversarial term off (``--adv-weight 0``, distillation alone) recover more than the old recipes?

For each of N dense sources (the study's 32 px Fashion-MNIST DCGAN, width 32, seeds 0..N-1, trained --dense-epochs
on the 60,000 training images), prune 90 % of the generator's weights (percentage, per layer) and fine-tune on a
fixed 20,000-image subset for 3 passes with each recipe, beside a dense control fine-tuned the same way; BN is
recalibrated for both; both are scored on the same 5 evaluation-noise draws of 1,000 images (paired). The verdict
is ganlab.metrics.verdict's (t interval over the sources' log ratios). Prints a markdown table and the machine.

    python benchmarks/adv_weight_check.py --sources 3            # GPU: ~5 min on one H200; CPU: hours
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, set_threads, usable_cores  # noqa: E402

from ganlab.config import TrainConfig  # noqa: E402
from ganlab.device import pick_device  # noqa: E402
from ganlab.gan.checkpoint import make_checkpoint  # noqa: E402
from ganlab.gan.data import TensorBatcher, load_images  # noqa: E402
from ganlab.gan.loop import create_state, restore_state, train_gan  # noqa: E402
from ganlab.metrics.distribution import Evaluator  # noqa: E402
from ganlab.metrics.verdict import judge  # noqa: E402
from ganlab.pruning.magnitude import make_permanent, prune_model, recalibrate_batchnorm  # noqa: E402
from ganlab.pruning.recovery import AdversarialWeight, Distillation  # noqa: E402
from ganlab.runs.prune import paired_draws  # noqa: E402

RECIPES = {  # the study's old recipes, and the new knob
    "ft (adversarial alone)": {},
    "ft + distill λ=100": {"distill": 100.0},
    "distill λ=100, adv-weight 0": {"distill": 100.0, "adv": 0.0},
}


def finetune(dense_state, q: float, recipe: dict, images, epochs: int):
    state = restore_state(make_checkpoint(dense_state) | {"config": dense_state.config}, dense_state.device)
    teacher = copy.deepcopy(dense_state.generator).eval()
    if q:
        prune_model(state.generator, "percentage", q)
    state.make_optimizers()
    hooks = []
    if recipe.get("distill"):
        hooks.append(Distillation(teacher, recipe["distill"]))
    if "adv" in recipe:
        hooks.append(AdversarialWeight(recipe["adv"]))
    batcher = TensorBatcher(images, state.config.batch_size, state.device, state.config.seed)
    for _ in train_gan(state, batcher, state.epoch + epochs, hooks=hooks, progress=False):
        pass
    return make_permanent(state.generator)


def score(dense, pruned, evaluator, seed: int, args):
    dense, pruned = copy.deepcopy(dense), copy.deepcopy(pruned)
    recalibrate_batchnorm(dense, seed)
    recalibrate_batchnorm(pruned, seed)
    _, _, table = paired_draws(dense.eval(), pruned.eval(), evaluator, args.samples, args.draws, seed)
    return table


def report(tables: dict, sources: int, args, start: float) -> None:
    machine = machine_line(torch.get_num_threads(), "idle")
    print(f"\n{machine}; {sources} sources, q = {args.q:g} %, {args.ft_epochs} passes over 20,000 "
          f"images, {args.draws} paired draws of {args.samples}; {(time.monotonic() - start) / 60:.1f} min\n")
    print("| recipe at q = 90 % | pruned FCD | reference FCD | ratio vs reference [95 % t CI] | verdict | coverage |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, got in tables.items():
        v = judge(got["fcd"], got["ref"], got["cov"], got["ref_cov"])
        ref = "dense" if name == "no fine-tuning" else "dense control"
        fcd = sum(x.mean() for x in got["fcd"]) / len(got["fcd"])
        reference = sum(x.mean() for x in got["ref"]) / len(got["ref"])
        coverage = sum(x.mean() for x in got["cov"]) / len(got["cov"])
        print(f"| {name} | {fcd:.1f} | {reference:.1f} ({ref}) | {v.ratio:.2f} [{v.low:.2f}, {v.high:.2f}] | "
              f"{v.verdict}{' (loses a class)' if v.lost_class else ''} | {coverage:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=int, default=3)
    p.add_argument("--dense-epochs", type=int, default=8)
    p.add_argument("--ft-epochs", type=int, default=3, help="passes over the 20,000-image fine-tuning subset")
    p.add_argument("--q", type=float, default=90.0)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="training images (default: all 60,000)")
    args = p.parse_args()
    device = pick_device("auto")
    if device.type == "cpu":
        set_threads(usable_cores())
    start = time.monotonic()
    evaluator = Evaluator.for_dataset("fashion-mnist", 32, progress=False)
    train = load_images("fashion-mnist", 32, limit=args.limit)
    tables: dict[str, dict[str, list]] = {}
    for seed in range(args.sources):
        cfg = TrainConfig(dataset="fashion-mnist", image_size=32, ngf=32, ndf=32, epochs=args.dense_epochs,
                          seed=seed, limit=args.limit).resolved()
        state = create_state(cfg, device)
        for _ in train_gan(state, TensorBatcher(train.images, cfg.batch_size, device, seed), cfg.epochs,
                           progress=False):
            pass
        subset = load_images("fashion-mnist", 32, limit=min(20000, args.limit or 20000), subset_seed=seed).images
        pruned_only = copy.deepcopy(state.generator)
        prune_model(pruned_only, "percentage", args.q)
        rows = {"no fine-tuning": (make_permanent(pruned_only), None)}
        for name, recipe in RECIPES.items():
            rows[name] = (finetune(state, args.q, recipe, subset, args.ft_epochs),
                          finetune(state, 0.0, recipe, subset, args.ft_epochs))
        for name, (pruned, control) in rows.items():
            vs_dense = score(state.generator, pruned, evaluator, seed, args)
            vs_control = score(control, pruned, evaluator, seed, args) if control is not None else vs_dense
            got = tables.setdefault(name, {"fcd": [], "ref": [], "dense": [], "dense_ref": [], "cov": [],
                                           "ref_cov": []})
            got["fcd"].append(vs_control["fcd"].to_numpy())
            got["ref"].append(vs_control["dense_fcd"].to_numpy())
            got["dense"].append(vs_dense["dense_fcd"].to_numpy())
            got["cov"].append(vs_control["coverage"].to_numpy())
            got["ref_cov"].append(vs_control["dense_coverage"].to_numpy())
        print(f"source {seed} done at {(time.monotonic() - start) / 60:.1f} min", flush=True)
        report(tables, seed + 1, args, start)  # after every source: a run cut short still says what it found
    return 0


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    sys.exit(main())
