"""The training hooks that talk to MLflow (and the scoring classifier): what a logged run adds to the loop.

``train_run`` assembles them in this order — steps, evaluation + plateau, epoch metrics and samples,
checkpoint (+ rewind weights), health verdict, then the caller's own hooks (a Tune report) — and fine-tuning
after pruning reuses the first ones. Each keeps its state in the checkpoint (see ganlab.pruning.recovery).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab.gan import health
from ganlab.gan.checkpoint import make_checkpoint, save_atomic
from ganlab.gan.images import generated_vs_real
from ganlab.gan.loop import STEP_METRICS, EpochReport, Hook, StopReason, TrainingState
from ganlab.gan.models import generate
from ganlab.tracking import schema


class StepLogging(Hook):
    """Per-step losses as MLflow metrics (x axis: the generator step); steps at or below ``skip_until`` (logged
    by an earlier attempt of a resumed run) are not logged twice. ``prefix`` the epoch means too (fine-tuning)."""

    name = "step_logging"

    def __init__(self, logger, skip_until: int = 0, epoch_prefix: str | None = None):
        self.logger, self.skip_until, self.epoch_prefix = logger, skip_until, epoch_prefix

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        self.logger.log_steps([(step, row) for step, row in report.steps if step > self.skip_until])
        if self.epoch_prefix is not None:
            self.logger.log_metrics({self.epoch_prefix + k: v for k, v in report.metrics.items()}, step=report.epoch)


@dataclass(eq=False)
class Evaluation(Hook):
    """fcd/kid/coverage/class_kl every ``every`` epochs (and at the last, ``last``), into the report's metrics;
    with ``patience`` it stops training once fcd has not improved for that many evaluations in a row. The
    plateau's best and count are its state: a resumed run continues them."""

    name = "evaluation"

    evaluator: Any
    every: int
    samples: int
    seed: int
    last: int  # the last epoch: always evaluated
    patience: int = 0
    prefix: str = ""  # fine-tuning: finetune_fcd, ... logged by the hook itself (with ``logger``)
    logger: Any = None
    plateau: health.Plateau = field(init=False)
    latest: dict = field(default_factory=dict, init=False)  # the last evaluation's scores

    def __post_init__(self) -> None:
        self.plateau = health.Plateau(self.patience)

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        if report.nonfinite or not self.every or not (report.epoch % self.every == 0 or report.epoch == self.last):
            return
        scores = self.evaluator.evaluate_generator(state.generator, self.samples, seed=self.seed)
        self.latest = scores
        if self.logger is not None:  # fine-tuning: its own names, so the curve sits beside the pruned scores
            from ganlab.pruning.magnitude import total_sparsity

            # the sparsity this pass was scored at (AGP prunes while it tunes: not yet the final one)
            scored = {**scores, "sparsity": total_sparsity(state.generator)}
            self.logger.log_metrics({self.prefix + k: v for k, v in scored.items()}, step=report.epoch)
        else:
            report.metrics.update(scores)
        if self.plateau.update(scores["fcd"]) and report.epoch < self.last:
            report.stop = StopReason(StopReason.PLATEAU, f"fcd plateau: no improvement on {self.plateau.best:.4g} "
                                     f"in {self.plateau.stale} evaluation(s), stopped at epoch {report.epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.plateau.best, "stale": self.plateau.stale}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.plateau.best = float(saved.get("best", math.inf))
        self.plateau.stale = int(saved.get("stale", 0))


class EpochLogging(Hook):
    """The epoch's metrics (not the per-step ones) and a sample grid beside real images, once per epoch."""

    name = "epoch_logging"

    def __init__(self, logger, real_grid, skip_until: int = 0):
        self.logger, self.real_grid, self.skip_until = logger, real_grid, skip_until

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        if report.epoch <= self.skip_until:
            return
        self.logger.log_metrics({k: v for k, v in report.metrics.items() if k not in STEP_METRICS}, step=report.epoch)
        samples = generate(state.generator, state.fixed_noise)
        self.logger.log_image(generated_vs_real(samples, self.real_grid, report.epoch),
                              schema.epoch_samples(report.epoch))


class Checkpointing(Hook):
    """checkpoints/last.pt after every epoch (with every hook's state), and the weights of epoch
    ``rewind_epoch`` as checkpoints/rewind_epoch_E.pt (0: the initial weights) for lottery-ticket rewinding."""

    name = "checkpointing"

    def __init__(self, logger, workdir: Path, rewind_epoch: int | None = None):
        self.logger, self.workdir, self.rewind_epoch = logger, workdir, rewind_epoch
        self.path: Path | None = None

    def before_train(self, state: TrainingState) -> None:
        if self.rewind_epoch == 0 and state.epoch == 0:
            self._keep_for_rewinding(state)

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        self.path = save_atomic(make_checkpoint(state), self.workdir / "last.pt")
        self.logger.log_file(self.path, schema.CHECKPOINTS)
        if self.rewind_epoch == report.epoch:
            self._keep_for_rewinding(state)

    def _keep_for_rewinding(self, state: TrainingState) -> None:
        name = Path(schema.rewind_checkpoint(state.epoch)).name
        self.logger.log_file(save_atomic(make_checkpoint(state), self.workdir / name), schema.CHECKPOINTS)


class HealthVerdict(Hook):
    """Collapsed or diverged (ganlab.gan.health): tags the run and ends training after this epoch."""

    name = "health"

    def __init__(self, logger, rules: health.HealthRules):
        self.logger, self.rules = logger, rules

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        report.status = health.judge(report, report.metrics, self.rules)
        if report.status != health.OK:
            self.logger.set_status(report.status)
            report.stop = report.stop or StopReason(report.status, report.status)


class PlateauTag(Hook):
    """Says on the run why it stopped early (an fcd plateau), once the other hooks have had their say."""

    name = "plateau_tag"

    def __init__(self, logger):
        self.logger = logger

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        if report.stop is not None and report.stop.kind == StopReason.PLATEAU and report.status == health.OK:
            self.logger.set_stopped_early(str(report.stop))
