"""``ganlab`` command line. Bad input exits 2 with one line on stderr; see DESIGN.md contracts."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ganlab.errors import GanlabError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train the seed's DCGAN and log it to MLflow",
        description="Train the seed's DCGAN on a dataset and log params, per-step losses, sample "
        "grids and a checkpoint per epoch to one MLflow run. Unset options take the seed's "
        "per-dataset defaults (Fashion-MNIST: 15 epochs, lr_d 1e-4, lr_g 3e-4; CIFAR-10: 30 "
        "epochs, lr_d 2e-4, lr_g 3e-4; Adam betas 0.5/0.999, batch 128). On a CPU start with "
        "--image-size 32 --limit 5000 --epochs 2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or cifar10")
    p.add_argument("--image-size", type=int, default=64, help="32 (CPU-friendly) or 64 (the seed's)")
    p.add_argument("--epochs", type=int, help="number of epochs (dataset default if unset)")
    p.add_argument("--limit", type=int, help="train on a fixed random subset of N images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr-d", type=float, help="discriminator learning rate (dataset default if unset)")
    p.add_argument("--lr-g", type=float, help="generator learning rate (dataset default if unset)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1")
    p.add_argument("--beta2", type=float, default=0.999, help="Adam beta2")
    p.add_argument("--nz", type=int, default=100, help="latent size")
    p.add_argument("--ngf", type=int, default=64, help="generator width")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width")
    p.add_argument("--d-steps", type=int, default=1, help="discriminator updates per generator update")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="real label = 1 - this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0,
                   help="log fcd/kid/coverage/class_kl every K epochs (0: never)")
    p.add_argument("--eval-samples", type=int, default=1000, help="generated images per evaluation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--resume", metavar="CKPT_OR_RUN_ID",
                   help="continue from a checkpoint file or a run's checkpoints/last.pt "
                   "(its config is used; --epochs may extend it)")
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _add_common(p) -> None:
    p.add_argument("--data-dir", help="where datasets live (default: $GANLAB_DATA_DIR or ~/.cache/ganlab/data)")
    p.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or 'ganlab')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_train(args) -> int:
    from ganlab.config import TrainConfig
    from ganlab.evaluation import Evaluator
    from ganlab.pipeline import train_run

    overrides = {k: getattr(args, k) for k in (
        "dataset", "image_size", "epochs", "limit", "batch_size", "lr_d", "lr_g", "beta1", "beta2", "nz",
        "ngf", "ndf", "d_steps", "label_smoothing", "seed", "eval_every", "eval_samples", "device")}
    cfg = TrainConfig(**overrides)
    if not args.resume:
        cfg = cfg.resolved()  # bad values fail here, before data or MLflow are touched
    evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=args.data_dir,
                                      progress=not args.no_progress) if cfg.eval_every else None
    run_id = train_run(cfg, data_dir=args.data_dir, resume=args.resume, experiment=args.experiment,
                       evaluator=evaluator, progress=not args.no_progress)
    print(f"run_id: {run_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ganlab", description="Train, prune and evaluate DCGANs; sweep with Ray Tune; "
                     "everything logged to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_train(sub)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """evaluate, prune and demo from ganlab; sweep and analyze from the packages that run them,
    found through the ``ganlab.commands`` entry points so that ganlab never imports them."""
    from importlib.metadata import entry_points

    from ganlab import cli_more

    plugins = sorted(entry_points(group="ganlab.commands"), key=lambda ep: ep.name)
    return [*cli_more.REGISTER, *(ep.load() for ep in plugins)]


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's download progress bars would mix into our one-line errors and `run_id:` output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GanlabError as exc:
        message = " ".join(str(exc).split())
        print(f"ganlab {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
