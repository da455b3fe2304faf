"""s*, the crossing (ganlab/metrics/verdict.py: crossing, next_sparsities), against a planted truth and by a
coverage simulation with the study's structure.

The simulated study: S sources, each with its own fragility curve log R_s(x) = kappa_s x^2 whose crossing of 1.05 is
c_s = s* exp(tau z_s) (so s*, the geometric mean over the population of sources, is known); each source scored on
3 evaluation-noise draws, paired (the pruned generator and its reference share each draw's noise), against one
reference run per source (every point of a source shares its reference's draws); per-source noise of the log ratio
~0.6 % (study v3's 5-source intervals imply it); an effect shared by every source of a study (the real set, the
classifier: the instrument), of size ``shared`` x tau; points from the study's fixed grid or placed by the search
itself (next_sparsities, until the crossing is located or 16 points are spent). `python tests/test_crossing.py`
prints the whole table (docs/recovery.md, "The crossing").
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from ganlab.metrics.verdict import BELOW, BEYOND, crossing, judge, next_sparsities

STAR = 0.22  # the population's crossing
LINE = np.log(1.05)


def _study(rng, sources: int, tau: float, shared: float, design: str, draws: int = 3):
    """One simulated study: (its crossing, its per-point verdicts at the fixed grid or None)."""
    c = STAR * np.exp(tau * rng.standard_normal(sources)) * np.exp(shared * tau * rng.standard_normal())
    kappa = LINE / c ** 2
    paired = 0.04 * rng.standard_normal((sources, draws))  # the draw noise both generators of a source share
    reference = np.exp(paired + 0.0075 * rng.standard_normal((sources, draws)))  # one reference run per source

    def score(xs):
        xs = np.asarray(xs, float)
        pruned = np.exp(kappa[:, None, None] * xs[None, :, None] ** 2 + paired[:, None, :]
                        + 0.0075 * rng.standard_normal((sources, len(xs), draws)))
        return pruned, pruned.mean(axis=2) / reference.mean(axis=1)[:, None]

    if design == "grid":
        xs = np.round(np.arange(0.05, 0.501, 0.05), 3)
        pruned, ratios = score(xs)
        return crossing(xs, ratios), (xs, pruned, reference)
    xs = [0.1, 0.3, 0.5]
    _, ratios = score(xs)
    while not crossing(xs, ratios).located() and len(xs) < 16:
        new = next_sparsities(xs, ratios, lowest=0.01, highest=0.9)
        if not new:
            break
        xs = [*xs, *new]
        ratios = np.hstack([ratios, score(new)[1]])
    return crossing(xs, ratios), None


def _covers(c, truth: float) -> bool:
    low = -np.inf if c.low is None else c.low
    high = np.inf if c.high is None else c.high
    return low <= truth <= high


def coverage(seed: int, sources: int, tau: float, shared: float, design: str, studies: int) -> dict:
    rng = np.random.default_rng(seed)
    found = [_study(rng, sources, tau, shared, design)[0] for _ in range(studies)]
    widths = [c.width for c in found if c.width is not None]
    return {"coverage": float(np.mean([_covers(c, STAR) for c in found])),
            "median_width": float(np.median(widths)) if widths else float("nan"),
            "located": float(np.mean([c.located() for c in found]))}


def test_crossing_finds_a_planted_crossing_per_source_and_their_geometric_mean():
    xs = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    truth = np.array([0.18, 0.22, 0.27])
    ratios = np.exp(LINE * (xs[None, :] / truth[:, None]) ** 2)
    c = crossing(xs, ratios)
    # straight lines between points 10 pp apart on a curve: each source's crossing within 1.5 pp
    assert np.allclose(c.per_source, truth, atol=0.015)
    assert c.estimate == pytest.approx(np.exp(np.mean(np.log(c.per_source))))
    assert c.low < c.estimate < c.high and c.open is None and c.gap == pytest.approx(0.1)
    fine = np.round(np.arange(0.15, 0.301, 0.01), 2)  # points 1 pp apart around the crossings
    f = crossing(fine, np.exp(LINE * (fine[None, :] / truth[:, None]) ** 2))
    assert np.allclose(f.per_source, truth, atol=0.001) and f.gap <= 0.01


def test_one_noisy_point_cannot_invent_a_crossing():
    xs = np.array([0.1, 0.2, 0.3, 0.4])
    ratios = np.array([[1.01, 1.08, 1.02, 1.03]])  # one point over the line, its neighbours under it
    c = crossing(xs, ratios)
    assert c.open == BEYOND and c.estimate is None  # pooled with its neighbours, the curve stays under 1.05


def test_a_curve_that_does_not_cross_in_range_says_on_which_side():
    xs = np.array([0.1, 0.2, 0.3])
    under = crossing(xs, np.full((3, 3), 1.01) + np.array([[0, 0.001, 0.002]]))
    assert under.open == BEYOND and under.estimate is None and under.high is None
    assert under.low == pytest.approx(0.3) and "beyond the highest point scored" in under.label()
    over = crossing(xs, np.full((3, 3), 1.2))
    assert over.open == BELOW and over.low is None and "below the lowest point scored" in over.label()


def _searched(truth: np.ndarray) -> tuple[list[float], object]:
    xs = [0.1, 0.3, 0.5]
    curve = lambda x: np.exp(LINE * (np.asarray(x)[None, :] / truth[:, None]) ** 2)  # noqa: E731
    ratios = curve(xs)
    while not crossing(xs, ratios).located() and len(xs) < 30:
        new = next_sparsities(xs, ratios)
        if not new:
            break
        assert all(min(abs(v - x) for x in xs) >= 0.0099 for v in new)  # never a point scored twice
        xs, ratios = [*xs, *new], np.hstack([ratios, curve(new)])
    return xs, crossing(xs, ratios)


def test_the_search_places_points_around_every_sources_crossing_and_then_stops():
    xs, c = _searched(np.array([0.215, 0.22, 0.226]))
    assert c.located() and np.allclose(c.per_source, [0.215, 0.22, 0.226], atol=0.002)
    assert len(xs) <= 15


def test_when_sources_disagree_more_points_stop_helping_and_the_search_says_so():
    """Two sources 4 pp apart: once both crossings are bracketed closely, the interval (set by the sources' spread,
    1 degree of freedom) is still wide, and next_sparsities has nothing left to add: more sources would help."""
    xs, c = _searched(np.array([0.2, 0.24]))
    assert not c.located() and c.width > 0.05 and c.gap <= 0.03
    assert next_sparsities(xs, np.exp(LINE * (np.asarray(xs)[None, :] / np.array([[0.2], [0.24]])) ** 2)) == []


@pytest.mark.parametrize("sources", [3, 5])
def test_the_per_point_interval_covers_under_paired_draws_and_a_shared_reference(sources):
    """judge's t interval at one fixed point, draws paired with one reference run per source: covers the
    population's ratio exp(E log R_s(x)) (x = 0.2: near the line, where it matters)."""
    seed = int(os.environ.get("GANLAB_SIM_SEED", time.time_ns() % 2**32))
    rng = np.random.default_rng(seed)
    tau, x = 0.15, 0.2
    truth = np.exp(LINE * (x / STAR) ** 2 * np.exp(2 * tau ** 2))  # exp E log R_s: c_s^-2 is lognormal
    hits, studies = 0, 2000
    for _ in range(studies):
        _, (xs, pruned, reference) = _study(rng, sources, tau, 0.0, "grid")
        k = int(np.argmin(abs(xs - x)))
        v = judge(list(pruned[:, k, :]), list(reference))
        hits += v.low <= truth <= v.high
    assert hits / studies >= 0.93, f"coverage {hits / studies:.3f} (seed {seed})"


CELLS = [(d, s, tau, 0.0) for d in ("grid", "search") for s in (3, 5) for tau in (0.05, 0.15)]


@pytest.mark.slow  # ~1 minute: 2,000 simulated studies in each of 8 cells
@pytest.mark.parametrize("design, sources, tau, shared", CELLS)
def test_the_crossings_interval_covers_s_star_in_the_studys_structure(design, sources, tau, shared):
    """>= 93 % at nominal 95 % with 2,000 studies: a true coverage of 91 % passes with probability ~0.001, a true
    95 % fails with ~2e-5 (binomial). The seed is drawn anew each run and printed on failure (GANLAB_SIM_SEED
    replays it)."""
    seed = int(os.environ.get("GANLAB_SIM_SEED", time.time_ns() % 2**32))
    got = coverage(seed, sources, tau, shared, design, 2000)
    assert got["coverage"] >= 0.93, f"{got} (seed {seed})"


@pytest.mark.slow
def test_a_shared_real_set_of_2000_images_breaks_the_coverage_the_whole_test_split_keeps():
    """The negative control: an effect shared by every source half the size of the between-source spread (a fixed
    2,000-image real set, issue 36) drops the search's coverage below 93 %; the simulation can see what it guards."""
    seed = int(os.environ.get("GANLAB_SIM_SEED", time.time_ns() % 2**32))
    got = coverage(seed, 5, 0.15, 0.5, "search", 2000)
    assert got["coverage"] < 0.925, f"{got} (seed {seed})"


if __name__ == "__main__":  # the table in docs/recovery.md
    print("| design | sources | between-source sd | shared effect | coverage | median width (pp) | located |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for design, sources, tau, shared in [*CELLS, *[(d, s, t, sh) for d in ("grid", "search") for s in (3, 5)
                                                   for t in (0.15,) for sh in (0.22, 0.5)]]:
        got = coverage(1, sources, tau, shared, design, 2000)
        print(f"| {design} | {sources} | {tau:.2f} | {shared:.2f} x sd | {got['coverage']:.3f} | "
              f"{100 * got['median_width']:.1f} | {got['located']:.2f} |", flush=True)


def test_the_report_gives_each_methods_crossing_and_keeps_it_through_grid_points_csv(tmp_path):
    """analysis/aggregate.py: add_verdicts keeps each source's ratio per point, verdict_answers reads the family's
    s* from them — also after grid_points.csv is written and read back, as results.md does."""
    import pandas as pd

    from analysis.aggregate import CONTROL_KEYS, add_verdicts, verdict_answers

    rng = np.random.default_rng(5)
    truth = {"s-a": 0.19, "s-b": 0.22, "s-c": 0.25}
    draws, rows, points = {}, [], []
    for k, x in enumerate([0.1, 0.15, 0.2, 0.25, 0.3]):
        ids = []
        for source, c in truth.items():
            dense = 20 + rng.normal(0, 0.05, 3)
            run = f"{source}-{k}"
            draws[run] = {"fcd": list(dense * np.exp(LINE * (x / c) ** 2)), "dense_fcd": list(dense)}
            rows.append({"run_id": run, "param_control": "False", "ganlab_source_run_id": source,
                         **{key: "x" for key in CONTROL_KEYS}})
            ids.append(run)
        points.append({"point": f"q={x}", "family": "percentage", "control": False, "n": 3, "sparsity_mean": x,
                       "run_ids": " ".join(ids)})
    judged = add_verdicts(pd.DataFrame(points), pd.DataFrame(rows), draws, 0.05)
    star = verdict_answers(judged).iloc[0]["crossing"]
    assert np.allclose(star.per_source, list(truth.values()), atol=0.01)
    assert star.low < np.exp(np.mean(np.log(list(truth.values())))) < star.high
    judged.to_csv(tmp_path / "grid_points.csv", index=False)
    again = verdict_answers(pd.read_csv(tmp_path / "grid_points.csv", dtype={"run_ids": str})).iloc[0]["crossing"]
    assert again == star
    from analysis.results import verdict_lines

    judged["fcd_mean"] = 20.0
    text = "\n".join(verdict_lines(judged, 0.05))
    assert f"- **percentage**: crossing **{star.label()}**" in text and star.label().startswith("s* 2")
    # one-shot points: the reference is the untouched dense source, so the second crossing would only repeat it
    assert "against the untouched dense source" not in text
