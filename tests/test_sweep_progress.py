"""sweeps/progress.py: the line a sweep shows instead of Ray Tune's tables, on a real Tune run of a tiny trainable."""

from __future__ import annotations

import re


def test_a_sweep_prints_one_progress_line_per_finished_trial_and_no_tune_tables(local_ray, tmp_path, capfd,
                                                                                 monkeypatch):
    from ray import tune

    from sweeps.progress import SweepProgress

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")  # what sweeps.tuners.run_config sets without --verbose

    def trainable(config):
        if config["x"] == 3:
            raise ValueError("a trial that fails")
        for _ in range(2 if config["x"] != 2 else 1):  # x=2 stops after one report: stopped early
            tune.report({"fcd": 10.0 - config["x"]})

    progress = SweepProgress("tiny", total=4, metric="fcd", mode="min", iterations=2, live=False)
    tuner = tune.Tuner(trainable, param_space={"x": tune.grid_search([0, 1, 2, 3])},
                       tune_config=tune.TuneConfig(max_concurrent_trials=1),
                       run_config=tune.RunConfig(name="p", storage_path=str(tmp_path), verbose=0,
                                                 callbacks=[progress], failure_config=tune.FailureConfig(0)))
    tuner.fit()
    out = capfd.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("ganlab sweep tiny:")]
    assert [re.search(r": (\d+)/4 ended", line).group(1) for line in lines] == ["1", "2", "3", "4"]
    last = lines[-1]
    assert "(2 done, 1 stopped early, 1 failed), 0 running" in last, last
    assert "best fcd 9 (x=1)" in last, last  # the early-stopped x=2 (fcd 8) is not the best
    assert "left" in lines[0] and "left" not in last  # time left while trials remain
    assert "Trial status" not in out and "TensorBoard" not in out  # Ray's own tables: only with --verbose


def test_the_line_says_time_left_from_the_trials_ended_so_far():
    from sweeps.progress import _duration

    assert [_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
