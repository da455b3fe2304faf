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

from ganlab import health
from ganlab.checkpoint import load_checkpoint, make_checkpoint, resolve_checkpoint, rewind_artifact, save_atomic
from ganlab.config import TrainConfig, resumed_config
from ganlab.data import ImageSet, TensorBatcher, load_images, to_model_range
from ganlab.distribution_quality import Evaluator
from ganlab.errors import ConfigError
from ganlab.images import generated_vs_real
from ganlab.models import generate
from ganlab.tracking import RunResult, ganlab_run, mlflow_client, reopened_run
from ganlab.train import STEP_METRICS, EpochReport, create_state, for_device, pick_device, restore_state, train_gan


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


def train_run(config: TrainConfig | dict[str, Any], *, resume: str | None = None, data_dir: str | None = None,
              experiment: str | None = None, uri: str | None = None, parent_run_id: str | None = None,
              run_id: str | None = None, train_set: ImageSet | None = None, evaluator: Evaluator | None = None,
              health_rules: health.HealthRules | None = None,
              on_epoch: Callable[[EpochOutcome], bool | None] | None = None,
              progress: bool = True, tags: dict | None = None) -> RunResult:
    """Train (or resume) a GAN and log it as one MLflow run in store ``uri``.

    ``config`` is a TrainConfig or the settings a user gave (unset ones take their defaults); with
    ``resume`` (a checkpoint file or run id) the checkpoint's config is used and ``config`` may only
    change what ``config.RESUMABLE`` lists. Everything that can be bad input (config, data,
    checkpoint) is checked before the run is created. ``run_id`` continues an existing run (a
    resumed Tune trial) instead of a new one. ``on_epoch`` may return True to stop early.
    """
    given = dataclasses.asdict(config) if isinstance(config, TrainConfig) else dict(config)
    with tempfile.TemporaryDirectory(prefix="ganlab-train-") as tmp:
        workdir = Path(tmp)
        ckpt = load_checkpoint(resolve_checkpoint(resume, workdir, uri)) if resume else None
        if ckpt is None:
            cfg = TrainConfig(**given).resolved()
        else:
            cfg = resumed_config(ckpt["config"], given)
            if run_id is None and cfg.epochs <= ckpt["epoch"]:
                raise ConfigError(f"epochs={cfg.epochs}: the checkpoint has {ckpt['epoch']} epoch(s) done; "
                                  f"give --epochs above {ckpt['epoch']} to train more")
        if train_set is None:
            train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=data_dir,
                                    subset_seed=cfg.seed)
        if evaluator is None and cfg.eval_every:  # scored by the classifier of the run's own data and size
            evaluator = Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=data_dir, progress=progress)
        device = pick_device(cfg.device)
        cfg = for_device(cfg, device)  # amp / channels_last decided, and logged as decided
        state = create_state(cfg, device) if ckpt is None else restore_state({**ckpt, "config": cfg}, device)
        batcher = TensorBatcher(train_set.images, cfg.batch_size, device, cfg.seed)
        real_grid = to_model_range(train_set.images[:64])
        rules = health_rules or health.HealthRules()

        run_tags = {"ganlab.status": health.OK, "dataset": cfg.dataset, **(tags or {})}
        if resume:
            run_tags["ganlab.resumed_from"] = resume
        logged_epoch = logged_step = 0
        if run_id is None:
            run = ganlab_run("train", experiment=experiment, uri=uri, params=cfg.to_params(), tags=run_tags,
                             parent_run_id=parent_run_id, run_name=f"train-{cfg.dataset}-{cfg.image_size}")
        else:  # a trial restored from a checkpoint older than what its run already holds: log nothing twice
            logged_epoch, logged_step = logged_progress(run_id, uri)
            run = reopened_run(run_id, uri)
        metrics: dict[str, float] = {}
        plateau, plateaued = health.Plateau(cfg.patience), False
        with run as logger:
            if run_id is not None:  # its tags say where it runs now (a retried trial may be on another node)
                logger.set_tags({**(tags or {}), "ganlab.resumed_epoch": state.epoch})
            else:  # the runs table's Dataset column: what this run trained on
                logger.log_dataset(**train_set.describe(), context="train")
            if cfg.rewind_epoch == 0 and state.epoch == 0:  # lottery-ticket rewinding to the initial weights
                _keep_for_rewinding(state, logger, workdir)
            for report in train_gan(state, batcher, cfg.epochs, progress=progress):
                metrics = dict(report.metrics)
                logger.log_steps([(step, row) for step, row in report.steps if step > logged_step])
                if evaluator is not None and cfg.eval_every and not report.nonfinite and (
                        report.epoch % cfg.eval_every == 0 or report.epoch == cfg.epochs):
                    metrics.update(evaluator.evaluate_generator(state.generator, cfg.eval_samples, seed=cfg.seed))
                    plateaued = plateau.update(metrics["fcd"])
                if report.epoch > logged_epoch:
                    logger.log_metrics({k: v for k, v in metrics.items() if k not in STEP_METRICS},
                                       step=report.epoch)
                    samples = generate(state.generator, state.fixed_noise)
                    logger.log_image(generated_vs_real(samples, real_grid, report.epoch),
                                     f"samples/epoch_{report.epoch:03d}.png")
                ckpt_path = save_atomic(make_checkpoint(state), workdir / "last.pt")
                logger.log_file(ckpt_path, "checkpoints")
                if cfg.rewind_epoch == report.epoch:
                    _keep_for_rewinding(state, logger, workdir)
                status = health.judge(report, metrics, rules)
                if status != health.OK:
                    logger.set_tags({"ganlab.status": status})
                stop = on_epoch(EpochOutcome(report, metrics, status, ckpt_path, logger.run_id)) if on_epoch else None
                if status != health.OK or stop:
                    break
                if plateaued and report.epoch < cfg.epochs:
                    logger.set_tags({"ganlab.stopped_early": f"fcd plateau: no improvement on {plateau.best:.4g} "
                                     f"in {plateau.stale} evaluation(s), stopped at epoch {report.epoch}"})
                    break
            return RunResult(logger.run_id, metrics)


def _keep_for_rewinding(state, logger, workdir: Path) -> None:
    """The weights as they are now, as checkpoints/rewind_epoch_E.pt (what ``prune --rewind-epoch E`` reads)."""
    name = Path(rewind_artifact(state.epoch)).name
    logger.log_file(save_atomic(make_checkpoint(state), workdir / name), "checkpoints")
