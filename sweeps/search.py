"""The hyperparameter search of a training sweep: Optuna's TPE over the spec's distributions.

A sweep resumed from remote storage (``s3://``) can find Tune's trial list newer than the searcher's
saved state: Tune uploads its snapshot files asynchronously, and a driver killed mid-upload leaves a mix.
Tune then reports results of trials the restored searcher never suggested, and OptunaSearch fails on
them (KeyError); ``RestorableOptunaSearch`` ignores them instead. Those trials still run and log to
MLflow; Optuna just does not learn from them.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from sweeps.spec import SweepSpec


class RestorableOptunaSearch(OptunaSearch):
    """OptunaSearch that skips results of trials it has no record of (see the module docstring)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:  # OptunaSearch's own record of the trials it suggested
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's ``search`` as Tune distributions."""
    make = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {name: make[kind](args) for name, dist in spec.search.items() for kind, args in dist.items()}
