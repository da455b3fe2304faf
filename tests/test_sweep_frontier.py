"""sweeps/frontier.py: the bisection finds a planted frontier — as a pure function, as Tune's searcher over synthetic
paired draws on several sources (controls run once per source and reused), and in one real tiny sweep end to end
(its answer read back by analysis/frontiers.py).
A driver SIGKILLed mid-search and resumed (it repeats no trial and continues the bisection): test_sweep_resume."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ganlab.metrics.verdict import CANNOT_TELL, WITHIN, WORSE
from sweeps.frontier import ALL_WITHIN, FOUND, NONE_WITHIN, Family, FrontierSearch, Step, bisect


def _search(low, high, verdict_at, bracket=0.05, max_steps=8):
    """Run the pure bisection against ``verdict_at(amount) -> verdict`` (amount = q %, sparsity = q / 100)."""
    judged: dict[float, Step] = {}
    while True:
        state = bisect(low, high, judged, bracket, max_steps)
        if state.next_amount is None:
            return state, judged
        a = state.next_amount
        assert a not in judged  # never the same amount twice
        judged[a] = Step(a, verdict_at(a), a / 100)


@pytest.mark.parametrize("truth", [23.0, 41.7, 64.2, 88.0, 94.0])
def test_bisection_brackets_a_planted_frontier_within_five_points(truth):
    state, judged = _search(20, 95, lambda a: WITHIN if a <= truth else WORSE)
    assert state.status == FOUND
    assert state.within.sparsity <= truth / 100 < state.worse.sparsity
    assert state.worse.sparsity - state.within.sparsity <= 0.05
    assert len(judged) <= 2 + math.ceil(math.log2((95 - 20) / 5))  # endpoints + halvings of 75 points down to 5


def test_bisection_says_when_the_range_holds_no_frontier():
    state, judged = _search(20, 95, lambda a: WORSE)
    assert state.status == NONE_WITHIN and state.within is None and state.worse.amount == 20 and len(judged) == 2
    state, judged = _search(20, 95, lambda a: WITHIN)
    assert state.status == ALL_WITHIN and state.within.amount == 95 and len(judged) == 2


def test_bisection_stops_on_points_that_cannot_tell_and_says_so():
    """Between 40 % and 70 % the verdict cannot tell: the search narrows onto the highest within and reports the
    points above it as undecided rather than calling them worse."""
    state, _ = _search(20, 95, lambda a: WITHIN if a <= 40 else CANNOT_TELL if a <= 70 else WORSE)
    assert state.status == CANNOT_TELL
    assert 0.35 <= state.within.sparsity <= 0.40 and state.worse.sparsity > 0.70


def test_bisection_gives_up_after_max_steps():
    state, judged = _search(20, 95, lambda a: WITHIN if a <= 50 else WORSE, bracket=0.001, max_steps=3)
    assert state.status == "steps exhausted" and len(judged) == 5


class FakeTrial:
    """What the searcher reads of a Tune Trial."""

    def __init__(self, trial_id, config, result):
        self.trial_id, self.config, self.status, self.last_result = trial_id, config, "TERMINATED", result


def _draws(rng, fcd, k=5, noise=0.03):
    return list(fcd * np.exp(rng.normal(0, noise, k)))


def _tune(search: FrontierSearch, run) -> list[FakeTrial]:
    """Tune's loop, sequentially: sync the trial list, ask for a trial, run it, until the searcher is done."""
    trials: list[FakeTrial] = []
    for i in range(500):
        search.sync(trials)
        config = search.suggest(f"t{i}")
        if config == "FINISHED":
            return trials
        assert config is not None  # sequential: nothing is ever running when it is asked
        trials.append(FakeTrial(f"t{i}", config, run(config)))
    raise AssertionError("the search did not end")


@pytest.mark.parametrize("truth", [0.33, 0.71])
def test_the_searcher_finds_a_planted_frontier_from_paired_draws_and_reuses_each_control(truth):
    """Three sources; a fine-tuned family judged against its dense control (FCD 20 on each source) and a one-shot
    family against its own dense draws; the pruned FCD grows by at most 2 % up to the planted frontier and by 30 %
    or more above it."""
    rng = np.random.default_rng(0)
    # each source's dense draws: the same evaluation noise for the dense model, its control and every pruned point
    base = [_draws(rng, fcd) for fcd in (20.0, 22.0, 18.0)]

    def ratio(sparsity):
        return 1 + 0.02 * sparsity if sparsity <= truth else 1.3 + sparsity

    def run(config):
        s = config["source"]
        if config.get("amount") is None:  # the control
            return {"sparsity": 0.0, "draws": {"fcd": base[s], "coverage": [10.0] * 5}}
        sparsity = config["amount"] / 100
        dense = base[s]
        pruned = [d * ratio(sparsity) * math.exp(rng.normal(0, 0.01)) for d in dense]
        return {"sparsity": sparsity, "draws": {"fcd": pruned, "dense_fcd": dense, "coverage": [10.0] * 5,
                                                "dense_coverage": [10.0] * 5}}

    families = [Family("percentage ft1", point=0, low=10.0, high=95.0, control=5), Family("percentage", 1, 10.0, 95.0)]
    search = FrontierSearch(families, sources=3)
    trials = _tune(search, run)
    keys = [(t.config["point"], t.config.get("amount"), t.config["source"]) for t in trials]
    assert len(keys) == len(set(keys))  # no trial twice
    assert sum(1 for k in keys if k[0] == 5) == 3  # one control per source, reused by every step
    for name, answer in search.frontiers().items():
        assert answer["status"] == FOUND, name
        assert answer["within"]["sparsity"] <= truth < answer["worse"]["sparsity"], name
        assert answer["worse"]["sparsity"] - answer["within"]["sparsity"] <= 0.05
        assert {step["verdict"] for step in answer["steps"]} <= {WITHIN, WORSE, CANNOT_TELL}
    assert json.dumps(search.frontiers())  # what the parent run carries is plain JSON


def test_a_searcher_rebuilt_from_the_trial_list_continues_where_it_was():
    """The searcher holds nothing that matters: a fresh one (a resumed driver's) handed the same trial list suggests
    exactly what the first one would have suggested next."""
    rng = np.random.default_rng(1)

    def run(config):
        sparsity = config["amount"] / 100
        dense = _draws(rng, 20.0)
        factor = 1.0 if sparsity <= 0.5 else 1.5
        return {"sparsity": sparsity, "draws": {"fcd": [d * factor for d in dense], "dense_fcd": dense}}

    family = [Family("percentage", 0, 10.0, 90.0)]
    first = FrontierSearch(family, sources=2)
    trials = []
    for i in range(6):  # six trials: both endpoints and two bisection steps, on two sources
        first.sync(trials)
        trials.append(FakeTrial(f"t{i}", first.suggest(f"t{i}"), None))
        trials[-1].last_result = run(trials[-1].config)
    first.sync(trials)
    second = FrontierSearch(family, sources=2)
    second.sync(list(trials))
    assert first.suggest("next") == second.suggest("next")


@pytest.mark.slow  # 25-50 s of a real sweep or server: make test-slow (CI runs it), to keep make test under 10 min
def test_a_real_frontier_sweep_bisects_each_family_and_its_parent_run_carries_the_answer(local_ray, trained, tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps.runner import run_sweep
    from sweeps.sources import Sources
    from sweeps.spec import spec_from_dict

    from conftest import children, frontier_spec, replayed, run_main

    uri, source = trained
    spec = spec_from_dict(frontier_spec(tmp_path, "frontier"))
    families = spec.frontier_families()
    assert [f.name for f in families] == ["percentage", "percentage ft1"] and families[1].control is not None
    parent_id = run_sweep(spec, Sources.of(source))
    client = MlflowClient(uri)
    with open(client.download_artifacts(parent_id, "frontiers.json", str(tmp_path))) as f:
        answer = json.load(f)
    assert set(answer) == {"percentage", "percentage ft1"}
    for family in families:
        assert replayed(answer[family.name], family.low, family.high, 0.1, 2) == answer[family.name]["status"]
    runs = children(uri, parent_id)
    points = [r.data.tags["ganlab.grid_point"] for r in runs]
    assert len(points) == len(set(points)) == sum(len(a["steps"]) for a in answer.values()) + 1  # + one control
    assert sum(r.data.params.get("control") == "True" for r in runs) == 1  # run once, judged against at every step
    metrics = client.get_run(parent_id).data.metrics
    for k, name in enumerate(answer):
        if answer[name]["within"] is not None:
            assert metrics[f"frontier_{k}_sparsity"] == pytest.approx(answer[name]["within"]["sparsity"])
    # ganlab analyze answers with the frontiers first (analysis/frontiers.py) and marks them on the Pareto plots
    code, out, err = run_main(["analyze", "--sweep", parent_id, "--out", str(tmp_path / "reports")])
    assert code == 0, err
    page = Path(out.strip().splitlines()[-1].split("report: ")[1]).read_text()
    assert page.index("The frontier, searched") < page.index("Pareto fronts")
    for name in answer:
        assert html.escape(name) in page
