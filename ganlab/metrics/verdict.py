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

import numpy as np
from scipy import stats

WITHIN, WORSE, CANNOT_TELL = "within", "worse", "cannot tell"
LEVEL = 0.95
LOST_CLASS_MARGIN = 1.0  # classes fewer than the reference, mean over draws, on one source


@dataclass(frozen=True)
class Verdict:
    ratio: float  # geometric mean over sources of FCD_pruned / FCD_reference
    low: float  # 95 % t interval over the sources' log ratios
    high: float
    verdict: str  # within | worse | cannot tell
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
