"""A verdict the noise cannot fake: is a pruned generator's FCD within 5 % of its reference's?

Each point is scored on K evaluation-noise draws, the same draws for the pruned generator and its reference
(the dense source, or the dense control fine-tuned exactly like it), on each of n dense sources. A source's
ratio is r_s = mean_k FCD_pruned / mean_k FCD_reference. The point's ratio is their geometric mean, and its
95 % interval a **Student t interval over the sources' log ratios**:

    exp( mean(log r) ± t_{0.975, n-1} · sd(log r) / sqrt(n) )

Why this and not a bootstrap: the question is about sources (does *this recipe* keep a generator within 5 %,
whichever dense model it starts from), so the sources are the sample, and with 3-8 of them the spread of the
sample is itself uncertain. A percentile bootstrap over 3 sources behaves like a z interval with the sample's
sd (1.96 where t with 2 degrees of freedom needs 4.30) and covers a true ratio 73-80 % of the time; the t
interval is exact when the log ratios are normal, and each r_s already carries its own draws' noise, so the
between-source sd estimate holds both. ``tests/test_verdict.py`` checks its coverage by simulation over 3, 5
and 8 sources, a between-source sd of 1-20 % and 2-10 draws (docs/recovery.md, "The interval").

With one source there is no between-source spread to estimate: the interval is then a t interval over the K
paired per-draw log ratios, and says nothing about other sources (the report shows n).

- **within** — the interval's upper end is <= 1 + tolerance, and no class is lost;
- **worse** — its lower end is > 1 + tolerance;
- **cannot tell** — otherwise (the interval straddles the line, or it is within but a class was lost).

A class is *lost* when, on some source, the pruned generator covers at least one class fewer than its reference
on average over the draws (per-draw coverage wobbles by a class between draws of the same generator: a single
draw's shortfall is noise, not a lost mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats


class Word(str, Enum):
    """A point's verdict, spelled here only (a str: it compares, serialises and prints as its word)."""

    WITHIN = "within"
    WORSE = "worse"
    CANNOT_TELL = "cannot tell"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


WITHIN, WORSE, CANNOT_TELL = Word.WITHIN, Word.WORSE, Word.CANNOT_TELL
LEVEL = 0.95
LOST_CLASS_MARGIN = 1.0  # classes fewer than the reference, mean over draws, on one source


@dataclass(frozen=True)
class Verdict:
    ratio: float  # geometric mean over sources of FCD_pruned / FCD_reference
    low: float  # 95 % t interval over the sources' log ratios
    high: float
    verdict: Word
    sources: int
    draws: int  # the fewest draws any source has
    lost_class: bool  # some source covers >= 1 class fewer than its reference, on average over its draws

    def label(self, tolerance: float = 0.05) -> str:
        text = f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] {self.verdict}"
        return text + (" (loses a class)" if self.lost_class else "")


def source_ratios(pruned: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    return np.array([np.mean(p) / np.mean(r) for p, r in zip(pruned, reference)])


def t_interval(logs: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """(centre, low, high) on the ratio scale of a t interval over ``logs`` (log ratios, >= 2 of them)."""
    logs = np.asarray(logs, float)
    n = len(logs)
    centre = logs.mean()
    half = stats.t.ppf(0.5 + level / 2, n - 1) * logs.std(ddof=1) / np.sqrt(n)
    return float(np.exp(centre)), float(np.exp(centre - half)), float(np.exp(centre + half))


def ratio_interval(pruned: list, reference: list, level: float = LEVEL) -> tuple[float, float, float]:
    """(ratio, low, high): over sources when there are >= 2, else over the one source's paired draws."""
    pruned = [np.asarray(p, float) for p in pruned]
    reference = [np.asarray(r, float) for r in reference]
    if len(pruned) >= 2:
        return t_interval(np.log(source_ratios(pruned, reference)), level)
    per_draw = np.log(pruned[0] / reference[0])
    if np.ptp(per_draw) == 0:  # identical paired draws (a generator against itself): no spread at all
        value = float(np.exp(per_draw[0]))
        return value, value, value
    _, low, high = t_interval(per_draw, level)
    return float(np.mean(pruned[0]) / np.mean(reference[0])), low, high


def lost_a_class(coverage: list, reference_coverage: list, margin: float = LOST_CLASS_MARGIN) -> bool:
    return any(np.mean(rc) - np.mean(c) >= margin for c, rc in zip(coverage, reference_coverage))


def judge(pruned: list, reference: list, coverage: list | None = None, reference_coverage: list | None = None,
          tolerance: float = 0.05) -> Verdict:
    """The verdict from per-source arrays of per-draw FCDs (pruned[s][k] paired with reference[s][k]) and,
    optionally, the per-draw class coverage of both."""
    if not pruned or len(pruned) != len(reference):
        raise ValueError("judge needs the same number (>= 1) of sources for the pruned and the reference draws")
    pruned = [np.asarray(p, float) for p in pruned]
    reference = [np.asarray(r, float) for r in reference]
    for p, r in zip(pruned, reference):
        if len(p) != len(r) or len(p) < 2:
            raise ValueError("each source needs the same K >= 2 draws for the pruned and the reference generator")
    ratio, low, high = ratio_interval(pruned, reference)
    lost = bool(coverage is not None and reference_coverage is not None
                and lost_a_class(coverage, reference_coverage))
    line = 1 + tolerance
    if low > line:
        verdict = WORSE
    elif high <= line and not lost:
        verdict = WITHIN
    else:
        verdict = CANNOT_TELL
    return Verdict(ratio, low, high, verdict, len(pruned), min(len(p) for p in pruned), lost)


# ---- one point's verdict, its inputs prepared once: the frontier search and the report both call this ---------

FIGURES = {"fcd_inf": "FCD∞", "fcd": "FCD"}  # what a verdict can read, as the report names it
DENSE_CONTROL, DENSE = "dense control", "dense"  # the reference a verdict read


@dataclass(frozen=True)
class PointVerdict:
    """A point's verdict against its reference, and against the untouched dense source whatever the reference."""

    verdict: Verdict
    against_dense: Verdict
    figure: str  # fcd_inf | fcd
    reference: str  # DENSE_CONTROL when every source had a control with the figure, else DENSE
    ratios: tuple[float, ...] = ()  # each source's ratio to its reference (the crossing reads these)
    dense_ratios: tuple[float, ...] = ()  # ... and to its untouched dense source


def verdict_figure(runs: list[dict]) -> str:
    """The figure a point's verdict reads: FCD∞ (no small-sample bias) when every run logged it per draw, for the
    pruned generator and its dense source, else FCD (older runs)."""
    return "fcd_inf" if all(r.get("fcd_inf") and r.get("dense_fcd_inf") for r in runs) else "fcd"


def judge_point(runs: list[dict], controls: list[dict | None] | None = None, tolerance: float = 0.05) -> PointVerdict:
    """A point's verdict from its runs' per-draw values, one dict per source (``fcd``, ``fcd_inf``, ``coverage``
    and the run's own dense source's ``dense_fcd``, ``dense_fcd_inf``, ``dense_coverage``), against the dense
    control fine-tuned like it on the same source (``controls``, aligned with ``runs``; None where a source has
    none) — or, for a source whose control is missing or lacks the figure, against that run's untouched dense
    source. Class coverage counts only when every run and reference logged it. Decided here once."""
    controls = list(controls) if controls is not None else [None] * len(runs)
    figure = verdict_figure(runs)
    pruned, reference, cov, ref_cov, used = [], [], [], [], []
    for run, control in zip(runs, controls):
        own = bool(control) and bool(control.get(figure))
        pruned.append(run[figure])
        reference.append(control[figure] if own else run["dense_" + figure])
        cov.append(run.get("coverage") or [])
        ref_cov.append((control.get("coverage") if own else run.get("dense_coverage")) or [])
        used.append(own)
    counted = all(len(c) for c in cov) and all(len(c) for c in ref_cov)
    verdict = judge(pruned, reference, cov if counted else None, ref_cov if counted else None, tolerance)
    dense_draws = [r["dense_" + figure] for r in runs]
    dense = judge(pruned, dense_draws, tolerance=tolerance)
    return PointVerdict(verdict, dense, figure, DENSE_CONTROL if all(used) else DENSE,
                        tuple(map(float, source_ratios(pruned, reference))),
                        tuple(map(float, source_ratios(pruned, dense_draws))))


# ---- the crossing: where a method's ratio reaches the line -------------------------------------------------------

BELOW, BEYOND = "below the lowest point scored", "beyond the highest point scored"


@dataclass(frozen=True)
class Crossing:
    """s*, a method's crossing: the typical source's sparsity where its ratio reaches the threshold (the geometric
    mean over sources of each source's crossing), with a t interval over the sources' log crossings.

    ``estimate``, ``low``, ``high`` are fractions; None where the data cannot give them: a source whose fitted
    curve never reaches the line inside the scored range is censored (``open`` says on which side), and the
    interval is then open on that side. ``per_source`` holds each source's crossing (NaN where censored)."""

    estimate: float | None
    low: float | None
    high: float | None
    per_source: tuple[float, ...]
    open: str | None = None  # BELOW | BEYOND | None
    sources: int = 0
    level: float = LEVEL
    gap: float | None = None  # the widest gap between the two scored points that bracket a source's crossing

    def located(self, width: float = 0.05, gap: float = 0.03) -> bool:
        """Whether s* is located: its interval at most ``width`` wide, and every source's crossing read between
        scored points at most ``gap`` apart. The second matters as much: a straight line between far points of a
        curved ratio misplaces every source's crossing the same way, a shared error the interval over sources
        cannot see (tests/test_crossing.py measures it)."""
        return self.width is not None and self.width <= width and self.gap is not None and self.gap <= gap

    @property
    def width(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low

    def label(self) -> str:
        pct = lambda v: "open" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        if self.estimate is None:
            side = "all" if self.open and all(np.isnan(self.per_source)) else "some"
            return f"s* {self.open} ({side} of {self.sources} sources), interval [{pct(self.low)}, {pct(self.high)}]"
        if self.sources < 2:
            return f"s* {pct(self.estimate)} (one source: no interval over sources)"
        return f"s* {pct(self.estimate)} [{pct(self.low)}, {pct(self.high)}]"


def source_crossing(sparsity: np.ndarray, log_ratio: np.ndarray, line: float) -> tuple[float, str | None]:
    """One source's crossing of ``line`` (a log ratio): the centred isotonic regression of its log ratios on
    sparsity (Oron & Flournoy 2017: a monotone fit, each flat block of the pool-adjacent-violators fit put at its
    mean sparsity, joined by straight lines) read where it reaches the line. A lone noisy point cannot invent a
    crossing: it is pooled with its neighbours. (crossing, None), or (NaN, BELOW | BEYOND) when the fitted curve is
    above the line at the lowest point or below it at the highest."""
    from scipy.optimize import isotonic_regression

    order = np.argsort(sparsity)
    x, y = np.asarray(sparsity, float)[order], np.asarray(log_ratio, float)[order]
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return float("nan"), None
    fit = isotonic_regression(y, increasing=True)
    blocks = np.asarray(fit.blocks)
    centres = np.array([x[a:b].mean() for a, b in zip(blocks[:-1], blocks[1:])])
    levels = fit.x[blocks[:-1]]
    if levels[0] >= line:
        return (float(centres[0]) if levels[0] == line else float("nan")), (None if levels[0] == line else BELOW)
    if levels[-1] < line:
        return float("nan"), BEYOND
    k = int(np.argmax(levels >= line))  # the first block at or above the line; block k-1 is below it
    x0, x1, y0, y1 = centres[k - 1], centres[k], levels[k - 1], levels[k]
    return float(x0 + (line - y0) * (x1 - x0) / (y1 - y0)), None


def crossing(sparsity, ratios, threshold: float = 1.05, level: float = LEVEL) -> Crossing:
    """s* from ``ratios`` of shape (S, P) — each source's ratio to its reference at each of the P points whose
    sparsities (fractions) are ``sparsity``, shape (P,); NaN where a source was not scored at a point.

    Each source's crossing comes from a monotone fit (:func:`source_crossing`); s* is their geometric mean, and its
    interval a Student t interval over the sources' log crossings (the sources are the sample, as in
    :func:`judge`). A source censored above (its curve stays under the line up to the highest point scored)
    enters the lower end at that highest point and leaves the upper end open; censored below, the reverse."""
    sparsity = np.asarray(sparsity, float)
    ratios = np.atleast_2d(np.asarray(ratios, float))
    if ratios.shape[1] != len(sparsity) or len(sparsity) < 1:
        raise ValueError(f"ratios must be (sources, points) with points = len(sparsity) = {len(sparsity)}, got "
                         f"{ratios.shape}")
    line = float(np.log(threshold))
    found = [source_crossing(sparsity, np.log(r), line) for r in ratios]
    found = [(float(c), side) for c, side in found]
    values = np.array([c for c, _ in found])
    sides = {side for _, side in found if side}
    open_ = BEYOND if BEYOND in sides else (BELOW if sides else None)
    n, per = len(values), tuple(map(float, values))
    scored = sparsity[~np.isnan(ratios).all(axis=0)]
    gap = _bracket_gap(np.unique(scored), values)
    if n < 2:
        return Crossing(None if np.isnan(values[0]) else per[0], None, None, per, open_, n, level, gap)
    filled = values.copy()
    filled[[side == BEYOND for _, side in found]] = scored.max()
    filled[[side == BELOW for _, side in found]] = scored.min()
    if (filled <= 0).any() or (BELOW in sides and BEYOND in sides):  # nothing can be said
        return Crossing(None, None, None, per, open_ or BELOW, n, level, gap)
    centre, low, high = t_interval(np.log(filled), level)
    if BEYOND in sides:
        return Crossing(None, low, None, per, BEYOND, n, level, gap)
    if BELOW in sides:
        return Crossing(None, None, high, per, BELOW, n, level, gap)
    return Crossing(centre, low, high, per, None, n, level, gap)


def _bracket_gap(scored: np.ndarray, crossings: np.ndarray) -> float | None:
    """The widest distance between the scored points just below and just above a source's crossing."""
    gaps = []
    for c in crossings[~np.isnan(crossings)]:
        below, above = scored[scored <= c], scored[scored >= c]
        if len(below) and len(above):
            gaps.append(above.min() - below.max())
    return float(max(gaps)) if gaps else None


def next_sparsities(sparsity, ratios, threshold: float = 1.05, spacing: float = 0.01, lowest: float = 0.0,
                    highest: float = 1.0) -> list[float]:
    """Where to score next to narrow s*'s interval: around each source's own crossing — the estimate, the lowest
    and the highest source's crossing, each with a point ``spacing`` either side — so that every source's crossing
    is bracketed by points close to it and interpolated, not extrapolated (a straight line between far points of a
    curved ratio misplaces it); past the highest (lowest) point scored while the curve has not crossed there.
    Points closer than ``spacing`` to one already scored (or proposed) are left out; [] when nothing new would
    help."""
    sparsity = np.asarray(sparsity, float)
    c = crossing(sparsity, ratios, threshold)
    if c.open == BEYOND:
        wanted = [sparsity.max() + max(0.1, (highest - sparsity.max()) / 2)]
    elif c.open == BELOW:
        wanted = [sparsity.min() / 2]
    else:
        each = np.array(c.per_source)
        centres = [c.estimate if c.estimate is not None else float(np.nanmean(each))]
        if len(each) > 1:
            centres += [float(np.nanmin(each)), float(np.nanmax(each))]
        wanted = [v + d for v in centres for d in (0.0, -spacing, spacing)]
    out: list[float] = []
    for v in wanted:
        v = round(float(np.clip(v, lowest, highest)), 4)
        if all(abs(v - s) >= spacing * 0.999 for s in [*sparsity, *out]):
            out.append(v)
    return out
