"""What a running sweep shows: one live line (trials done / running / stopped early / failed, the best so far, elapsed
and time left) instead of Ray Tune's per-trial tables, through Tune's own Callback API.

On a terminal the line is redrawn in place about once a second; elsewhere (CI, a log file, `ganlab demo`'s steps) one
line is printed per finished trial. Everything is read from Tune's trial list at each event, never counted here, so a
restored sweep shows the trials its earlier run finished too. Ray's tables come back with ``--verbose``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class SweepProgress(Callback):
    """The sweep's progress display. ``total``: how many trials the sweep has (None when a search decides it);
    ``metric``/``mode``: the best so far; ``iterations``: a trial's full length in reports (a trial that ended
    before it, or whose ``ganlab_status`` is not ok, was stopped early); ``live``: redraw one line (default: when
    stdout is a terminal)."""

    every_s = 1.0  # a terminal's line is redrawn at most this often

    def __init__(self, name: str, *, total: int | None, metric: str, mode: str = "min",
                 iterations: int | None = None, live: bool | None = None):
        self.name, self.total, self.metric, self.mode = name, total, metric, mode
        self.iterations = iterations
        self.live = sys.stdout.isatty() if live is None else live
        self._start = time.monotonic()
        self._drawn = 0.0

    def __setstate__(self, state: dict[str, Any]) -> None:  # a restored sweep: its own clock, its own terminal
        self.__dict__.update(state)
        self._start, self._drawn = time.monotonic(), 0.0
        self.live = sys.stdout.isatty()

    def setup(self, **info: Any) -> None:
        self._start = time.monotonic()

    def early(self, trial: Trial) -> bool:
        result = trial.last_result or {}
        if result.get("ganlab_status") not in (None, "ok"):
            return True
        return self.iterations is not None and result.get("training_iteration", self.iterations) < self.iterations

    def line(self, trials: list[Trial], ending: tuple[Trial, str] | None = None) -> str:
        """The progress line; ``ending``: the trial an event is about and the status it ends with (Tune calls the
        callback before it sets that status)."""
        status = lambda t: ending[1] if ending is not None and t is ending[0] else t.status  # noqa: E731
        done = [t for t in trials if status(t) == Trial.TERMINATED]
        failed = sum(status(t) == Trial.ERROR for t in trials)
        running = sum(status(t) == Trial.RUNNING for t in trials)
        early = sum(self.early(t) for t in done)
        ended = len(done) + failed
        of = f"/{self.total}" if self.total else ""
        text = (f"ganlab sweep {self.name}: {ended}{of} ended ({len(done) - early} done, {early} stopped early, "
                f"{failed} failed), {running} running")
        best = self.best(done)
        if best is not None:
            text += f"; best {self.metric} {best[0]:.4g} ({best[1]})"
        elapsed = time.monotonic() - self._start
        text += f"; {_duration(elapsed)} elapsed"
        if self.total and ended and ended < self.total:
            text += f", ~{_duration(elapsed / ended * (self.total - ended))} left"
        return text

    def best(self, trials: list[Trial]) -> tuple[float, str] | None:
        scored = [(float(t.last_result[self.metric]), t) for t in trials
                  if isinstance((t.last_result or {}).get(self.metric), (int, float))
                  and math.isfinite(t.last_result[self.metric]) and not self.early(t)]
        if not scored:
            return None
        value, trial = (min if self.mode == "min" else max)(scored, key=lambda vt: vt[0])
        return value, _about(trial)

    def _show(self, trials: list[Trial], *, force: bool, ending: tuple[Trial, str] | None = None) -> None:
        if self.live:
            if force or time.monotonic() - self._drawn >= self.every_s:
                sys.stdout.write("\r\033[K" + self.line(trials, ending))
                sys.stdout.flush()
                self._drawn = time.monotonic()
        elif force:
            print(self.line(trials, ending), flush=True)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.live:
            self._show(trials, force=False)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._show(trials, force=True, ending=(trial, Trial.TERMINATED))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._show(trials, force=True, ending=(trial, Trial.ERROR))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        if self.live:
            self._show(trials, force=True)
            sys.stdout.write("\n")
            sys.stdout.flush()


def _about(trial: Trial) -> str:
    """A trial as a reader knows it: its searched settings (a grid point by index and source), short."""
    config = {k: v for k, v in (trial.config or {}).items() if not isinstance(v, (dict, list))}
    text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))
    return text[:60] or trial.trial_id
