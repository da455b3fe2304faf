"""sweeps/search.py: the grid and Optuna searchers count, limit and resume from Tune's trial list."""

from __future__ import annotations

import pytest


def test_a_resumed_searcher_counts_and_limits_trials_from_tunes_trial_list_not_its_saved_state(tmp_path):
    """A driver killed mid-upload leaves the searcher's saved state older than Tune's trial list: it recorded
    trial a as running, which finished before the kill. Tune's list decides: a's slot is free, and the sweep
    finishes at num_samples (stale state made a resumed sweep with max_concurrent wait forever)."""
    from ray import tune
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import RestorableOptunaSearch

    def searcher():
        s = RestorableOptunaSearch(num_samples=3, max_concurrent=1, seed=0)
        s.set_search_properties("fcd", "min", {"lr_d": tune.loguniform(1e-4, 1e-3)})
        return s

    def trial(trial_id, status):
        t = Trial("train_trial", stub=True, trial_id=trial_id)
        t.set_status(status)
        return t

    before = searcher()
    before.sync([])
    assert before.suggest("a") is not None and before.suggest("b") is None  # one at a time
    before.save(str(tmp_path / "searcher.pkl"))  # the snapshot the kill left: a still running

    resumed = searcher()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.PENDING)])  # Tune's newer list
    assert resumed.suggest("c") is None  # b holds the one slot
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.TERMINATED)])
    assert resumed.suggest("c") is not None  # a's slot was not held by the stale record
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.TERMINATED), trial("c", Trial.TERMINATED)])
    assert resumed.suggest("d") == Searcher.FINISHED  # num_samples trials exist: no fourth


def test_a_resumed_grid_runs_each_point_once_from_tunes_trial_list_whatever_its_saved_state(tmp_path):
    """A pruning sweep's grid, resumed with saved state older or newer than Tune's trial list: the list
    decides which points have a trial (none runs twice, none is skipped) and which slots are free."""
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import GridSearch

    grid = [{"point": p, "source": s} for p in range(2) for s in range(2)]

    def trial(trial_id, status, point, source):
        t = Trial("prune_trial", stub=True, trial_id=trial_id, config={"point": point, "source": source})
        t.set_status(status)
        return t

    before = GridSearch(grid, max_concurrent=1)
    before.sync([])
    assert before.suggest("a") == {"point": 0, "source": 0} and before.suggest("b") is None  # one at a time
    before.save(str(tmp_path / "grid.json"))  # the snapshot the kill left: a running, nothing else taken

    older = GridSearch(grid, max_concurrent=1)
    older.restore(str(tmp_path / "grid.json"))
    older.sync([trial("a", Trial.TERMINATED, 0, 0), trial("b", Trial.TERMINATED, 0, 1)])  # Tune's newer list
    assert older.suggest("c") == {"point": 1, "source": 0}  # not (0, 1) again, and a's slot is free
    assert older.suggest("d") is None  # c holds the one slot
    older.sync([trial("a", Trial.TERMINATED, 0, 0), trial("b", Trial.TERMINATED, 0, 1),
                trial("c", Trial.TERMINATED, 1, 0)])
    assert older.suggest("d") == {"point": 1, "source": 1}
    older.sync([trial(i, Trial.TERMINATED, p, s) for i, (p, s) in zip("abcd", [(0, 0), (0, 1), (1, 0), (1, 1)])])
    assert older.suggest("e") == Searcher.FINISHED

    newer = GridSearch(grid, max_concurrent=0)  # saved after (0, 0) and (0, 1) were suggested...
    newer.sync([])
    assert [newer.suggest(i) for i in "ab"] == grid[:2]
    newer.sync([trial("a", Trial.TERMINATED, 0, 0)])  # ...but the list Tune restored has only the first
    assert [newer.suggest(i) for i in "xyz"] == [grid[1], grid[2], grid[3]]  # (0, 1) is not skipped
    assert newer.suggest("w") == Searcher.FINISHED


@pytest.mark.parametrize("kind", ["grid", "optuna"])
def test_a_searcher_step_costs_the_same_at_ten_thousand_trials(kind):
    """Tune hands its searcher the whole trial list at every step; the searchers read only what changed, so a
    step (sync + suggestion) costs no more with 10,000 trials behind it than with 100 (was O(N): 10,000 trials
    meant 5*10^7 trial reads per sweep)."""
    import time

    from ray import tune
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import GridSearch, RestorableOptunaSearch

    n = 10_000
    if kind == "grid":
        searcher = GridSearch([{"point": p} for p in range(n)], max_concurrent=4)
    else:  # Optuna's own TPE is not what is measured: random sampling keeps its cost flat
        import optuna

        searcher = RestorableOptunaSearch(num_samples=n, max_concurrent=4, seed=0,
                                          sampler=optuna.samplers.RandomSampler(seed=0))
        searcher.set_search_properties("fcd", "min", {"lr_d": tune.loguniform(1e-4, 1e-3)})

    class FakeTrial:  # what the searchers read of Tune's Trial
        __slots__ = ("trial_id", "status", "config")

        def __init__(self, trial_id, config):
            self.trial_id, self.status, self.config = trial_id, Trial.RUNNING, config

    trials: list = []  # Tune's list: the same object every step, only appended to
    step_s = []
    for step in range(n + 1):
        start = time.perf_counter()
        searcher.sync(trials)
        suggestion = searcher.suggest(f"t{step}")
        step_s.append(time.perf_counter() - start)
        if suggestion == Searcher.FINISHED:
            break
        assert suggestion is not None, f"step {step}: a slot should be free"
        trials.append(FakeTrial(f"t{step}", suggestion))
        if len(trials) > 3:  # the oldest running trial ends: one slot frees per step, four run
            trials[-4].status = Trial.TERMINATED
    assert len(trials) == n and searcher.suggest("extra") == Searcher.FINISHED
    if kind == "grid":
        assert len({t.config["point"] for t in trials}) == n  # each point once
    early, late = sorted(step_s[100:600])[250], sorted(step_s[n - 500:n])[250]  # medians of 500 steps
    assert late < 5 * early + 2e-4, f"a step took {early * 1e6:.0f} us at 100 trials, {late * 1e6:.0f} us at {n}"
