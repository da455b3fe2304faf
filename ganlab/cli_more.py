"""Subcommands beyond ``train``: evaluate and prune here; sweep, analyze and demo in their packages."""

from __future__ import annotations

import argparse


def _source_args(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run whose checkpoints/last.pt to use")
    src.add_argument("--checkpoint", help="a ganlab checkpoint file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")


def add_evaluate(sub) -> None:
    from ganlab.cli import _add_common

    p = sub.add_parser("evaluate", help="score a generator: fcd, kid, coverage, class_kl",
                       description="Generate --samples images and score them against held-out real images "
                       "in the feature space of a classifier trained once per dataset (cached): Fréchet "
                       "distance (fcd), KID, class coverage and class KL. Logs one MLflow run "
                       "(ganlab.kind=evaluate).", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _source_args(p)
    p.add_argument("--samples", type=int, default=1000, help="generated images to score")
    p.add_argument("--inception", action="store_true",
                   help="also Inception FID (needs torch-fidelity and its weights; fails clearly without)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from ganlab.prune_run import evaluate_run

    run_id = evaluate_run(args.run_id or args.checkpoint, samples=args.samples, experiment=args.experiment,
                          data_dir=args.data_dir, device=args.device, inception=args.inception,
                          progress=not args.no_progress)
    print(f"run_id: {run_id}")
    return 0


def add_prune(sub) -> None:
    from ganlab.cli import _add_common

    p = sub.add_parser("prune", help="prune a trained GAN, fine-tune, and measure what it cost",
                       description="Sensitivity pruning zeroes |w| < s*sigma in each conv layer; percentage "
                       "pruning zeroes the q%% smallest |w| in each layer. Then optional fine-tuning with the "
                       "masks held, and one MLflow run (ganlab.kind=prune) with the sparsity tables, "
                       "UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage, "
                       "sizes, a before/after grid and the pruned checkpoint.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _source_args(p)
    p.add_argument("--method", required=True, help="sensitivity or percentage")
    p.add_argument("--s", type=float, help="sensitivity: prune |w| < s * std of the layer (s >= 0)")
    p.add_argument("--q", type=float, help="percentage: prune the q%% smallest |w| per layer (0 <= q < 100)")
    p.add_argument("--target", default="generator", help="generator, discriminator or both")
    p.add_argument("--finetune-epochs", type=int, default=0, help="GAN training epochs with the masks held")
    p.add_argument("--iterative-steps", type=int, default=1,
                   help="iterative magnitude pruning: reach the target in K prune+fine-tune steps")
    p.add_argument("--samples", type=int, default=1000, help="images per quality comparison")
    _add_common(p)
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args) -> int:
    from ganlab.prune import PruneConfig
    from ganlab.prune_run import prune_run

    pcfg = PruneConfig(method=args.method, s=args.s, q=args.q, target=args.target,
                       finetune_epochs=args.finetune_epochs, iterative_steps=args.iterative_steps,
                       samples=args.samples).validate()
    run_id = prune_run(args.run_id or args.checkpoint, pcfg, experiment=args.experiment, data_dir=args.data_dir,
                       device=args.device, progress=not args.no_progress)
    print(f"run_id: {run_id}")
    return 0


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole study on 2 CPU cores in about 15 minutes",
                       description="Training sweep on a Fashion-MNIST subset (32 px, local Ray) -> pruning sweep "
                       "on its best trial -> Pareto report; everything in the local MLflow store.")
    p.add_argument("--out", default="demo_out", help="where the report and figures go")
    p.set_defaults(func=lambda args: __import__("ganlab.demo", fromlist=["run_demo"]).run_demo(args.out))


REGISTER = [add_evaluate, add_prune, add_demo]
