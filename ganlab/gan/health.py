"""Is a training run healthy, mode-collapsed or diverged? One judgement for CLI runs and sweeps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ganlab.config import check_range
from ganlab.gan.loop import STEP_METRICS, EpochReport

OK, COLLAPSED, DIVERGED = "ok", "collapsed", "diverged"


@dataclass
class HealthRules:
    """Thresholds for ending a run early; the sweep spec's ``stopping`` section sets them."""

    grace_epochs: int = 1  # no collapse/D-loss verdict before this many epochs
    min_coverage: float = 0.0  # classes hit by the samples; below this after grace: collapsed
    min_loss_d: float = 1e-3  # epoch-mean D loss below this after grace: D has won, diverged
    # an epoch-mean loss this high means D's logits have blown up (its outputs pinned at 0 or 1):
    # a network has diverged, whatever the grace period
    max_loss: float = 50.0

    def validate(self, where: str = "stopping") -> HealthRules:
        """Raise ConfigError naming a bad threshold (NaN included)."""
        check_range(f"{where}.grace_epochs", self.grace_epochs, low=0, integer=True)
        check_range(f"{where}.min_coverage", self.min_coverage, low=0, high=10)
        check_range(f"{where}.min_loss_d", self.min_loss_d, low=0)
        check_range(f"{where}.max_loss", self.max_loss, low=0, ends="(]")
        return self


def judge(report: EpochReport, metrics: dict[str, float], rules: HealthRules) -> str:
    """OK, COLLAPSED or DIVERGED for the epoch in ``report`` with evaluation ``metrics``."""
    if report.nonfinite or any(not math.isfinite(metrics[k]) for k in STEP_METRICS if k in metrics):
        return DIVERGED
    if max(metrics.get("loss_d", 0.0), metrics.get("loss_g", 0.0)) >= rules.max_loss:
        return DIVERGED
    if report.epoch < rules.grace_epochs:
        return OK
    if metrics.get("loss_d", 1.0) < rules.min_loss_d:
        return DIVERGED
    coverage = metrics.get("coverage")
    if coverage is not None and coverage < rules.min_coverage:
        return COLLAPSED
    return OK


@dataclass
class Plateau:
    """"Train until FCD stops improving": stops once ``patience`` evaluations in a row did not improve on
    the best fcd so far (0: never stops)."""

    patience: int
    best: float = math.inf
    stale: int = 0

    def update(self, fcd: float) -> bool:
        """Record one evaluation; True when training should stop."""
        if fcd < self.best:
            self.best, self.stale = fcd, 0
        else:  # equal, worse or NaN
            self.stale += 1
        return bool(self.patience) and self.stale >= self.patience
