"""``ganlab train`` as a function: train (or resume) a GAN and log it as one MLflow run.

The CLI calls ``train_run`` and so do Ray Tune trials (with ``parent_run_id`` set and an
``on_epoch`` callback), so there is one code path from a config to a logged run.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganlab.config import TrainConfig, resumed_config
from ganlab.device import pick_device
from ganlab.errors import ConfigError
from ganlab.gan import health
from ganlab.gan.checkpoint import load_checkpoint
from ganlab.gan.data import ImageSet, TensorBatcher, load_images, to_model_range
from ganlab.gan.loop import (
    STEP_METRICS,
    EpochReport,
    StopReason,
    create_state,
    for_device,
    restore_state,
    train_gan,
)
from ganlab.metrics.distribution import Evaluator
from ganlab.pruning.recovery import SparseMasks
from ganlab.runs import tracking_hooks as hooks_mod
from ganlab.runs.source import resolve_checkpoint
from ganlab.tracking import schema
from ganlab.tracking.provenance import system_metrics
from ganlab.tracking.store import RunContext, RunResult, ganlab_run, mlflow_client, reopened_run


def logged_progress(run_id: str, uri: str | None = None) -> tuple[int, int]:
    """(last epoch, last step) run ``run_id`` has logged: epochs log images_per_sec, steps loss_d."""
    client = mlflow_client(uri)
    epochs = client.get_metric_history(run_id, "images_per_sec")
    steps = client.get_metric_history(run_id, STEP_METRICS[0])
    return max((m.step for m in epochs), default=0), max((m.step for m in steps), default=0)


@dataclass
class EpochOutcome:
    """What a train run's ``on_epoch`` callback sees after each epoch has been logged."""

    report: EpochReport
    metrics: dict[str, float]  # train means + any evaluation metrics of this epoch
    status: str  # health.OK | health.COLLAPSED | health.DIVERGED
    checkpoint: Path  # local file of this epoch's checkpoint
    run_id: str


@dataclass(frozen=True)
class TrainInputs:
    """What a caller that runs many trainings (a sweep) hands each one instead of letting it load its own: the
    images (default: the config's dataset and --limit subset), the scoring classifier (default: the dataset's,
    when --eval-every asks for scores) and the health rules (default: HealthRules())."""

    train_set: ImageSet | None = None
    evaluator: Evaluator | None = None
    health_rules: health.HealthRules | None = None


def train_run(config: TrainConfig | dict[str, Any], ctx: RunContext | None = None, *, resume: str | None = None,
              run_id: str | None = None, inputs: TrainInputs = TrainInputs(),
              on_epoch: Callable[[EpochOutcome], bool | None] | None = None) -> RunResult:
    """Train (or resume) a GAN and log it as one MLflow run where ``ctx`` says (default: ``RunContext.here()``).

    ``config`` is a TrainConfig or the settings a user gave (unset ones take their defaults); with
    ``resume`` (a checkpoint file or run id) the checkpoint's config is used and ``config`` may only
    change what ``config.RESUMABLE`` lists. Everything that can be bad input (config, data,
    checkpoint) is checked before the run is created. ``run_id`` continues an existing run (a
    resumed Tune trial) instead of a new one. ``on_epoch`` may return True to stop early.
    """
    ctx = ctx or RunContext.here()
    with tempfile.TemporaryDirectory(prefix="ganlab-train-") as tmp:
        workdir = Path(tmp)
        cfg, ckpt = _config(config, resume, run_id, workdir, ctx.uri)
        train_set = inputs.train_set or load_images(cfg.dataset, cfg.image_size, limit=cfg.limit,
                                                    data_dir=ctx.data_dir, subset_seed=cfg.seed)
        evaluator = inputs.evaluator
        if evaluator is None and cfg.eval_every:  # scored by the classifier of the run's own data and size
            evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=ctx.data_dir,
                                              progress=ctx.progress)
        device = pick_device(cfg.device)
        cfg = for_device(cfg, device)  # amp / channels_last decided, and logged as decided
        state = create_state(cfg, device) if ckpt is None else restore_state({**ckpt, "config": cfg}, device)
        batcher = TensorBatcher(train_set.images, cfg.batch_size, device, cfg.seed)
        logged_epoch, logged_step = logged_progress(run_id, ctx.uri) if run_id is not None else (0, 0)
        metrics: dict[str, float] = {}
        with _opened_run(cfg, ctx, resume, run_id) as logger:
            if run_id is not None:  # its tags say where it runs now (a retried trial may be on another node)
                logger.set_tags({**(ctx.tags or {}), schema.RESUMED_EPOCH: state.epoch})
            else:  # the runs table's Dataset column: what this run trained on
                logger.log_dataset(**train_set.describe(), context="train")
            checkpointing = hooks_mod.Checkpointing(logger, workdir, cfg.rewind_epoch)
            hooks = [*sparse_hooks(state, cfg, len(batcher)),
                     hooks_mod.StepLogging(logger, skip_until=logged_step),
                     *([hooks_mod.Evaluation(evaluator, cfg.eval_every, cfg.eval_samples, cfg.seed, cfg.epochs,
                                             cfg.patience)] if evaluator is not None and cfg.eval_every else []),
                     hooks_mod.EpochLogging(logger, to_model_range(train_set.images[:64]), skip_until=logged_epoch),
                     checkpointing, hooks_mod.HealthVerdict(logger, inputs.health_rules or health.HealthRules()),
                     *([_Callback(on_epoch, checkpointing, logger.run_id)] if on_epoch else []),
                     hooks_mod.PlateauTag(logger)]
            with system_metrics(logger.run_id, ctx.uri, ctx.system_metrics):
                for report in train_gan(state, batcher, cfg.epochs, hooks=hooks, progress=ctx.progress):
                    metrics = dict(report.metrics)
            return RunResult(logger.run_id, metrics)


def _config(config: TrainConfig | dict[str, Any], resume: str | None, run_id: str | None, workdir: Path,
            uri: str) -> tuple[TrainConfig, dict | None]:
    """The run's config and, resuming, its checkpoint (the checkpoint's config with the RESUMABLE changes)."""
    given = dataclasses.asdict(config) if isinstance(config, TrainConfig) else dict(config)
    ckpt = load_checkpoint(resolve_checkpoint(resume, workdir, uri)) if resume else None
    if ckpt is None:
        return TrainConfig(**given).resolved(), None
    cfg = resumed_config(ckpt["config"], given)
    if run_id is None and cfg.epochs <= ckpt["epoch"]:
        raise ConfigError(f"epochs={cfg.epochs}: the checkpoint has {ckpt['epoch']} epoch(s) done; "
                          f"give --epochs above {ckpt['epoch']} to train more")
    return cfg, ckpt


def _opened_run(cfg: TrainConfig, ctx: RunContext, resume: str | None, run_id: str | None):
    """A new train run, or (a trial restored from a checkpoint older than what its run holds) the run reopened."""
    if run_id is not None:
        return reopened_run(run_id, ctx.uri)
    tags = {schema.STATUS: health.OK, "dataset": cfg.dataset, **({schema.RESUMED_FROM: resume} if resume else {})}
    return ganlab_run("train", ctx, params=cfg.to_params(), tags=tags, run_name=f"train-{cfg.dataset}-{cfg.image_size}")


class _Callback(hooks_mod.Hook):
    """The caller's ``on_epoch`` (a Tune report) after the epoch is logged and checkpointed; True stops."""

    name = "on_epoch"

    def __init__(self, on_epoch: Callable[[EpochOutcome], bool | None], checkpointing, run_id: str):
        self.on_epoch, self.checkpointing, self.run_id = on_epoch, checkpointing, run_id

    def after_epoch(self, state, report: EpochReport) -> None:
        if self.on_epoch(EpochOutcome(report, dict(report.metrics), report.status, self.checkpointing.path,
                                      self.run_id)):
            report.stop = report.stop or StopReason(StopReason.CALLER, "stopped by the caller")


def sparse_hooks(state, cfg: TrainConfig, steps_per_epoch: int, epochs: int | None = None) -> list:
    """Sparse-to-sparse training (``--sparsity``): the dynamic-mask hook over G (and D with sparse_d); its masks
    stop changing after 75% of the ``epochs`` (default: the config's)."""
    if not cfg.sparsity:
        return []
    nets = {"generator": state.generator, **({"discriminator": state.discriminator} if cfg.sparse_d else {})}
    return [SparseMasks(nets, cfg.sparsity, cfg.mask_update, cfg.update_every,
                        total_steps=int(0.75 * (epochs or cfg.epochs) * steps_per_epoch), seed=cfg.seed,
                        density=cfg.density)]
