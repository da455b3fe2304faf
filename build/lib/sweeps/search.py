"""The sweeps' searchers: Optuna's TPE over a training sweep's distributions, a pruning sweep's grid.

A sweep resumed from remote storage (``s3://``) can find Tune's trial list newer or older than the
searcher's saved state: Tune uploads its snapshot files asynchronously, and a driver killed mid-upload
leaves a mix. Both searchers hold up against that:

- results of trials the restored searcher never suggested are skipped (OptunaSearch would fail on them
  with a KeyError). Those trials still run and log to MLflow; Optuna just does not learn from them;
- how many trials exist and how many still run is read from Tune's own trial list at every step of the
  sweep (``TrialListSync``), not kept in the searcher's saved state. A stale count made Tune wait for a
  trial past ``num_samples``, and a stale record of a running trial that had in fact finished held the
  ``max_concurrent`` slot forever: the resumed sweep hung once its trials were done;
- the grid's next point is the first one without a trial in that list, so a resumed grid neither runs a
  point twice nor skips one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.spec import SweepSpec

_LIVE = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)


class TrialListLimits:
    """How many trials exist and how many still run, read from Tune's trial list (``sync``) plus the ones
    suggested since, never from a searcher's saved state. Mixed into the sweeps' searchers: ``suggest``
    asks ``_gate`` first. Tune is given ``num_samples=-1``, so its SearchGenerator's saved counter (which
    can be newer or older than the trial list) never ends a sweep either: the searcher says FINISHED."""

    num_samples: int
    max_concurrent: int

    def _init_limits(self, num_samples: int, max_concurrent: int) -> None:
        self.num_samples, self.max_concurrent = num_samples, max_concurrent
        self._live: dict[str, bool] = {}  # every trial Tune has: is it still live? (and ones suggested since)

    def sync(self, trials: list[Trial]) -> None:
        """Tune's trial list, at the start of each step, before it asks for new trials."""
        self._live = {t.trial_id: t.status in _LIVE for t in trials}

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True  # limited here: a ConcurrencyLimiter around this searcher passes everything through

    def _gate(self) -> str | None:
        """FINISHED once num_samples trials exist, None while max_concurrent run, else "" (go on)."""
        if len(self._live) >= self.num_samples:
            return Searcher.FINISHED
        if self.max_concurrent and sum(self._live.values()) >= self.max_concurrent:
            return None
        return ""

    def _suggested(self, trial_id: str) -> None:
        self._live[trial_id] = True


class RestorableOptunaSearch(TrialListLimits, OptunaSearch):
    """OptunaSearch that a resumed sweep can trust (see the module docstring). It also keeps to
    ``max_concurrent`` itself (0: no limit), from Tune's trial list."""

    def __init__(self, *, num_samples: int, max_concurrent: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self._init_limits(num_samples, max_concurrent)

    def suggest(self, trial_id: str) -> dict | None:
        if (gate := self._gate()) != "":
            return gate
        suggestion = super().suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self._suggested(trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials:  # OptunaSearch's own record of the trials it suggested
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)


class GridSearch(TrialListLimits, Searcher):
    """A pruning sweep's grid: each config once, in order. Which configs already have a trial is read
    from Tune's trial list too, so a resumed sweep neither runs a grid point twice nor skips one, whatever
    its saved state says (Tune's BasicVariantGenerator kept its place in the grid, its trial counter and
    its running trials in that state)."""

    def __init__(self, configs: list[dict[str, Any]], *, max_concurrent: int = 0):
        super().__init__()
        self.configs = configs
        self._init_limits(len(configs), max_concurrent)
        self._taken: set[tuple] = set()  # the configs Tune has a trial for (and ones suggested since)

    def _key(self, config: dict[str, Any]) -> tuple:
        return tuple(config.get(k) for k in (self.configs[0] if self.configs else ()))

    def sync(self, trials: list[Trial]) -> None:
        super().sync(trials)
        self._taken = {self._key(t.config) for t in trials}

    def suggest(self, trial_id: str) -> dict | None:
        if (gate := self._gate()) != "":
            return gate
        for config in self.configs:
            if self._key(config) not in self._taken:
                self._taken.add(self._key(config))
                self._suggested(trial_id)
                return dict(config)
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # a grid learns nothing; what has run is in Tune's trial list

    def save(self, checkpoint_path: str) -> None:  # Tune saves every searcher; the grid is all there is
        Path(checkpoint_path).write_text(json.dumps(self.configs))

    def restore(self, checkpoint_path: str) -> None:
        self.configs = json.loads(Path(checkpoint_path).read_text())


class TrialListSync(Callback):
    """Hands Tune's trial list to the sweep's searcher at every step. Tune pickles this callback and the
    searcher into one tuner.pkl, so a restored sweep's copy still points at the searcher Tune restores."""

    def __init__(self, searcher: TrialListLimits):
        self.searcher = searcher

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.searcher.sync(trials)


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's ``search`` as Tune distributions."""
    make = {"choice": lambda a: tune.choice(a), "uniform": lambda a: tune.uniform(*a),
            "loguniform": lambda a: tune.loguniform(*a), "randint": lambda a: tune.randint(*a)}
    return {name: make[kind](args) for name, dist in spec.search.items() for kind, args in dist.items()}
