"""The frontier search (``search: frontier`` in a pruning sweep): per method and recipe, the highest sparsity whose
verdict is *within*, found by bisecting the method's amount (q, s or ratio) between the grid's lowest and highest.

Every step scores the amount on every source, beside the recipe's dense control (run once per source and reused
by every step), and judges it with ganlab.metrics.verdict before choosing the next amount. A family stops when the
bracket [highest within, lowest worse] is at most ``bracket`` in sparsity (status ``found``), when the points left
between read "cannot tell" (``cannot tell``), when the lowest amount is already not within (``none within``), the
highest already within (``all within``), or after ``max_steps`` bisection steps (``steps exhausted``).

The searcher keeps no state of its own that matters: what has run and what it gave is read from Tune's trial list
at every step (``TrialListSync``), so a driver killed mid-search and resumed loses no finished trial, repeats none,
and continues the bisection where the trial list says it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from ganlab.metrics.verdict import CANNOT_TELL, WITHIN, WORSE, judge_point
from ganlab.tracking.schema import DRAW_METRICS
from sweeps.grid import Family
from sweeps.search import TrialListLimits

FOUND, NONE_WITHIN, ALL_WITHIN, EXHAUSTED, FAILED = "found", "none within", "all within", \
    "steps exhausted", "a trial failed"


@dataclass(frozen=True)
class Step:
    """One amount judged: its verdict and the mean measured sparsity over the sources."""

    amount: float
    verdict: str
    sparsity: float
    ratio: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    run_ids: tuple = ()  # its trials' MLflow runs, source by source


@dataclass
class Frontier:
    """Where a family's bisection stands: ``next_amount`` to score (None: done, or waiting), and the answer so
    far: the highest amount (and sparsity) judged within, the lowest judged worse, and the status."""

    status: str | None = None  # None while searching
    within: Step | None = None
    worse: Step | None = None
    next_amount: float | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        return (self.within.sparsity if self.within else None, self.worse.sparsity if self.worse else None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "within": asdict(self.within) if self.within else None,
                "worse": asdict(self.worse) if self.worse else None, "steps": [asdict(s) for s in self.steps]}


def bisect(low: float, high: float, judged: dict[float, Step], bracket: float = 0.05, max_steps: int = 8,
           digits: int = 4) -> Frontier:
    """The next amount to score, or the answer, from the amounts judged so far (a pure function: the searcher
    and the planted-frontier tests call it alike). Amounts grow with sparsity; the endpoints come first."""
    steps = sorted(judged.values(), key=lambda s: s.amount)
    state = Frontier(steps=steps)
    missing = [a for a in (low, high) if a not in judged]
    if missing:
        state.next_amount = missing[0]
        return state
    if judged[low].verdict != WITHIN:
        state.status, state.worse = NONE_WITHIN, judged[low] if judged[low].verdict == WORSE else None
        return state
    within = max((s for s in steps if s.verdict == WITHIN), key=lambda s: s.amount)
    state.within = within
    if judged[high].verdict == WITHIN:
        state.status = ALL_WITHIN
        return state
    above = [s for s in steps if s.amount > within.amount]
    nearest = min(above, key=lambda s: s.amount)  # the lowest amount above the highest within: not within
    worse = [s for s in above if s.verdict == WORSE]
    state.worse = min(worse, key=lambda s: s.amount) if worse else None
    if nearest.sparsity - within.sparsity <= bracket:
        state.status = FOUND if nearest.verdict == WORSE else CANNOT_TELL.value
        return state
    if len(steps) - 2 >= max_steps:
        state.status = EXHAUSTED
        return state
    state.next_amount = round((within.amount + nearest.amount) / 2, digits)
    return state


class FrontierSearch(TrialListLimits, Searcher):
    """Tune's side of the bisection: suggests ``{"point", "source", "amount"}`` configs (a control's without an
    amount), every family at once, each step's sources together."""

    def __init__(self, families: list[Family], sources: int, *, tolerance: float = 0.05, bracket: float = 0.05,
                 max_steps: int = 8, max_concurrent: int = 0):
        super().__init__()
        self.families, self.sources = families, sources
        self.tolerance, self.bracket, self.max_steps = tolerance, bracket, max_steps
        # at most: controls, both endpoints and max_steps midpoints, on every source
        self._init_limits(len(families) * sources * (3 + max_steps), max_concurrent)

    def _reset_view(self) -> None:
        super()._reset_view()
        self._trials: dict[tuple, Trial | None] = {}  # (point, amount, source) -> its trial (None: suggested)

    def _seen(self, trial: Trial) -> None:
        self._trials[_key(trial.config)] = trial

    def _done(self, key: tuple) -> dict | None:
        trial = self._trials.get(key)
        return trial.last_result if trial is not None and trial.status == Trial.TERMINATED else None

    def suggest(self, trial_id: str) -> dict | None:
        if (gate := self._gate()) != "":
            return gate
        waiting = False
        for family in self.families:
            for config in self._wanted(family):
                if _key(config) not in self._trials:
                    self._trials[_key(config)] = None
                    self._suggested(trial_id)
                    return config
            waiting |= self.frontier(family).status is None
        return None if waiting else Searcher.FINISHED

    def _wanted(self, family: Family) -> list[dict]:
        """The trials this family needs now: its controls, every amount already started on every source, and the
        next amount of the bisection (both endpoints first)."""
        configs = [{"point": family.control, "source": s} for s in range(self.sources)] \
            if family.control is not None else []
        amounts = sorted({k[1] for k in self._trials if k[0] == family.point})
        state = self.frontier(family)
        if state.next_amount is not None and state.next_amount not in amounts:
            amounts.append(state.next_amount)
        if family.high not in amounts and family.low in amounts and state.status is None:
            amounts.append(family.high)  # the endpoints run together
        configs += [{"point": family.point, "source": s, "amount": a} for a in amounts for s in range(self.sources)]
        return configs

    def frontier(self, family: Family) -> Frontier:
        state = bisect(family.low, family.high, self._judged(family), self.bracket, self.max_steps)
        if state.status is None and any(k[0] in (family.point, family.control) and t is not None
                                        and t.status == Trial.ERROR for k, t in self._trials.items()):
            state.status, state.next_amount = FAILED, None  # Tune gave up on a trial (max_failures): stop here
        return state

    def read_results(self, results) -> FrontierSearch:
        """The view from a finished sweep's ResultGrid instead of the live trial list (the answer, after fit)."""
        self._reset_view()
        for result in results:
            status = Trial.ERROR if result.error else Trial.TERMINATED
            self._trials[_key(result.config)] = _Finished(result.config, status, dict(result.metrics or {}))
        return self

    def _judged(self, family: Family) -> dict[float, Step]:
        """Every amount whose trials (and the control's) have all finished, judged."""
        controls = [self._done((family.control, None, s)) for s in range(self.sources)] \
            if family.control is not None else None
        if controls is not None and any(c is None for c in controls):
            return {}
        judged = {}
        for amount in {k[1] for k in self._trials if k[0] == family.point}:
            results = [self._done((family.point, amount, s)) for s in range(self.sources)]
            if any(r is None for r in results):
                continue
            judged[amount] = judge_step(amount, results, controls, self.tolerance)
        return judged

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # what has run, and what it gave, is read from Tune's trial list

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"families": [asdict(f) for f in self.families]}))

    def restore(self, checkpoint_path: str) -> None:
        self.families = [Family(**f) for f in json.loads(Path(checkpoint_path).read_text())["families"]]

    def frontiers(self) -> dict[str, dict[str, Any]]:
        """Every family's answer, by name (what the sweep's parent run carries)."""
        return {f.name: self.frontier(f).to_dict() for f in self.families}


@dataclass
class _Finished:
    """A finished trial as a ResultGrid shows it: what the searcher reads of a Trial."""

    config: dict
    status: str
    last_result: dict


def _key(config: dict) -> tuple:
    return config.get("point"), config.get("amount"), config.get("source", 0)


def judge_step(amount: float, results: list[dict], controls: list[dict] | None, tolerance: float) -> Step:
    """One amount's verdict (ganlab.metrics.verdict.judge_point, as the report reads it) from its trials' per-draw
    values (``draws``), against the controls' (fine-tuned recipes) or each trial's own dense draws (one-shot)."""
    v = judge_point([_per_draw(r) for r in results],
                    [_per_draw(c) for c in controls] if controls is not None else None, tolerance).verdict
    sparsity = sum(float(r["sparsity"]) for r in results) / len(results)
    return Step(amount, v.verdict, sparsity, v.ratio, v.low, v.high,
                tuple(str(r.get("mlflow_run_id", "")) for r in results))


def _per_draw(result: dict) -> dict[str, list[float]]:
    """A trial's per-draw values as Tune's result holds them (``draws``, or ``draws/<metric>`` once flattened)."""
    return {name: _draws(result, name) for name in DRAW_METRICS}


def _draws(result: dict, name: str) -> list[float]:
    draws = result.get("draws") or {}
    return list(draws.get(name) or result.get(f"draws/{name}") or [])


__all__ = ["ALL_WITHIN", "CANNOT_TELL", "EXHAUSTED", "FAILED", "FOUND", "NONE_WITHIN", "WITHIN",
           "WORSE", "Family", "Frontier", "FrontierSearch", "Step", "bisect", "judge_step"]
