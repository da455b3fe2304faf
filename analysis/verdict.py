"""A verdict the noise cannot fake: is a pruned generator's FCD within 5 % of its reference's?

Each point is scored on K evaluation-noise draws, the same draws for the pruned generator and its reference
(the dense source, or the dense control fine-tuned exactly like it), for each dense source. The ratio of a
source is mean_k FCD_pruned / mean_k FCD_reference; the point's ratio is the mean over sources. Its 95 %
interval is a two-level bootstrap: resample the sources, then the draws within each chosen source, pruned and
reference together (paired). Then:

- **within** — the interval's upper end is <= 1 + tolerance, and no draw lost a class the reference covers;
- **worse** — its lower end is > 1 + tolerance;
- **cannot tell** — otherwise (the interval straddles the line, or it is within but a class was lost).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WITHIN, WORSE, CANNOT_TELL = "within", "worse", "cannot tell"
BOOTSTRAP_REPS = 4000


@dataclass(frozen=True)
class Verdict:
    ratio: float  # mean over sources of FCD_pruned / FCD_reference
    low: float  # 95 % two-level bootstrap interval
    high: float
    verdict: str  # within | worse | cannot tell
    sources: int
    draws: int  # the fewest draws any source has
    lost_class: bool  # some draw covers fewer classes than the reference's same draw

    def label(self, tolerance: float = 0.05) -> str:
        text = f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] {self.verdict}"
        return text + (" (loses a class)" if self.lost_class else "")


def source_ratios(pruned: list[np.ndarray], reference: list[np.ndarray]) -> np.ndarray:
    return np.array([np.mean(p) / np.mean(r) for p, r in zip(pruned, reference)])


def bootstrap_interval(pruned: list[np.ndarray], reference: list[np.ndarray], reps: int = BOOTSTRAP_REPS,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Two-level paired bootstrap of the mean over sources of mean(pruned) / mean(reference), all replicates at
    once: for each of the n slots of a replicate, a source drawn at random and, for every source, its draws
    resampled afresh (the same indices for pruned and reference: paired), so each slot's ratio is the chosen
    source's resampled ratio. O(n^2 * reps * K) array work, n (sources) being a handful."""
    rng = np.random.default_rng(seed)
    n = len(pruned)
    chosen = rng.integers(0, n, size=(reps, n))
    slots = np.empty((reps, n))
    for j in range(n):
        per_source = np.empty((reps, n))
        for s in range(n):
            p, r = np.asarray(pruned[s], float), np.asarray(reference[s], float)
            k = rng.integers(0, len(p), size=(reps, len(p)))
            per_source[:, s] = p[k].mean(axis=1) / r[k].mean(axis=1)
        slots[:, j] = per_source[np.arange(reps), chosen[:, j]]
    stats = slots.mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def judge(pruned: list, reference: list, coverage: list | None = None, reference_coverage: list | None = None,
          tolerance: float = 0.05, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Verdict:
    """The verdict from per-source arrays of per-draw FCDs (pruned[s][k] paired with reference[s][k]) and,
    optionally, the per-draw class coverage of both."""
    if not pruned or len(pruned) != len(reference):
        raise ValueError("judge needs the same number (>= 1) of sources for the pruned and the reference draws")
    pruned = [np.asarray(p, float) for p in pruned]
    reference = [np.asarray(r, float) for r in reference]
    for p, r in zip(pruned, reference):
        if len(p) != len(r) or len(p) < 2:
            raise ValueError("each source needs the same K >= 2 draws for the pruned and the reference generator")
    ratio = float(source_ratios(pruned, reference).mean())
    low, high = bootstrap_interval(pruned, reference, reps, seed)
    lost = bool(coverage is not None and reference_coverage is not None and any(
        np.any(np.asarray(c) < np.asarray(rc)) for c, rc in zip(coverage, reference_coverage)))
    line = 1 + tolerance
    if low > line:
        verdict = WORSE
    elif high <= line and not lost:
        verdict = WITHIN
    else:
        verdict = CANNOT_TELL
    return Verdict(ratio, low, high, verdict, len(pruned), min(len(p) for p in pruned), lost)
