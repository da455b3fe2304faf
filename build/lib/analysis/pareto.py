"""The non-dominated front of sparsity (higher is better) against one quality metric."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

# direction of each quality metric: True when lower is better
from ganlab.schema import LOWER_IS_BETTER


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
    ge = (xs[:, None] >= xs[None, :]) & (ys[:, None] >= ys[None, :])  # ge[i, j]: i at least as good as j
    gt = (xs[:, None] > xs[None, :]) | (ys[:, None] > ys[None, :])
    dominated = (ge & gt).any(axis=0)
    return data[~dominated].sort_values([x, metric])
