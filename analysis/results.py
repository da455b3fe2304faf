"""``results.md``: a study's outcome as a page to cite — the answer, the figures, and the seed's tables beside ours.

Reads what ``ganlab analyze`` wrote (grid_points.csv, the PNGs) and the prune runs themselves (per-layer
sparsity tables, UQI/SSIM/MS-SSIM statistics). Figures are linked relative to the page.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import aggregate
from analysis.aggregate import plus_minus
from analysis.frontiers import frontier_lines
from analysis.recipes import recipe_lines
from analysis.runs import download
from ganlab.files import write_atomic
from ganlab.tracking import schema

# The seed's slides (64 px generator, Fashion-MNIST, no fine-tuning; SSIM/MS-SSIM there read 1.0 from a
# sewar usage bug, so only UQI is comparable)
SEED_S_SPARSITY = {0.25: 0.208, 0.5: 0.401, 0.75: 0.566, 1.0: 0.698, 1.25: 0.798}
SEED_LAYERS_S075 = [0.590286, 0.553230, 0.571728, 0.615097, 0.613281]  # total 0.566728
SEED_UQI = {"s=0.75": {"mean": 0.922090, "median": 0.930414, "max": 0.979795, "min": 0.731951, "std": 0.038994},
            "q=50": {"mean": 0.950989, "median": 0.954953, "max": 0.993308, "min": 0.859114, "std": 0.027780}}
STATS = ("mean", "median", "max", "min", "std")


def _point(points: pd.DataFrame, method: str, key: str, amount: float, finetune: int = 0) -> pd.Series | None:
    col = f"param_{key}"
    if col not in points:
        return None
    sel = points[(points["param_method"] == method)
                 & (pd.to_numeric(points[col], errors="coerce").sub(amount).abs() < 1e-9)
                 & (pd.to_numeric(points["param_finetune_epochs"], errors="coerce").fillna(0) == finetune)]
    if "param_target" in sel:
        sel = sel[sel["param_target"].isin(["generator", ""])]
    return sel.iloc[0] if len(sel) else None


def _runs_of(runs: pd.DataFrame, point: pd.Series) -> pd.DataFrame:
    return runs[runs["run_id"].isin(point["run_ids"].split())]


@dataclass(frozen=True)
class Study:
    """What results.md says of the study that made it: its title, the command that reproduces it, the machine,
    the minutes of each step, the dense sources (a table) and the tolerance its verdicts use."""

    title: str
    command: str
    machine: str
    minutes: dict[str, float]
    sources: pd.DataFrame
    tolerance: float = 0.05
    frontiers: dict = field(default_factory=dict)  # the frontier searches' answers (analysis.frontiers), by family
    recipes: dict = field(default_factory=dict)  # the recipe searches' answers (analysis.recipes), by sweep
    buys: list = field(default_factory=list)  # what each frontier buys: one row (a dict) per method and recipe
    budget: dict = field(default_factory=dict)  # each step's recovery budget in words (images seen), by step


def write_results(report_dir: Path, runs: pd.DataFrame, path: Path, study: Study) -> Path:
    """Write ``path`` (markdown) from the analysis in ``report_dir`` and the prune ``runs``; temp file, then rename."""
    title, command, machine, minutes = study.title, study.command, study.machine, study.minutes
    sources, tolerance = study.sources, study.tolerance
    points = pd.read_csv(report_dir / "grid_points.csv", dtype={"run_ids": str})
    for col in ("param_s", "param_q", "param_ratio", "param_finetune_epochs", "param_target", "param_method"):
        if col not in points:
            points[col] = np.nan
    points["param_target"] = points["param_target"].fillna("")
    rel = Path(os.path.relpath(report_dir, path.parent))
    n = int(points["n"].max())
    dense = aggregate.dense_value(points, "fcd")
    lines = [f"# {title}", "",
             f"Made by `{command}` on {machine}; it took {sum(minutes.values()):.0f} minutes "
             f"({', '.join(f'{k} {v:.0f}' for k, v in minutes.items())}).", ""]
    lines += _searched_lines(study)
    judged = (points.get("verdict", pd.Series(dtype=str)).fillna("") != "").any()
    lines += verdict_lines(points, tolerance, _samples(runs)) if judged else \
        _mean_rule_lines(points, dense, n, tolerance)
    lines += _finetune_curve_lines(points, runs)
    lines += ["", "## Dense sources", "", sources.to_markdown(index=False, floatfmt=".4g"), ""]
    figures = [("verdict_ratio.png", "The verdict: each point's FCD ratio to its reference, 95 % interval, 1.05 line"),
               ("pareto_fcd.png", "Sparsity against FCD, mean ± std per grid point, dense line and 5 % band"),
               ("sensitivity_vs_percentage.png", "Sensitivity vs percentage pruning (the seed's comparison)"),
               ("cost_fcd.png", "What pruning buys: FCD against bytes stored and latency"),
               ("pruning_strips.png", "Image strips per pruning level (same noise, first source)"),
               ("layer_sparsity.png", "Per-layer sparsity at each level")]
    lines += ["## Figures", ""]
    for name, caption in figures:
        if (report_dir / name).is_file():
            lines += [f"### {caption}", "", f"![{caption}]({(rel / name).as_posix()})", ""]
    lines += _seed_tables(points, runs, n)
    table = points.sort_values(["param_method", "sparsity_mean"])
    cols = {"point": "grid point", "n": "n"}
    for metric, label in (("sparsity", "sparsity"), ("fcd", "FCD"), ("kid", "KID"), ("ssim_mean", "SSIM"),
                          ("uqi_mean", "UQI"), ("coverage", "coverage")):
        if f"{metric}_mean" in table:
            table[label] = [plus_minus(m, s, k, ".4g") for m, s, k in
                            zip(table[f"{metric}_mean"], table[f"{metric}_std"], table["n"])]
            cols[label] = label
    lines += ["## Every grid point", "", table[[*cols]].rename(columns=cols).to_markdown(index=False), "",
              f"The numbers: `{(rel / 'grid_points.csv').as_posix()}` (one row per grid point) and "
              f"`{(rel / 'pareto_front.csv').as_posix()}`. The HTML report with every figure is written beside them "
              "(`report.html`, not committed); `ganlab study ... --report-only` redoes it and this page from the "
              "study's state file (or `--report-only TRAIN PRUNE...` from the sweeps' run ids).", ""]
    return write_atomic("\n".join(lines), path)


def _finetune_curve_lines(points: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """How FCD evolves with the fine-tuning images (finetune_fcd after each pass), mean over sources, per
    fine-tuned point: whether the budget was enough, measured rather than guessed."""
    from ganlab.tracking.store import mlflow_client, tracking_uri

    tuned = points[pd.to_numeric(points["param_finetune_epochs"], errors="coerce").fillna(0) > 0]
    if not len(tuned):
        return []
    client = mlflow_client(tracking_uri())
    images = runs.get("ganlab_finetune_images", pd.Series(dtype=str)).dropna()
    per_pass = int(images.iloc[0]) if len(images) else None
    rows = []
    for _, p in tuned.sort_values(["family", "sparsity_mean"]).iterrows():
        curves = [_history(client, run_id, "finetune_fcd") for run_id in p["run_ids"].split()]
        length = min((len(c) for c in curves), default=0)
        if not length:
            continue
        mean = np.mean([c[:length] for c in curves], axis=0)
        at = [_history(client, run_id, "finetune_sparsity") for run_id in p["run_ids"].split()]
        at = np.mean([c[:length] for c in at], axis=0) if min(len(c) for c in at) >= length else None
        row = {"method": p["family"], "sparsity": f"{p['sparsity_mean']:.2f}"}
        for i, v in enumerate(mean, start=1):
            # a pass scored below the final sparsity (AGP's early cuts) says the sparsity it was measured at
            early = at is not None and p["sparsity_mean"] - at[i - 1] > 0.005
            where = f" (at {at[i - 1] * 100:.1f} %)" if early else ""
            row[f"FCD after {i * per_pass:,} images" if per_pass else f"FCD after pass {i}"] = f"{v:.1f}{where}"
        row["final (BN recalibrated)"] = f"{p['fcd_mean']:.1f}"
        rows.append(row)
    if not rows:
        return []
    return ["", "### How FCD evolves with the fine-tuning images", "",
            "FCD of the fine-tuned generator after each pass over the fine-tuning subset (its BN running "
            "statistics as training left them; 1 draw of the evaluation noise), mean over the dense sources; the "
            "last column is the final, BN-recalibrated score (mean over the draws).", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def _history(client, run_id: str, name: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


def _mean_rule_lines(points: pd.DataFrame, dense: float, n: int, tolerance: float) -> list[str]:
    """The answer of runs scored once (before paired draws): the mean FCD against dense * (1 + tolerance)."""
    lines = ["## The answer", "",
             f"**The highest sparsity whose FCD stays within {tolerance:.0%} of the dense model's** (dense FCD "
             f"{dense:.1f} averaged over {n} dense model(s); threshold {dense * (1 + tolerance):.1f}), per method, "
             f"mean ± std over the {n} dense sources:", ""]
    for _, a in aggregate.answers(points, "fcd", tolerance).iterrows():
        if a["sparsity_mean"] != a["sparsity_mean"]:
            lines.append(f"- **{a['family']}**: no grid point stays within {tolerance:.0%} of dense FCD.")
        else:
            sparsity = plus_minus(a["sparsity_mean"] * 100, a["sparsity_std"] * 100, n, ".1f")
            fcd = plus_minus(a["fcd_mean"], a["fcd_std"], n, ".1f")
            lines.append(f"- **{a['family']}**: **{sparsity} %** sparsity at {a['point']} (FCD {fcd}).")
    return lines


def verdict_lines(points: pd.DataFrame, tolerance: float, samples: str = "N") -> list[str]:
    """The answer per method from the paired verdicts, and the table method x sparsity -> ratio [95 % CI]."""
    n = int(points["n"].max())
    figures = set(points.get("figure", pd.Series(dtype=str)).fillna("")) - {""}
    figure = "FCD∞" if figures == {"FCD∞"} else "FCD" if figures <= {"FCD"} else "FCD∞ (FCD for older runs)"
    lines = ["## The answer", "", _answer_intro(figure, n, tolerance), ""]
    answers = aggregate.verdict_answers(points, tolerance)
    single = answers["n"].eq(1) & (n > 1)  # a recipe search's trials: one source each, beside the study's
    for _, a in answers[~single].iterrows():
        text = _crossings(a)
        if a["within_sparsity"] == a["within_sparsity"]:
            text += (f"highest point judged within {a['within_sparsity'] * 100:.1f} % "
                     f"({a['within_point']}: ratio {a['within_ratio']:.3f} "
                     f"[{a['within_low']:.3f}, {a['within_high']:.3f}])")
        else:
            text += "no point is within by its interval"
        if a["worse_sparsity"] == a["worse_sparsity"]:
            text += f"; worse from {a['worse_sparsity'] * 100:.1f} %"
        if a["undecided"]:
            text += f"; {a['undecided']} point(s) cannot tell"
        lines.append(f"- **{a['family']}**: {text}.")
    if single.any():
        tried = points[points["family"].isin(answers.loc[single, "family"]) & ~points["control"].astype(bool)]
        lines.append(f"- **{int(single.sum())} recipes tried on one source** (the recipe searches' trials, each "
                     f"read on its own draws): ratios {tried['ratio'].min():.2f}-{tried['ratio'].max():.2f} at "
                     f"{', '.join(f'{x:.0%}' for x in sorted(tried['sparsity_mean'].round(2).unique()))}; "
                     "their rows are in the table below.")
    table = points.sort_values(["family", "sparsity_mean"])
    rows = []
    for _, p in table.iterrows():
        cov = p.get("coverage_mean", np.nan)
        inf = p.get("fcd_inf_mean", np.nan)
        rows.append({"method": p["family"], "point": p["point"], "sparsity": f"{p['sparsity_mean']:.3f}",
                     f"FCD at {samples}": f"{p['fcd_mean']:.2f}" if "fcd_mean" in p else "–",
                     "FCD∞": "–" if inf != inf else f"{inf:.2f}",
                     "reference": p.get("reference", ""),
                     f"{figure} ratio [95 % CI]": "–" if p["ratio"] != p["ratio"] else
                     f"{p['ratio']:.3f} [{p['ratio_low']:.3f}, {p['ratio_high']:.3f}]",
                     "vs untouched dense": "–" if p["ratio_dense"] != p["ratio_dense"] else
                     f"{p['ratio_dense']:.3f} [{p['ratio_dense_low']:.3f}, {p['ratio_dense_high']:.3f}]",
                     "verdict": p["verdict"] + (" (loses a class)" if p.get("lost_class") is True else ""),
                     "coverage": "–" if cov != cov else f"{cov:.1f}", "n": int(p["n"])})
    lines += ["", f"### Method x sparsity -> {figure} ratio [95 % CI], verdict, coverage", "",
              f"The verdict reads **{figure}**" + (" (FCD∞: Chong & Forsyth's extrapolation of FCD to infinitely many "
                                                   "images, which FCD at 1,000 images overstates by ~10 % and so pulls "
                                                   "every ratio toward 1; docs/fcd-samples.md)" if figure == "FCD∞"
                                                   else " (these runs logged no FCD∞)") +
              f"; FCD at {samples} images and FCD∞ are shown beside it (pruned generator, mean over sources).", "",
              pd.DataFrame(rows).to_markdown(index=False), ""]
    return lines


def _crossings(a: pd.Series) -> str:
    """A method's crossing against its reference, then against the untouched dense source (when they differ)."""
    star, dense = a.get("crossing"), a.get("crossing_dense")
    text = f"crossing **{star.label()}**, " if star is not None else ""
    if dense is not None and dense != star:
        text += f"against the untouched dense source {dense.label()}, "
    return text


def _answer_intro(figure: str, n: int, tolerance: float) -> str:
    """How the verdict is read, in one paragraph."""
    return (f"Per method, its **crossing s\\*** — the sparsity where the typical source's {figure} ratio to its "
             f"reference reaches {1 + tolerance:.2f} (each source's ratios fitted monotonically, the geometric mean of "
             "their crossings, a 95 % t interval over the sources; docs/recovery.md) — then the highest point judged "
             f"within, whose ratio has a 95 % interval at or below {1 + tolerance:.2f}: a lower limit of s\\*, not "
             "the frontier. The reference of a fine-tuned point is the **dense control** fine-tuned the same "
             "way (same images, losses, optimiser settings) on the same source; of the other points, the dense "
             "source itself; BatchNorm is recalibrated for both alike. Each of the "
             f"{n} dense source(s) scores the point and its reference on the same evaluation-noise draws (paired); the "
             "ratio is the geometric mean over sources and its interval a Student t interval over the sources' log "
             "ratios (docs/recovery.md: its coverage checked by simulation). **within**: upper end <= "
             f"{1 + tolerance:.2f} and no class lost (>= 1 class fewer than the reference, mean over draws, on a "
             f"source); **worse**: lower end > {1 + tolerance:.2f}; otherwise **cannot "
             "tell**.")


def _searched_lines(study: Study) -> list[str]:
    """The searches' answers first: the frontiers, then the recipes."""
    lines = []
    if study.frontiers:
        lines += ["## The frontier, searched", "", "Per method and recipe, the highest sparsity judged *within* "
                  f"{study.tolerance:.0%} of its reference, bracketed by the lowest judged *worse* (`search: "
                  "frontier`, each step scored on every source and judged before the next was chosen):", "",
                  *frontier_lines(study.frontiers), ""]
    if study.budget:
        lines += ["### What the budget limits", "", "Every fine-tuned point and its dense control trained on the same "
                  "images: " + "; ".join(f"{k}: {v}" for k, v in study.budget.items()) + ". A recipe that needs more "
                  "images to recover is judged here before it has: each recovery frontier is what this budget reaches, "
                  "a lower bound on what the method reaches with more training, not its limit.", ""]
    if study.buys:
        lines += ["### What the frontier buys", "", "At each frontier, the first source's pruned generator: stored in "
                  "Deep Compression's sparse format, as a `ganlab compress` file (5-bit k-means + Huffman), and its "
                  "measured latency (one batch, this machine's threads) against the dense fp32 generator's:", "",
                  pd.DataFrame(study.buys).to_markdown(index=False), ""]
    if study.recipes:
        lines += ["## The recipes, searched", "", *recipe_lines(study.recipes), ""]
    return lines


def _samples(runs: pd.DataFrame) -> str:
    """How many images each evaluation scored (the runs' --samples), for a column's name."""
    values = pd.to_numeric(runs.get("param_samples", pd.Series(dtype=float)), errors="coerce").dropna().unique()
    return f"{int(values[0]):,}" if len(values) == 1 else "N"


def _seed_tables(points: pd.DataFrame, runs: pd.DataFrame, n: int) -> list[str]:
    lines = ["## The seed's tables beside ours", "",
             "The seed pruned a 64 px generator (5 conv layers, 3.57 M weights); a `--scale cpu` study prunes "
             "the 32 px one (4 conv layers), so per-layer rows differ in number. No fine-tuning in these tables.",
             "", "### Total sparsity of sensitivity pruning", "", "| s | seed | ours |", "|---|---|---|"]
    for s, seed in SEED_S_SPARSITY.items():
        p = _point(points, "sensitivity", "s", s)
        ours = plus_minus(p["sparsity_mean"], p["sparsity_std"], int(p["n"])) if p is not None else "–"
        lines.append(f"| {s} | {seed:.3f} | {ours} |")
    lines += ["", "### Per-layer sparsity at s = 0.75 and q = 50 (first dense source)", "",
              "| layer | seed s = 0.75 | ours s = 0.75 | seed q = 50 | ours q = 50 |", "|---|---|---|---|---|"]
    ours = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (method, key, amount) in {"s": ("sensitivity", "s", 0.75), "q": ("percentage", "q", 50)}.items():
            p = _point(points, method, key, amount)
            csv = None if p is None else download(p["run_ids"].split()[0], schema.sparsity_table("generator"),
                                                  Path(tmp) / label)
            if csv is not None:
                t = pd.read_csv(csv)
                ours[label] = t[t["layer"].astype(str) != "total"]["sparsity"].tolist()
    rows = max(len(SEED_LAYERS_S075), *(len(v) for v in ours.values())) if ours else len(SEED_LAYERS_S075)
    for i in range(rows):
        cells = [f"{SEED_LAYERS_S075[i]:.3f}" if i < len(SEED_LAYERS_S075) else "",
                 f"{ours['s'][i]:.3f}" if i < len(ours.get("s", [])) else "",
                 "0.500" if i < len(SEED_LAYERS_S075) else "",
                 f"{ours['q'][i]:.3f}" if i < len(ours.get("q", [])) else ""]
        lines.append(f"| conv {i + 1} | " + " | ".join(cells) + " |")
    lines += ["", "### Pruned against dense images from the same noise: UQI / SSIM / MS-SSIM", "",
              "The seed's SSIM and MS-SSIM read 1.0 (complex 1.0+0.0j) for every comparison, a sewar usage bug; "
              f"ours are real values. Ours: mean ± std over the {n} dense source(s) of each statistic.", ""]
    for label, (method, key, amount) in {"s=0.75": ("sensitivity", "s", 0.75),
                                         "q=50": ("percentage", "q", 50)}.items():
        p = _point(points, method, key, amount)
        if p is None:
            continue
        part = _runs_of(runs, p)
        lines += [f"**{label}** (sparsity {plus_minus(p['sparsity_mean'], p['sparsity_std'], int(p['n']))})", "",
                  "| statistic | seed UQI | ours UQI | ours SSIM | ours MS-SSIM |", "|---|---|---|---|---|"]
        for stat in STATS:
            cells = []
            for metric in ("uqi", "ssim", "msssim"):
                v = pd.to_numeric(part.get(f"{metric}_{stat}", pd.Series(dtype=float)), errors="coerce").dropna()
                cells.append(plus_minus(v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, len(v), ".4f"))
            lines.append(f"| {stat} | {SEED_UQI[label][stat]:.4f} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
