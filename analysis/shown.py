"""Which grid points a report names and shows: every one of a small sweep; of a large one, the points on each
metric's Pareto front (evenly thinned) and the operating point — 10,000 labels are a black smudge."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import aggregate

ALL_SHOWN = 24  # up to this many grid points, every one is labelled and gets its image strip
MAX_SHOWN = 16  # beyond, the front's points (evenly spread by sparsity) and the operating point: what a reader compares


def labelled_points(points: pd.DataFrame, front: pd.DataFrame, metric: str = "fcd") -> set[str]:
    """The grid points whose amount a Pareto plot of ``metric`` writes beside its marker: every one in a small
    sweep; in a large one the points on that metric's front (at most MAX_SHOWN, evenly spread over sparsity) and
    the operating point (10,000 labels are a black smudge)."""
    if len(points) <= ALL_SHOWN:
        return set(points["point"])
    return set(_front_names(front, metric)) | _operating(points)


def _front_names(front: pd.DataFrame, metric: str) -> list[str]:
    """The points on ``metric``'s front by sparsity, evenly thinned to MAX_SHOWN - 1."""
    if "on_front" not in front or not len(front):
        return []
    on = on_front(front, metric).sort_values("sparsity_mean")
    names = list(on["point"])
    if len(names) > MAX_SHOWN - 1:
        names = [names[round(i)] for i in np.linspace(0, len(names) - 1, MAX_SHOWN - 1)]
    return names


def on_front(front: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of front_table's table on ``metric``'s front (its on_front names them, ';'-separated)."""
    return front[front["on_front"].str.split(";").apply(lambda m: metric in m)]


def _operating(points: pd.DataFrame) -> set[str]:
    best = aggregate.operating_point(points)
    return {best["point"]} if best is not None else set()


def shown_points(points: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """The grid points drawn as image strips and in the per-layer heatmap, by method then sparsity: all of a small
    sweep; of a large one, the FCD front's points (at most MAX_SHOWN, evenly spread over sparsity) and the
    operating point, whose artifacts are the only ones downloaded."""
    if len(points) <= ALL_SHOWN:
        return points.sort_values(["param_method", "sparsity_mean"])
    names = set(_front_names(front, "fcd")) | _operating(points)
    return points[points["point"].isin(names)].sort_values(["param_method", "sparsity_mean"])
