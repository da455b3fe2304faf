"""The hyperparameter search of a training sweep: Optuna's TPE over the spec's distributions.

A sweep resumed from remote storage (``s3://``) can find Tune's trial list newer than the searcher's
saved state: Tune uploads its snapshot files asynchronously, and a driver killed mid-upload leaves a mix.
``RestorableOptunaSearch`` holds up against that:

- results of trials the restored searcher never suggested are skipped (OptunaSearch would fail on them
  with a KeyError). Those trials still run and log to MLflow; Optuna just does not learn from them;
- how many trials exist and how many still run is read from Tune's own trial list at every step of the
  sweep (``TrialListSync``), not kept in the searcher's saved state. A stale count made Tune wait for a
  trial past ``num_samples``, and a stale record of a running trial that had in fact finished held the
  ``max_concurrent`` slot forever: the resumed sweep hung once its trials were done.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.spec import SweepSpec

_LIVE = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)


class RestorableOptunaSearch(OptunaSearch):
    """OptunaSearch that a resumed sweep can trust (see the module docstring). It also keeps to
    ``max_concurrent`` itself (0: no limit), from Tune's trial list."""

    def __init__(self, *, num_samples: int, max_concurrent: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_samples, self.max_concurrent = num_samples, max_concurrent
        self._live: dict[str, bool] = {}  # every trial Tune has: is it still live? (and ones suggested since)

    def sync(self, trials: list[Trial]) -> None:
        """Tune's trial list, at the start of each step, before it asks for new trials."""
        self._live = {t.trial_id: t.status in _LIVE for t in trials}

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True  # limited here: a ConcurrencyLimiter around this searcher passes everything through

    def suggest(self, trial_id: str) -> dict | None:
        if len(self._live) >= self.num_samples:
            return Searcher.FINISHED
        if self.max_concurrent and sum(self._live.values()) >= self.max_concurrent:
            return None
        suggestion = super().suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self._live[trial_id] = True
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:  # OptunaSearch's own record of the trials it suggested
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)


class TrialListSync(Callback):
    """Hands Tune's trial list to the sweep's searcher at every step. Tune pickles this callback and the
    searcher into one tuner.pkl, so a restored sweep's copy still points at the searcher Tune restores."""

    def __init__(self, searcher: RestorableOptunaSearch):
        self.searcher = searcher

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.searcher.sync(trials)


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's ``search`` as Tune distributions."""
    make = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {name: make[kind](args) for name, dist in spec.search.items() for kind, args in dist.items()}
