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
from ray.tune.search.search_generator import SearchGenerator

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
        self._reset_view()

    def _reset_view(self) -> None:
        self._list: list[Trial] | None = None  # the trial list last read (Tune's own, which only grows)
        self._read = 0  # how many of its trials were read
        self._running: dict[str, Trial] = {}  # the live ones among them, re-read at every step
        self._count = 0  # trials in the list, plus those suggested since
        self._pending_ids: set[str] = set()  # suggested, not yet in the list

    def __getstate__(self) -> dict:  # the view is rebuilt from the trial list a restored sweep has, never saved
        state = dict(self.__dict__)
        for key in ("_list", "_read", "_running", "_count", "_pending_ids"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_view()

    def sync(self, trials: list[Trial]) -> None:
        """Tune's trial list, at the start of each step, before it asks for new trials. Tune hands the same list
        every step and only appends to it: the trials added since the last step are read, and the live ones
        re-read, so a step costs O(new + live) rather than O(all). Another list (a restored sweep's, a test's)
        is read whole."""
        if trials is not self._list or len(trials) < self._read:
            self._reset_view()  # the whole view, the grid's taken points too
            self._list = trials
        self._pending_ids = set()  # a suggestion is in Tune's list by its next step; one that is not never ran
        for trial in trials[self._read:]:
            if trial.status in _LIVE:
                self._running[trial.trial_id] = trial
            self._seen(trial)
        self._read = len(trials)
        self._running = {i: t for i, t in self._running.items() if t.status in _LIVE}
        self._count = self._read + len(self._pending_ids)

    def _seen(self, trial: Trial) -> None:
        """A trial read from the list for the first time (the grid marks its point taken)."""

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True  # limited here: a ConcurrencyLimiter around this searcher passes everything through

    def _gate(self) -> str | None:
        """FINISHED once num_samples trials exist, None while max_concurrent run, else "" (go on)."""
        if self._count >= self.num_samples:
            return Searcher.FINISHED
        if self.max_concurrent and len(self._running) + len(self._pending_ids) >= self.max_concurrent:
            return None
        return ""

    def _suggested(self, trial_id: str) -> None:
        self._pending_ids.add(trial_id)
        self._count += 1


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

    def _reset_view(self) -> None:
        super()._reset_view()
        self._taken: set[tuple] = set()  # the configs Tune has a trial for (and ones suggested since)
        self._next = 0  # every config before this one is taken

    def _key(self, config: dict[str, Any]) -> tuple:
        return tuple(config.get(k) for k in (self.configs[0] if self.configs else ()))

    def _seen(self, trial: Trial) -> None:
        self._taken.add(self._key(trial.config))

    def suggest(self, trial_id: str) -> dict | None:
        if (gate := self._gate()) != "":
            return gate
        while self._next < len(self.configs):  # each config is passed once per view: O(1) amortised
            config = self.configs[self._next]
            self._next += 1
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


def optuna_distributions(spec: SweepSpec) -> dict:
    """The spec's ``search`` as Optuna distributions (the importances are computed on them)."""
    import optuna

    out = {}
    for name, dist in spec.search.items():
        (kind, args), = dist.items()
        if kind == "choice":
            out[name] = optuna.distributions.CategoricalDistribution(args)
        elif kind == "randint":
            out[name] = optuna.distributions.IntDistribution(args[0], args[1] - 1)
        else:
            out[name] = optuna.distributions.FloatDistribution(args[0], args[1], log=kind == "loguniform")
    return out


class Counted(SearchGenerator):
    """Tune's wrapper of a sweep's searcher, saying how many trials the sweep has. Tune is given
    ``num_samples=-1`` (the searcher ends the sweep, see TrialListLimits), which its banner printed as
    "Number of trials 9223372036854775807"; the count it shows (and limits pending trials by) is the searcher's."""

    def __init__(self, searcher: TrialListLimits):
        super().__init__(searcher)

    @property
    def total_samples(self) -> int:
        return self.searcher.num_samples
