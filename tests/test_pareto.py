"""The Pareto front is exactly the non-dominated set, for each metric's direction."""

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.pareto import pareto_front


def brute_force(points, lower_is_better):
    """Indices not dominated by any other point: the definition, written out."""
    keep = []
    for i, (xi, yi) in enumerate(points):
        dominated = False
        for j, (xj, yj) in enumerate(points):
            better_y = yj < yi if lower_is_better else yj > yi
            same_or_better_y = yj <= yi if lower_is_better else yj >= yi
            if j != i and xj >= xi and same_or_better_y and (xj > xi or better_y):
                dominated = True
        if not dominated:
            keep.append(i)
    return keep


def frame(points):
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(len(points))],
                         "sparsity": [p[0] for p in points], "fcd": [p[1] for p in points],
                         "ssim_mean": [p[1] for p in points]})


@pytest.mark.parametrize("metric, lower", [("fcd", True), ("ssim_mean", False)])
def test_front_equals_brute_force_on_random_data_with_ties(metric, lower):
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = [(float(x), float(y)) for x, y in rng.integers(0, 5, (12, 2))]  # small ints: many ties/duplicates
        got = sorted(pareto_front(frame(pts), metric).index.tolist())
        assert got == brute_force(pts, lower)


def test_hand_made_front():
    pts = [(0.2, 10.0), (0.5, 20.0), (0.5, 15.0), (0.8, 40.0), (0.8, 40.0), (0.9, 100.0), (0.1, 50.0)]
    fcd = pareto_front(frame(pts), "fcd")
    # (0.5, 20) and (0.1, 50) are dominated; the duplicates are kept
    assert fcd["run_id"].tolist() == ["r0", "r2", "r3", "r4", "r5"]
    ssim = pareto_front(frame(pts), "ssim_mean")  # higher is better: only the sparsest-and-best survive
    assert ssim["run_id"].tolist() == ["r5"]


def test_nans_are_left_out_with_a_warning_and_single_point():
    df = frame([(0.3, 5.0), (0.6, np.nan), (np.nan, 1.0), (0.7, np.inf)])
    with pytest.warns(UserWarning, match="3 run"):
        front = pareto_front(df, "fcd")
    assert front["run_id"].tolist() == ["r0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pareto_front(frame([(0.4, 3.0)]), "fcd")["run_id"].tolist() == ["r0"]


def test_missing_metric_column_gives_an_empty_front_not_a_crash():
    with pytest.warns(UserWarning, match="kid"):
        assert len(pareto_front(frame([(0.1, 1.0)]), "kid")) == 0
