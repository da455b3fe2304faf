"""Commands as functions: train, evaluate and prune a GAN, logging each to one MLflow run.

The CLI calls these, and so do Ray Tune trials (with ``parent_run_id`` set and an ``on_epoch``
callback), so there is one code path from a config to a logged run.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from ganlab import health
from ganlab.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.config import TrainConfig
from ganlab.data import ImageSet, TensorBatcher, load_images, to_model_range
from ganlab.images import generated_vs_real
from ganlab.models import generate
from ganlab.tracking import download_artifact, ganlab_run, reopened_run
from ganlab.train import EpochReport, TrainingState, create_state, pick_device, restore_state, train_gan

CHECKPOINT_ARTIFACT = "checkpoints/last.pt"


@dataclass
class EpochOutcome:
    """What a train run's ``on_epoch`` callback sees after each epoch has been logged."""

    report: EpochReport
    metrics: dict[str, float]  # train means + any evaluation metrics of this epoch
    status: str  # health.OK | health.COLLAPSED | health.DIVERGED
    checkpoint: Path  # local file of this epoch's checkpoint
    run_id: str


def resolve_checkpoint(source: str, workdir: Path) -> Path:
    """A local checkpoint path from a file path or an MLflow run id (its checkpoints/last.pt)."""
    path = Path(source)
    if path.exists():
        return path
    if "/" in source or source.endswith(".pt"):
        from ganlab.errors import CheckpointError

        raise CheckpointError(f"checkpoint {source} does not exist")
    return download_artifact(source, CHECKPOINT_ARTIFACT, workdir)


def train_run(cfg: TrainConfig, *, data_dir: str | None = None, resume: str | None = None,
              experiment: str | None = None, parent_run_id: str | None = None,
              run_id: str | None = None, train_set: ImageSet | None = None, evaluator=None,
              health_rules: health.HealthRules | None = None,
              on_epoch: Callable[[EpochOutcome], bool | None] | None = None,
              progress: bool = True, tags: dict | None = None) -> str:
    """Train (or resume) a GAN and log it as one MLflow run; returns the run id.

    Everything that can be bad input (config, data, checkpoint) is checked before the run is
    created. ``run_id`` continues an existing run (a resumed Tune trial) instead of a new one.
    ``on_epoch`` may return True to stop early.
    """
    with tempfile.TemporaryDirectory(prefix="ganlab-train-") as tmp:
        workdir = Path(tmp)
        state: TrainingState
        if resume:
            ckpt = load_checkpoint(resolve_checkpoint(resume, workdir))
            epochs = cfg.epochs if cfg.epochs is not None else ckpt["config"].epochs
            ckpt["config"] = dataclasses.replace(ckpt["config"], epochs=epochs, device=cfg.device,
                                                 eval_every=cfg.eval_every)
            cfg = ckpt["config"]
        cfg = cfg.resolved()
        if train_set is None:
            train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=data_dir,
                                    subset_seed=cfg.seed)
        device = pick_device(cfg.device)
        state = restore_state(ckpt, device) if resume else create_state(cfg, device)
        batcher = TensorBatcher(train_set.images, cfg.batch_size, device, cfg.seed)
        real_grid = to_model_range(train_set.images[:64])
        rules = health_rules or health.HealthRules()

        run_tags = {"ganlab.status": health.OK, "dataset": cfg.dataset, **(tags or {})}
        if resume:
            run_tags["ganlab.resumed_from"] = resume
        with _train_logger(run_id, cfg, experiment, parent_run_id, run_tags) as logger:
            for report in train_gan(state, batcher, cfg.epochs, progress=progress):
                metrics = dict(report.metrics)
                logger.log_steps(report.steps)
                if evaluator is not None and cfg.eval_every and not report.nonfinite and (
                        report.epoch % cfg.eval_every == 0 or report.epoch == cfg.epochs):
                    metrics.update(evaluator.evaluate_generator(state.generator, cfg.eval_samples, seed=cfg.seed))
                logger.log_metrics({k: v for k, v in metrics.items() if k not in health.STEP_KEYS},
                                   step=report.epoch)
                samples = generate(state.generator, state.fixed_noise)
                logger.log_image(generated_vs_real(samples, real_grid, report.epoch),
                                 f"samples/epoch_{report.epoch:03d}.png")
                ckpt_path = save_atomic(make_checkpoint(state), workdir / "last.pt")
                logger.log_file(ckpt_path, "checkpoints")
                status = health.judge(report, metrics, rules)
                if status != health.OK:
                    logger.set_tags({"ganlab.status": status})
                stop = on_epoch(EpochOutcome(report, metrics, status, ckpt_path, logger.run_id)) if on_epoch else None
                if status != health.OK or stop:
                    break
            return logger.run_id


def _train_logger(run_id, cfg, experiment, parent_run_id, tags):
    """A new train run, or (Tune resume) the existing ``run_id`` reopened for more epochs."""
    if run_id is None:
        return ganlab_run("train", experiment=experiment, params=cfg.to_params(), tags=tags,
                          parent_run_id=parent_run_id, run_name=f"train-{cfg.dataset}-{cfg.image_size}")
    return reopened_run(run_id)
