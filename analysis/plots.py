"""The pictures: Pareto fronts, sensitivity vs percentage, pruning strips, per-layer heatmap, sweep views."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from analysis.aggregate import dense_value  # noqa: E402
from analysis.pareto import pareto_front  # noqa: E402
from analysis.runs import amount_label  # noqa: E402
from ganlab.tracking import schema  # noqa: E402
from ganlab.tracking.schema import LOWER_IS_BETTER  # noqa: E402

METHOD_COLORS = {"sensitivity": "tab:blue", "percentage": "tab:orange", "channel": "tab:green"}
METRIC_LABELS = schema.LABELS


def _better(metric: str) -> str:
    return "lower is better ↓" if LOWER_IS_BETTER[metric] else "higher is better ↑"


LOG_WHEN_SPAN = 8.0  # a distance metric whose values span more than this factor is drawn on a log axis


def log_scale(metric: str, *values) -> bool:
    """Whether ``metric``'s axis should be logarithmic: a distance (FCD, KID) whose positive values span more
    than LOG_WHEN_SPAN times, as when collapsed generators sit beside the dense model and its 5 % band (a
    linear axis flattens the band, where the answer is read, to a line)."""
    if metric not in ("fcd", "kid"):
        return False
    v = pd.to_numeric(pd.concat([pd.Series(np.ravel(x), dtype=float) for x in values]), errors="coerce")
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool((v > 0).all()) and v.max() / v.min() > LOG_WHEN_SPAN


def y_axis(ax, metric: str, *values) -> None:
    """The y label, on a log axis where ``log_scale`` says so."""
    log = log_scale(metric, *values)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(f"{METRIC_LABELS[metric]}  ({_better(metric)}{', log scale' if log else ''})")


def finetuned(df: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(df.get("param_finetune_epochs", 0), errors="coerce").fillna(0) > 0


def _recalibrated(df: pd.DataFrame) -> pd.Series:
    """Runs whose generator's BatchNorm statistics were re-estimated after pruning (older runs: not)."""
    return df.get("param_bn_recalibrate", pd.Series("False", index=df.index)).fillna("False").astype(str) == "True"


def _reference(ax, points: pd.DataFrame, metric: str, tolerance: float) -> None:
    """The dense model's value as a line and the tolerance band around it (on the worse side)."""
    dense = dense_value(points, metric)
    if dense is None:
        return
    edge = dense * (1 + tolerance) if LOWER_IS_BETTER[metric] else dense * (1 - tolerance)
    ax.axhline(dense, color="gold", linewidth=2, zorder=1, label=f"dense model ({dense:.3g})")
    ax.axhspan(min(dense, edge), max(dense, edge), color="gold", alpha=0.18, zorder=0,
               label=f"within {tolerance:.0%} of dense")


def _rewound(df: pd.DataFrame) -> pd.Series:
    """Lottery-ticket runs: surviving weights rewound to an early epoch and retrained."""
    value = df.get("param_rewind_epoch", pd.Series("none", index=df.index)).astype(str)
    return ~value.isin(["none", "", "nan", "None"])


def family_colors(families) -> dict[str, str]:
    """One colour per method family (pruning method + recovery, controls, sparse training), stable by name."""
    palette = [matplotlib.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]  # hues first
    return {f: palette[i % 20] for i, f in enumerate(sorted(families))}


def family_marker(family: str) -> str:
    if family.startswith("dense control"):
        return "s"
    if family.startswith("sparse training"):
        return "*"
    return "^" if "+" in family else "o"


def _label_once(ax, text: str, x: float, y: float, placed: list) -> None:
    """An amount label beside its point, unless one sits within a few pixels already (several methods share an
    amount: 's=1.5' twice on one spot is unreadable); close ones are moved down instead of drawn over."""
    px, py = ax.transData.transform((x, y))  # before autoscaling ends: close enough to find near neighbours
    offset = 3
    for qx, qy, qtext in placed:
        if abs(px - qx) < 30 and abs(py - qy) < 9:
            if qtext == text:
                return
            offset -= 9
    placed.append((px, py, text))
    ax.annotate(text, (x, y), fontsize=7, xytext=(4, offset), textcoords="offset points")


def legend_place(points: pd.DataFrame) -> str:
    """matplotlib's "best" tries every spot against every marker: seconds a plot at thousands of points."""
    return "best" if len(points) <= 200 else "upper left"


def pareto_plot(points: pd.DataFrame, metric: str, out: Path, tolerance: float = 0.05,
                labelled: set[str] | None = None, frontiers: dict | None = None) -> tuple[Path, pd.DataFrame]:
    """Sparsity (x) against ``metric`` (y) per grid point: mean +- std over the sweep's sources as error
    bars, coloured by method, marked by fine-tuning, hollow without BN recalibration; the dense model's
    value as a line with the tolerance band; the front (on the means) as steps. Amount labels on the points
    named in ``labelled`` (default: all). A frontier search's ``frontiers``: a marker and a bracket per family."""
    y, x = f"{metric}_mean", "sparsity_mean"
    with warnings.catch_warnings():  # the front table (aggregate.front_table) warns about left-out points
        warnings.simplefilter("ignore")
        front = pareto_front(points, y, x=x, lower_is_better=LOWER_IS_BETTER[metric])
    fig, ax = plt.subplots(figsize=(7, 4.8))
    n_max = int(points["n"].max()) if len(points) else 1
    _family_points(ax, points, metric, labelled)
    _reference(ax, points, metric, tolerance)
    if frontiers:
        from analysis.frontiers import mark_frontiers

        mark_frontiers(ax, frontiers)
    if len(front):
        ax.step(front[x], front[y], where="pre",  # best quality reachable at sparsity >= x
                color="k", linestyle="--", linewidth=1, label="Pareto front" + (" (of the means)" if n_max > 1 else ""),
                zorder=2)
    ax.set_xlabel("sparsity of the pruned network (higher = more pruned →)")
    values = pd.to_numeric(points[y], errors="coerce") if y in points else pd.Series(dtype=float)
    y_axis(ax, metric, values, [dense_value(points, metric) or np.nan])
    ax.set_title(f"Sparsity vs {METRIC_LABELS[metric]}" + (f"\nmean ± std over up to {n_max} dense models"
                                                           if n_max > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=legend_place(points))
    fig.tight_layout()
    path = out / f"pareto_{metric}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, front


def _family_points(ax, points: pd.DataFrame, metric: str, labelled: set[str] | None) -> None:
    """Each method family's grid points: mean with std error bars, hollow without BN recalibration, amount labels
    on the ``labelled`` points (default: all) where they do not overlap."""
    y, x = f"{metric}_mean", "sparsity_mean"
    bn = _recalibrated(points)
    n_max = int(points["n"].max()) if len(points) else 1
    families = sorted(points["family"].unique()) if "family" in points else []
    colors = family_colors(families)
    placed: list[tuple[float, float, str]] = []  # where amount labels already sit, in display pixels
    for family in families:
        for recal in (True, False):
            sel = points[(points["family"] == family) & (bn == recal)]
            sel = sel[np.isfinite(pd.to_numeric(sel[y], errors="coerce"))] if y in sel else sel.iloc[0:0]
            if not len(sel):
                continue
            color, marker = colors[family], family_marker(family)
            n = f", n={int(sel['n'].min())}" + (f"–{int(sel['n'].max())}" if sel["n"].nunique() > 1 else "")
            label = family + ("" if recal else ", no BN recal.")
            if n_max > 1:
                ax.errorbar(sel[x], sel[y], xerr=sel["sparsity_std"], yerr=sel[f"{metric}_std"], fmt="none",
                            ecolor=color, elinewidth=1, capsize=2, zorder=2)
            size = 46 if len(points) <= 200 else 12  # thousands of points: small markers, or one blot
            ax.scatter(sel[x], sel[y], color=color if recal else "none", marker=marker, s=size,
                       edgecolor="k" if recal else color, linewidth=0.5 if recal else 1.5,
                       label=label + (n if n_max > 1 else ""), zorder=3)
            for _, row in sel[sel["point"].isin(labelled)].iterrows() if labelled is not None else sel.iterrows():
                _label_once(ax, amount_label(row), row[x], row[y], placed)


def method_comparison(points: pd.DataFrame, out: Path, metrics=("ssim_mean", "fcd"), tolerance: float = 0.05) -> Path:
    """The seed's 'sensitivity vs percentage pruning': quality against sparsity per method, one axis each
    (grid-point means, with std error bars when the sweep had several sources)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2))
    several = len(points) and points["n"].max() > 1
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        y = f"{metric}_mean"
        for method, color in METHOD_COLORS.items():
            for tuned, style in ((False, "-"), (True, ":")):
                sel = points[(points.get("param_method") == method) & (finetuned(points) == tuned)
                             & ~_rewound(points)]
                sel = sel if y in sel else sel.iloc[0:0]
                if _recalibrated(sel).any():  # one line per method: the recalibrated points where there are some
                    sel = sel[_recalibrated(sel)]
                if not len(sel):
                    continue
                sel = sel.sort_values("sparsity_mean")
                ax.errorbar(sel["sparsity_mean"], sel[y], yerr=sel[f"{metric}_std"] if several else None,
                            fmt=style, marker="o", color=color, capsize=2,
                            label=f"{method}{' + fine-tuned' if tuned else ''}")
        _reference(ax, points, metric, tolerance)
        ax.set_xlabel("sparsity (→ more pruned)")
        y_axis(ax, metric, pd.to_numeric(points[y], errors="coerce") if y in points else [],
                [dense_value(points, metric) or np.nan])
        ax.set_title(f"Sensitivity vs percentage pruning: {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "sensitivity_vs_percentage.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _font(size: int):
    """A readable TrueType font (matplotlib ships DejaVu Sans), else PIL's default at that size."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default(size)


def pruning_strips(rows: list[tuple[str, Path]], out: Path) -> Path:
    """'Different degrees of pruning': one labelled row of images per level, the same noise in each."""
    images = [(label, Image.open(p).convert("RGB")) for label, p in rows]
    scale = max(1, 96 // min(im.height for _, im in images))  # 32 px samples are too small to judge
    images = [(label, im.resize((im.width * scale, im.height * scale), Image.NEAREST)) for label, im in images]
    font = _font(15)
    label_w = 20 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label, font=font))
                       for label, _ in images)
    width = label_w + max(im.width for _, im in images)
    height = sum(im.height + 6 for _, im in images) + 6
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 6
    for label, im in images:
        draw.text((8, y + im.height // 2 - 9), label, fill="black", font=font)
        canvas.paste(im, (label_w, y))
        y += im.height + 6
    path = out / "pruning_strips.png"
    canvas.save(path)
    return path


def layer_heatmap(tables: dict[str, pd.DataFrame], out: Path) -> Path:
    """Per-layer sparsity (layers x pruning level) from the runs' sparsity/generator.csv tables."""
    columns = {}
    for label, table in tables.items():
        t = table[table["layer"].astype(str) != "total"]
        index = [f"layer {layer} ({kind})" for layer, kind in zip(t["layer"], t["type"])]
        columns[label] = pd.Series(t["sparsity"].to_numpy(float), index=index)
    grid = pd.DataFrame(columns)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * grid.shape[1] + 3), 0.6 * grid.shape[0] + 2))
    im = ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, label="sparsity of the layer")
    ax.set_title("Per-layer sparsity of the generator at each pruning level")
    fig.tight_layout()
    path = out / "layer_sparsity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_views(trials: pd.DataFrame, objective: str, out: Path) -> Path | None:
    """The objective against each searched hyperparameter; collapsed/diverged trials marked."""
    hp = [c for c in ("param_lr_d", "param_lr_g", "param_beta1", "param_batch_size", "param_d_steps",
                      "param_label_smoothing", "param_ngf", "param_ndf")
          if c in trials and trials[c].nunique() > 1]
    if objective not in trials or not hp:
        return None
    status = trials.get("ganlab_status", pd.Series("ok", index=trials.index)).fillna("ok")
    fig, axes = plt.subplots(1, len(hp), figsize=(3.6 * len(hp), 3.6), squeeze=False)
    for ax, col in zip(axes[0], hp):
        x = pd.to_numeric(trials[col], errors="coerce")
        for state, style in (("ok", dict(c="tab:green", marker="o")), ("collapsed", dict(c="tab:red", marker="x")),
                             ("diverged", dict(c="k", marker="X"))):
            sel = status == state
            if sel.any():
                ax.scatter(x[sel], trials.loc[sel, objective], label=state, s=40, **style)
        if col in ("param_lr_d", "param_lr_g"):
            ax.set_xscale("log")
        ax.set_xlabel(col.removeprefix("param_"))
        ax.set_ylabel(f"{objective} ({_better(objective)})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Training sweep: {objective} by hyperparameter (x = collapsed, X = diverged)")
    fig.tight_layout()
    path = out / "sweep_hyperparameters.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ratio_plot(points: pd.DataFrame, out: Path, tolerance: float = 0.05) -> Path | None:
    """The verdict in a picture: sparsity against each point's FCD ratio to its reference (the dense control, or
    the dense model) with its 95 % interval, a colour per method, the 1 + tolerance line. None without verdicts."""
    rated = points[points["ratio"].notna()] if "ratio" in points else points.iloc[0:0]
    if not len(rated):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = family_colors(points["family"].unique())
    for family, part in rated.groupby("family"):
        ax.errorbar(part["sparsity_mean"], part["ratio"], yerr=[part["ratio"] - part["ratio_low"],
                                                                part["ratio_high"] - part["ratio"]],
                    fmt=family_marker(family), color=colors[family], capsize=3, markersize=6, label=family)
    ax.axhline(1 + tolerance, color="gold", linewidth=2, label=f"{1 + tolerance:.2f}: within {tolerance:.0%}")
    ax.axhline(1, color="gray", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the generator")
    ax.set_ylabel("FCD / reference FCD, 95 % CI (log scale)")
    ax.set_title("Paired verdict: each point against its reference\n(the dense control fine-tuned alike, else dense)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = out / "verdict_ratio.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
