"""``ganlab`` command line: train, evaluate and prune here; sweep, analyze and demo from the packages
that run them (``ganlab.commands`` entry points, so the core never imports them).

Bad input exits 2 with one line on stderr (a GanlabError's message); anything else exits 1. The
flags of ``train`` and ``prune`` are generated from TrainConfig and PruneConfig: a field added
there is a flag here, a sweep key and an MLflow param with no second edit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from ganlab.errors import GanlabError, StoreUnreachable, Terminated, behind, interrupt_behind
from ganlab.tracking import schema


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (and exit code 2) instead of a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options every command that reads data or writes MLflow runs takes."""
    p.add_argument("--data-dir", help="where datasets live (default: $GANLAB_DATA_DIR or ~/.cache/ganlab/data)")
    p.add_argument("--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or 'ganlab')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help=f"MLflow run whose {schema.CHECKPOINT} to use")
    src.add_argument("--checkpoint", help="a ganlab checkpoint file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                   help="where to run the model (default: auto)")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    """A generator to use: a compressed file, or a run (a compress run's file, else its checkpoint)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a compressed generator file (ganlab compress)")
    src.add_argument("--run-id", help="an MLflow run (compress, prune or train)")


def _add_train(sub) -> None:
    from ganlab.config import RESUMABLE, TrainConfig, add_config_arguments, flags

    p = sub.add_parser(
        "train", help="train the seed's DCGAN and log it to MLflow",
        description="Train the seed's DCGAN on a dataset and log params, per-step losses, sample grids "
        "and a checkpoint per epoch to one MLflow run. On a CPU start with --image-size 32 --limit 5000 "
        "--epochs 2.")
    add_config_arguments(p, TrainConfig)
    p.add_argument("--resume", metavar="CKPT_OR_RUN_ID",
                   help=f"continue from a checkpoint file or a run's {schema.CHECKPOINT}; the run keeps its "
                   f"config (only {flags(RESUMABLE)} may change)")
    p.add_argument("--no-system-metrics", action="store_true",
                   help="do not log MLflow's system metrics (CPU, memory, GPU every 10 s); logged by default")
    p.add_argument("--config", metavar="FILE.yaml",
                   help="settings from a YAML mapping with the same keys as a sweep's `base` (flags given here win)")
    add_common_arguments(p)
    p.set_defaults(func=_cmd_train)


def _context(args):
    """The run's RunContext, decided here at the edge: the store is resolved once, from MLFLOW_TRACKING_URI."""
    from ganlab.tracking.store import RunContext

    return RunContext.here(experiment=args.experiment, data_dir=args.data_dir, progress=not args.no_progress,
                           system_metrics=not getattr(args, "no_system_metrics", False))


def _epoch_line(outcome) -> None:
    """One line per epoch that stays (a log file, a TTY after its bar is gone): losses, speed, scores."""
    m = outcome.metrics
    parts = [f"epoch {outcome.report.epoch}", f"loss_d {m.get('loss_d', float('nan')):.3f}",
             f"loss_g {m.get('loss_g', float('nan')):.3f}", f"{m.get('images_per_sec', 0):.0f} img/s"]
    if "fcd" in m:
        parts += [f"fcd {m['fcd']:.2f}", f"coverage {m['coverage']:.0f}/10"]
    if outcome.status != "ok":
        parts.append(outcome.status)
    print("  ".join(parts), flush=True)


def _size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _summary(what: str, result) -> None:
    """What the command measured, in one line, then where to look, then the ``run_id:`` line scripts read."""
    from ganlab.tracking.store import tracking_uri, ui_url

    m = result.metrics
    parts = []
    if "sparsity" in m:
        parts.append(f"sparsity {m['sparsity']:.3f}")
    if "fcd" in m:
        fcd = f"FCD {m['fcd']:.2f}"
        if "dense_fcd" in m:
            fcd += f" vs dense {m['dense_fcd']:.2f} (ratio {m['fcd'] / m['dense_fcd']:.3f})"
        parts.append(fcd)
    if "coverage" in m:
        parts.append(f"coverage {m['coverage']:.1f}/10" + (f" (dense {m['dense_coverage']:.1f})"
                                                           if "dense_coverage" in m else ""))
    if "size_sparse_bytes" in m:
        parts.append(f"size {_size(m['size_dense_bytes'])} -> {_size(m['size_sparse_bytes'])}")
    if parts:
        print(f"{what}: " + ", ".join(parts))
    link = ui_url(tracking_uri())
    print(f"ui: {link}" if link else "ui: `ganlab server` serves this store; open the ui: link it prints")
    print(f"run_id: {result.run_id}")


def _storage_full(exc: BaseException | None) -> str | None:
    """What a full disk, an exhausted quota or a file size limit behind ``exc`` (or its cause) says, else None."""
    import errno

    full = behind(exc, lambda e: isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
    if full is None:
        return None
    where = f" writing {full.filename}" if full.filename else ""
    return (f"{os.strerror(full.errno).lower()}{where}; free some space (or raise the limit) and run it again "
            "(nothing half-written was kept)")


def _config_file(path: str) -> dict:
    """A train config file's settings; ConfigError (one line) when it is missing, not YAML or has an unknown key."""
    from pathlib import Path

    from ganlab.config import TrainConfig, config_from_dict, read_yaml

    values = read_yaml(Path(path), "--config") or {}
    if not isinstance(values, dict):
        raise GanlabError(f"--config {path} must be a mapping of settings to values")
    config_from_dict(TrainConfig, values, where=f"--config {path}")  # unknown keys named here
    return values


def _cmd_train(args) -> int:
    from ganlab.config import TrainConfig, given_values
    from ganlab.runs.train import train_run

    settings = {**(_config_file(args.config) if args.config else {}), **given_values(args, TrainConfig)}
    result = train_run(settings, _context(args), resume=args.resume, on_epoch=_epoch_line)
    _summary("trained", result)
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a generator: fcd, kid, coverage, class_kl",
                       description="Generate --samples images and score them against held-out real images in "
                       "the feature space of a classifier trained once per dataset (cached): Fréchet distance "
                       f"(fcd), KID, class coverage and class KL. Logs one MLflow run ({schema.KIND}=evaluate).")
    _add_source(p)
    p.add_argument("--samples", type=int, default=1000, help="generated images to score, at least 129: FCD's "
                   "covariance of 128 classifier features needs more samples than features; at most 200,000 "
                   "(default: 1000)")
    p.add_argument("--inception", action="store_true",
                   help="also Inception FID (needs torch-fidelity and its weights; fails clearly without)")
    add_common_arguments(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from ganlab.runs.evaluate import evaluate_run

    result = evaluate_run(args.run_id or args.checkpoint, _context(args), samples=args.samples, device=args.device,
                          inception=args.inception)
    _summary("evaluated", result)
    return 0


def _add_prune(sub) -> None:
    from ganlab.config import add_config_arguments
    from ganlab.pruning.config import PruneConfig

    p = sub.add_parser("prune", help="prune a trained GAN, fine-tune, and measure what it cost",
                       description="Sensitivity pruning zeroes |w| < s*sigma in each conv layer; percentage "
                       "pruning zeroes the q% smallest |w| in each layer; channel pruning removes the fraction "
                       "ratio of each hidden layer's channels. Then optional fine-tuning with the "
                       f"masks held, and one MLflow run ({schema.KIND}=prune) with the sparsity tables, "
                       "UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage, "
                       "sizes, a before/after grid and the pruned checkpoint.")
    _add_source(p)
    add_config_arguments(p, PruneConfig)
    add_common_arguments(p)
    p.set_defaults(func=_cmd_prune)


def _cmd_prune(args) -> int:
    from ganlab.config import given_values
    from ganlab.pruning.config import PruneConfig
    from ganlab.runs.prune import PruneInputs, prune_run

    pcfg = PruneConfig(**given_values(args, PruneConfig))
    result = prune_run(args.run_id or args.checkpoint, pcfg, _context(args), PruneInputs(device=args.device))
    _summary("pruned", result)
    return 0


def _add_compress(sub) -> None:
    p = sub.add_parser("compress", help="one Deep-Compression file of a (pruned) generator: share weights + Huffman",
                       description="Store a run's generator as Deep Compression does: the non-zero weights' "
                       "positions as relative indices, their values shared per layer (k-means with 2^bits "
                       "centroids, or linear levels), both streams Huffman-coded, in one file with a small "
                       f"header. Logs one MLflow run ({schema.KIND}=compress): file_bytes, dense_bytes, "
                       "compression_ratio, UQI/SSIM/MS-SSIM of the decompressed generator against the "
                       "uncompressed one, fcd/kid/coverage, and the file.")
    _add_source(p)
    p.add_argument("--bits", type=int, default=5, help="bits per shared weight, 1-16 (default: 5)")
    p.add_argument("--scheme", default="kmeans", metavar="{kmeans,linear}",
                   help="k-means centroids (Deep Compression) or linear levels of one scale per layer "
                   "(default: kmeans)")
    p.add_argument("--samples", type=int, default=1000, help="images per quality comparison (default: 1000)")
    p.add_argument("--out", help="also write the file here (default: only the MLflow artifact)")
    add_common_arguments(p)
    p.set_defaults(func=_cmd_compress)


def _cmd_compress(args) -> int:
    from ganlab.runs.compress import CompressSettings, compress_run

    settings = CompressSettings(bits=args.bits, scheme=args.scheme, samples=args.samples)
    result = compress_run(args.run_id or args.checkpoint, settings, _context(args), out=args.out, device=args.device)
    print(f"compression_ratio: {result.metrics['compression_ratio']:.1f}x ({int(result.metrics['file_bytes'])} bytes)")
    _summary("compressed", result)
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="images from a compressed file or a run's generator",
                       description="Generate --n images on the evaluation noise (or --seed's) and write them "
                       "as one PNG grid. The model is a compressed file (ganlab compress), or a run: a "
                       "compress run's file, else its checkpoint.")
    _add_model_source(p)
    p.add_argument("--n", type=int, default=64, help="how many images (default: 64)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--seed", type=int, help="noise seed, 0 to 2^32-1 (default: the run's evaluation noise)")
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    from ganlab.runs.compress import generate_grid

    print(f"images: {generate_grid(n=args.n, out=args.out, model=args.model, run_id=args.run_id, seed=args.seed)}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="the generator as ONNX",
                       description="Write a run's (or a compressed file's) generator as ONNX: input 'noise' "
                       "(N, nz, 1, 1) float32, output 'images' (N, nc, H, W) in [-1, 1], batch size free.")
    _add_model_source(p)
    p.add_argument("--format", default="onnx", metavar="{onnx}", help="the format (default: onnx)")
    p.add_argument("--out", default="generator.onnx", help="where to write it (default: generator.onnx)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from ganlab.runs.compress import export_generator

    print(f"exported: {export_generator(run_id=args.run_id, model=args.model, fmt=args.format, out=args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import entry_points

    parser = Parser(prog="ganlab", description="Train, prune and evaluate DCGANs; sweep with Ray Tune; everything "
                    "logged to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db in this directory).")
    parser.add_argument("--version", action="version", version=f"ganlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for register in (_add_train, _add_evaluate, _add_prune, _add_compress, _add_generate, _add_export):
        register(sub)
    for command in list(sub.choices.values()):  # every core command computes with torch
        command.add_argument("--threads", type=int, default=None,
                             help="torch intra-op threads: the cores this job may use (default: the cores this "
                             "process may run on that are idle when it starts; more than it may use are cut to that)")
    for plugin in sorted(entry_points(group="ganlab.commands"), key=lambda ep: ep.name):
        plugin.load()(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ganlab")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 0 done, 2 bad input (one line), 130 Ctrl-C, 143 SIGTERM, 1 anything else
    (one line when the tracking store became unreachable)."""
    # MLflow announces a new store's tables on stderr, where only our one-line errors belong
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.system_metrics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's download progress bars would mix into our one-line errors and `run_id:` output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: runs end KILLED, temp dirs go, servers stop
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        if "threads" in vars(args):
            from ganlab.device import set_threads

            set_threads(args.threads)
        data_dir = getattr(args, "data_dir", None)
        if data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():  # before any store or Ray
            raise GanlabError(f"--data-dir {data_dir} is a file; give the folder datasets live in")
        if getattr(args, "store", True) and not getattr(args, "model", None):
            from ganlab.tracking.store import check_store, tracking_uri

            check_store(tracking_uri())  # a server or database that does not answer: one line now, not retries
        return int(args.func(args) or 0)
    except GanlabError as exc:
        message = " ".join(str(exc).split())
        print(f"ganlab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except StoreUnreachable as exc:  # not bad input, but the user needs one line, not a traceback
        print(f"ganlab {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except BaseException as exc:
        interrupt = interrupt_behind(exc)  # also one that a failing cleanup hid
        full = _storage_full(exc)
        if full is not None and interrupt is None:  # the run ended FAILED and no partial file is left: one line,
            print(f"ganlab {args.command}: error: {full}", file=sys.stderr)  # and 1: the input was fine
            return 1
        if interrupt is None:
            raise
        what = "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted (Ctrl-C)"
        hint = getattr(interrupt, "hint", "") or "its MLflow run, if it had started, is marked KILLED"
        print(f"ganlab {args.command}: {what}; {hint}", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
