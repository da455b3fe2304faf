"""What pruning buys, in a picture: quality against the generator's stored bytes and its measured latency, every
method on one axis, ``ganlab compress`` files at their real size, the dense generator as a star, the front dashed."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.pareto import pareto_front
from analysis.plots import METHOD_COLORS, finetuned, legend_place, y_axis


def cost_plots(df: pd.DataFrame, compressed: pd.DataFrame, out: Path, metric: str = "fcd") -> Path | None:
    """What the pruning buys: ``metric`` against the generator's stored bytes (log x) and against its
    measured latency, every method on one axis, the dense generator as a star, the front dashed.

    The plotted points go to ``cost_<metric>.csv`` beside the figure. Stored bytes: a channel-pruned
    generator's dense fp32 tensors, an unstructured one's Deep-Compression sparse format (values +
    8-bit relative indices), and each ``ganlab compress`` file's real size.
    """
    axes_spec = [("size_sparse_bytes_generator", "size_dense_bytes_generator", "generator bytes stored (log)"),
                 ("latency_ms_generator", "dense_latency_ms_generator", "latency of one batch, ms")]
    axes_spec = [a for a in axes_spec if a[0] in df and pd.to_numeric(df[a[0]], errors="coerce").notna().any()]
    if metric not in df or not axes_spec:
        return None
    fig, axes = plt.subplots(1, len(axes_spec), figsize=(6.4 * len(axes_spec), 4.6), squeeze=False)
    ft = finetuned(df)
    tables = []
    for ax, (x, dense_x, label) in zip(axes[0], axes_spec):
        points = _method_costs(ax, df, ft, x, metric)
        if x.startswith("size") and len(compressed) and "file_bytes" in compressed and metric in compressed:
            points.append(_compressed_costs(ax, compressed, x, metric))
        if dense_x in df and "dense_" + metric in df:
            ax.scatter(pd.to_numeric(df[dense_x]).median(), pd.to_numeric(df["dense_" + metric]).median(),
                       marker="*", s=180, c="gold", edgecolor="k", label="dense generator", zorder=4)
        if points:
            tables.append(_cost_front(ax, pd.concat(points, ignore_index=True), x, metric))
        if x.startswith("size"):
            ax.set_xscale("log")
        ax.set_xlabel(f"{label} (← cheaper)")
        y_axis(ax, metric, pd.to_numeric(df[metric], errors="coerce"),
                pd.to_numeric(compressed[metric], errors="coerce") if metric in compressed else [])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc=legend_place(df))
    fig.suptitle(f"What pruning buys: {metric} against size and speed of the generator")
    fig.tight_layout()
    path = out / f"cost_{metric}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if tables:  # the plotted points, for a spreadsheet
        pd.concat(tables, ignore_index=True).to_csv(out / f"cost_{metric}.csv", index=False)
    return path


def _method_costs(ax, df: pd.DataFrame, finetuned: pd.Series, x: str, metric: str) -> list[pd.DataFrame]:
    """Each method's runs (fine-tuned or not) at their cost ``x``; the plotted rows."""
    points = []
    for method, color in METHOD_COLORS.items():
        for tuned, marker in ((False, "o"), (True, "^")):
            sel = df[(df.get("param_method") == method) & (finetuned == tuned)]
            if len(sel):
                ax.scatter(sel[x], sel[metric], c=color, marker=marker, s=46, edgecolor="k", linewidth=0.5,
                           label=f"{method}{' + fine-tuned' if tuned else ''}", zorder=3)
                points.append(sel[[x, metric, "run_id"]].assign(kind=method + (" + fine-tuned" if tuned else "")))
    return points


def _compressed_costs(ax, compressed: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    """Each `ganlab compress` file at its real size, labelled with its bits; the plotted rows."""
    bits = compressed.get("param_bits", pd.Series("?", index=compressed.index))
    ax.scatter(compressed["file_bytes"], compressed[metric], c="tab:purple", marker="s", s=46,
               edgecolor="k", linewidth=0.5, label="compressed file (ganlab compress)", zorder=3)
    for (_, row), b in zip(compressed.iterrows(), bits):
        ax.annotate(f"{b}-bit", (row["file_bytes"], row[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    return compressed[["file_bytes", metric, "run_id"]].rename(columns={"file_bytes": x}).assign(kind="compressed file")


def _cost_front(ax, points: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    """The best quality reachable at each cost or less, dashed; the plotted points as a table."""
    points = points.copy()
    points[[x, metric]] = points[[x, metric]].apply(pd.to_numeric, errors="coerce")
    points = points[np.isfinite(points[[x, metric]]).all(axis=1)]
    points["cheapness"] = -points[x]  # fewer bytes / less time is better, like more sparsity
    front = pareto_front(points, metric, x="cheapness").sort_values(x)
    ax.step(front[x], front[metric], where="post", color="k", linestyle="--", linewidth=1, label="Pareto front",
            zorder=2)
    return points.drop(columns="cheapness").rename(columns={x: "cost", metric: "value"}).assign(cost_axis=x,
                                                                                                metric=metric)
