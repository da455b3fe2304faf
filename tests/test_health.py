"""The collapse / divergence verdict that ends sweep trials early."""

import math

from ganlab.gan.health import COLLAPSED, DIVERGED, OK, HealthRules, judge
from ganlab.gan.loop import EpochReport

OK_METRICS = {"loss_d": 1.2, "loss_g": 1.0, "d_x": 0.6, "d_g_z": 0.4, "coverage": 9.0}


RULES = HealthRules(grace_epochs=2, min_coverage=5)


def verdict(epoch=3, nonfinite=False, rules=RULES, **changes):
    return judge(EpochReport(epoch, {}, nonfinite=nonfinite), {**OK_METRICS, **changes}, rules)


def test_healthy():
    assert verdict() == OK


def test_collapse_is_low_coverage_after_grace_only():
    assert verdict(coverage=2.0) == COLLAPSED
    assert verdict(epoch=1, coverage=2.0) == OK  # still in its grace period
    assert verdict(coverage=5.0) == OK  # at the threshold is fine


def test_divergence():
    assert verdict(nonfinite=True) == DIVERGED
    assert verdict(epoch=1, loss_g=math.nan) == DIVERGED  # non-finite: no grace
    assert verdict(epoch=1, loss_d=100.0) == DIVERGED  # pinned at BCE's clamp: no grace
    assert verdict(loss_d=1e-4) == DIVERGED  # D has won
    assert verdict(epoch=1, loss_d=1e-4) == OK  # ... but only judged after grace
