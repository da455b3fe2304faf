"""The non-dominated front of sparsity (higher is better) against one quality metric."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

# direction of each quality metric: True when lower is better
from ganlab.tracking.schema import LOWER_IS_BETTER


def pareto_front(df: pd.DataFrame, metric: str, x: str = "sparsity",
                 lower_is_better: bool | None = None) -> pd.DataFrame:
    """Rows of ``df`` not dominated by another row, sorted by ``x``.

    Row a dominates row b when a is at least as sparse and at least as good on ``metric``, and
    strictly better in one of the two. Exact duplicates do not dominate each other, so both stay.
    Rows missing ``x`` or ``metric`` (absent, NaN or inf) are left out with a warning.
    """
    if lower_is_better is None:
        lower_is_better = LOWER_IS_BETTER[metric]
    if metric not in df or x not in df:
        warnings.warn(f"no run has both {x!r} and {metric!r}; the {metric} front is empty", stacklevel=2)
        return df.iloc[0:0]
    values = df[[x, metric]].apply(pd.to_numeric, errors="coerce")
    ok = np.isfinite(values).all(axis=1)
    if (~ok).any():
        warnings.warn(f"{int((~ok).sum())} run(s) without {x!r} or {metric!r} left out of the {metric} front",
                      stacklevel=2)
    data = df[ok]
    xs = values.loc[ok, x].to_numpy(float)
    ys = values.loc[ok, metric].to_numpy(float)
    ys = ys if not lower_is_better else -ys  # now higher is better on both axes
    return data[non_dominated(xs, ys)].sort_values([x, metric])


def non_dominated(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Mask of the points no other point dominates (higher is better on both axes), in O(N log N): sweep from the
    largest x down, one group of equal x at a time. In a group only its best y can survive (a worse y at the same
    x is dominated), and it survives unless a point of strictly larger x has a y at least as good."""
    keep = np.zeros(len(xs), bool)
    order = np.lexsort((-ys, -xs))  # x descending, then y descending
    best = -np.inf  # the best y among points of strictly larger x
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and xs[order[end]] == xs[order[start]]:
            end += 1
        group = order[start:end]
        top = ys[group[0]]
        if top > best:
            keep[group[ys[group] == top]] = True
        best = max(best, top)
        start = end
    return keep
