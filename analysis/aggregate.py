"""Prune runs -> one row per grid point (mean, std and n over the sweep's source models), and the answer.

A pruning sweep with several sources (``--from-sweep ID --top K``, ``--from-run`` given several times)
runs every grid point on every source; a grid point's quality is then a mean with a spread. With one
source every n is 1 and the means are the runs' own values.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.pareto import pareto_front
from analysis.runs import amount_label
from ganlab.config import fields_in
from ganlab.metrics.verdict import CANNOT_TELL, WITHIN, WORSE
from ganlab.pruning.config import FINETUNE, PruneConfig
from ganlab.tracking.schema import LOWER_IS_BETTER

# what a dense control shares with the pruned points it is the reference of: the same fine-tuning (every setting
# of PruneConfig's "finetune" group, as MLflow stores params: strings) and the same scoring (every setting
# but the pruning schedule: a control prunes nothing)
CONTROL_KEYS = ("param_target", "param_finetune_epochs", "param_bn_recalibrate",
                *(f"param_{k}" for k in FINETUNE if k != "schedule"), "param_samples", "param_eval_draws")
# what makes two runs the same grid point
POINT_KEYS = ("param_method", "param_s", "param_q", "param_ratio", "param_sparsity", "param_target",
              "param_finetune_epochs", "param_bn_recalibrate", "param_iterative_steps", "param_rewind_epoch",
              "param_recovery", "param_control", "param_prune_steps",
              *(f"param_{k}" for k in (*FINETUNE, *fields_in(PruneConfig, "sparse"))))
DENSE = {"fcd": "dense_fcd", "fcd_inf": "dense_fcd_inf", "kid": "dense_kid", "coverage": "dense_coverage",
         "class_kl": "dense_class_kl"}
IDENTICAL = {"ssim_mean": 1.0, "msssim_mean": 1.0, "uqi_mean": 1.0}  # the dense model compared with itself


def plus_minus(mean: float, std: float, n: int, fmt: str = ".3f") -> str:
    """``mean ± std`` when several sources gave it (n > 1), else the value alone; "–" for a missing one."""
    if mean != mean:
        return "–"
    return f"{mean:{fmt}} ± {std:{fmt}}" if n > 1 else f"{mean:{fmt}}"


def _int(value) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _given(value) -> bool:
    return value is not None and value == value and str(value) not in ("", "none")


def is_control(row) -> bool:
    return str(row.get("param_control")) == "True"


def family(row) -> str:
    """The method as a reader compares them: the pruning method + its recovery (ft, distill, agp, ...), a dense
    control, or sparse training; runs from before recovery params existed: + fine-tuned, + rewound."""
    name = str(row.get("param_method"))
    recovery = row.get("param_recovery")
    if is_control(row):
        return f"dense control ({recovery})"
    if _given(recovery):
        return recovery if name == "sparse" else name + ("" if recovery == "none" else f" + {recovery}")
    rewind = row.get("param_rewind_epoch")
    if rewind not in (None, "", "none") and rewind == rewind:
        return f"{name} + rewinding (lottery ticket)"
    return name + (" + fine-tuned" if _int(row.get("param_finetune_epochs")) > 0 else "")


def point_label(row) -> str:
    ft = _int(row.get("param_finetune_epochs"))
    steps = _int(row.get("param_iterative_steps"))
    rewind = row.get("param_rewind_epoch")
    rewound = rewind not in (None, "", "none") and rewind == rewind
    if is_control(row):
        return f"dense control ft{ft} {row.get('param_recovery')}"
    recovery = row.get("param_recovery")
    extra = f" {recovery}" if _given(recovery) and recovery not in ("none", "ft") and \
        row.get("param_method") != "sparse" else ""
    return (f"{row.get('param_method')} {amount_label(row)}" + (f" +ft{ft}" if ft else "") + extra
            + (f" x{steps} steps" if steps > 1 else "") + (f" rewound to epoch {rewind}" if rewound else "")
            + ("" if str(row.get("param_bn_recalibrate")) == "True" else " (no BN recal.)"))


def grid_points(runs: pd.DataFrame, metrics) -> pd.DataFrame:
    """One row per grid point: its params, ``n`` runs, ``<metric>_mean`` / ``<metric>_std`` for sparsity,
    each metric and its dense reference, and the runs' ids (the first source's first)."""
    keys = [k for k in POINT_KEYS if k in runs]
    values = ["sparsity", *metrics, *(DENSE[m] for m in metrics if m in DENSE)]
    values = [v for v in dict.fromkeys(values) if v in runs]
    rows = []
    for _, part in runs.assign(**{k: runs[k].astype(object).where(runs[k].notna(), "") for k in keys}) \
            .groupby(keys, sort=False):
        first = part.iloc[0]
        row = {k: first[k] for k in keys}
        row.update(point=point_label(first), family=family(first), control=is_control(first), n=len(part),
                   run_ids=" ".join(part["run_id"]))
        for v in values:
            x = pd.to_numeric(part[v], errors="coerce").to_numpy(float)
            x = x[np.isfinite(x)]
            row[f"{v}_mean"] = float(x.mean()) if len(x) else np.nan
            row[f"{v}_std"] = float(x.std(ddof=1)) if len(x) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def dense_value(points: pd.DataFrame, metric: str) -> float | None:
    """The dense model's ``metric`` (the mean over sources), or None when the runs did not log it."""
    if metric in IDENTICAL:
        return IDENTICAL[metric]
    column = f"{DENSE.get(metric, '-')}_mean"
    if column not in points:
        return None
    v = pd.to_numeric(points[column], errors="coerce")
    return float(v.mean()) if v.notna().any() else None


def within(points: pd.DataFrame, metric: str, tolerance: float) -> pd.Series:
    """Grid points whose mean ``metric`` is no more than ``tolerance`` (relative) worse than dense."""
    dense = dense_value(points, metric)
    if dense is None or f"{metric}_mean" not in points:
        return pd.Series(False, index=points.index)
    y = pd.to_numeric(points[f"{metric}_mean"], errors="coerce")
    if LOWER_IS_BETTER[metric]:
        return y <= dense * (1 + tolerance)
    return y >= dense * (1 - tolerance)


def answers(points: pd.DataFrame, metric: str = "fcd", tolerance: float = 0.05) -> pd.DataFrame:
    """Per method family: the highest mean sparsity whose mean ``metric`` stays within ``tolerance`` of dense
    (NaN sparsity when no grid point does), with that point's std and n."""
    ok = within(points, metric, tolerance)
    rows = []
    for fam, part in points.groupby("family", sort=True):
        good = part[ok.loc[part.index]]
        if len(good):
            best = good.sort_values(["sparsity_mean", f"{metric}_mean"], ascending=[False, True]).iloc[0]
            rows.append({"family": fam, "point": best["point"], "n": int(best["n"]),
                         "sparsity_mean": best["sparsity_mean"], "sparsity_std": best["sparsity_std"],
                         f"{metric}_mean": best[f"{metric}_mean"], f"{metric}_std": best[f"{metric}_std"]})
        else:
            rows.append({"family": fam, "point": "", "n": int(part["n"].max()), "sparsity_mean": np.nan,
                         "sparsity_std": np.nan, f"{metric}_mean": np.nan, f"{metric}_std": np.nan})
    return pd.DataFrame(rows)


def front_table(points: pd.DataFrame, metrics) -> pd.DataFrame:
    """The grid points on the Pareto front of at least one metric (front on the means), one row each, with
    every metric as a column and ``on_front`` naming the fronts; no all-empty columns, no std columns when
    every n is 1."""
    on = {}
    for metric in metrics:
        if f"{metric}_mean" not in points:
            continue
        front = pareto_front(points, f"{metric}_mean", x="sparsity_mean", lower_is_better=LOWER_IS_BETTER[metric])
        for i in front.index:
            on.setdefault(i, []).append(metric)
    if not on:
        return pd.DataFrame()
    table = points.loc[sorted(on)].assign(on_front=[";".join(on[i]) for i in sorted(on)])
    cols = ["point", "family", "n", "sparsity_mean", "sparsity_std"]
    for metric in metrics:
        cols += [f"{metric}_mean", f"{metric}_std"]
    cols += ["on_front", "run_ids"]
    cols = [c for c in cols if c in table and table[c].replace("", np.nan).notna().any()]
    if table["n"].max() <= 1:
        cols = [c for c in cols if not c.endswith("_std")]
    return table[cols].sort_values("sparsity_mean").reset_index(drop=True)


def add_verdicts(points: pd.DataFrame, runs: pd.DataFrame, draws: dict, tolerance: float = 0.05) -> pd.DataFrame:
    """``points`` with each one's paired, noise-aware verdict (ganlab.metrics.verdict.judge_point, as the frontier
    search reads it) against its reference: the dense control fine-tuned the same way on the same source when the
    sweep has one, else the untouched dense source. Adds reference, ratio, ratio_low, ratio_high, verdict,
    lost_class and, against the untouched dense whatever the reference, ratio_dense [ratio_dense_low,
    ratio_dense_high], and the figure the verdict read (``FCD∞`` when the runs logged it per draw, else ``FCD``).
    Points whose runs logged no per-draw values (older runs) get NaN and verdict "".
    """
    from ganlab.metrics.verdict import FIGURES, judge_point

    by_id = runs.set_index("run_id")
    controls = {}
    for run_id, r in by_id.iterrows():
        if is_control(r):
            controls[(r.get("ganlab_source_run_id"), *(str(r.get(k)) for k in CONTROL_KEYS))] = run_id
    out = []
    for _, p in points.iterrows():
        row = dict(reference="", ratio=np.nan, ratio_low=np.nan, ratio_high=np.nan, verdict="", lost_class=False,
                   ratio_dense=np.nan, ratio_dense_low=np.nan, ratio_dense_high=np.nan, figure="",
                   ratio_by_source="", ratio_dense_by_source="")
        ids = [i for i in p["run_ids"].split() if i in by_id.index and {"fcd", "dense_fcd"} <= set(draws.get(i, {}))]
        if ids:
            keys = [(by_id.loc[i].get("ganlab_source_run_id"), *(str(by_id.loc[i].get(k)) for k in CONTROL_KEYS))
                    for i in ids]
            mine = [None if p.get("control") else draws.get(controls.get(key), {}) for key in keys]
            judged = judge_point([draws[i] for i in ids], mine, tolerance)
            v, vd = judged.verdict, judged.against_dense
            row.update(reference=judged.reference, ratio=v.ratio, ratio_low=v.low, ratio_high=v.high,
                       verdict=v.verdict.value, lost_class=v.lost_class, ratio_dense=vd.ratio, ratio_dense_low=vd.low,
                       ratio_dense_high=vd.high, figure=FIGURES[judged.figure],
                       ratio_by_source=json.dumps({str(key[0]): r for key, r in zip(keys, judged.ratios)}),
                       ratio_dense_by_source=json.dumps({str(key[0]): r for key, r in zip(keys, judged.dense_ratios)}))
        out.append(row)
    return pd.concat([points.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def family_crossing(part: pd.DataFrame, column: str = "ratio_by_source", threshold: float = 1.05):
    """s* of one method family's points (ganlab.metrics.verdict.crossing): each source's ratio at each point (the
    JSON object ``column`` holds, as grid_points.csv keeps it), by the points' mean sparsity; None without them."""
    from ganlab.metrics.verdict import crossing

    if column not in part:
        return None
    by_source = [json.loads(v) if isinstance(v, str) and v.startswith("{") else {} for v in part[column]]
    keep = [bool(d) for d in by_source]
    if not any(keep):
        return None
    by_source = [d for d, k in zip(by_source, keep) if k]
    sources = sorted({s for d in by_source for s in d})
    ratios = np.array([[d.get(s, np.nan) for d in by_source] for s in sources], float)
    return crossing(part.loc[keep, "sparsity_mean"].to_numpy(float), ratios, threshold)


def verdict_answers(points: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Per method family (controls left out): its crossing s* [95 % CI] (where the typical source's ratio reaches
    1 + tolerance, against its reference and against the untouched dense source), the highest mean sparsity whose
    verdict is "within", and the lowest one judged "worse" (NaN where none)."""
    rows = []
    for fam, part in points[~points["control"].astype(bool)].groupby("family", sort=True):
        star = family_crossing(part, "ratio_by_source", 1 + tolerance)
        star_dense = family_crossing(part, "ratio_dense_by_source", 1 + tolerance)
        within_ = part[part["verdict"] == WITHIN].sort_values("sparsity_mean", ascending=False)
        worse = part[part["verdict"] == WORSE].sort_values("sparsity_mean")
        best = within_.iloc[0] if len(within_) else None
        rows.append({"family": fam, "n": int(part["n"].max()),
                     "within_sparsity": best["sparsity_mean"] if best is not None else np.nan,
                     "within_point": best["point"] if best is not None else "",
                     "within_ratio": best["ratio"] if best is not None else np.nan,
                     "within_low": best["ratio_low"] if best is not None else np.nan,
                     "within_high": best["ratio_high"] if best is not None else np.nan,
                     "worse_sparsity": worse.iloc[0]["sparsity_mean"] if len(worse) else np.nan,
                     "undecided": int((part["verdict"] == CANNOT_TELL).sum()),
                     "crossing": star, "crossing_dense": star_dense})
    return pd.DataFrame(rows)


def operating_point(points: pd.DataFrame) -> pd.Series | None:
    """The registered ``@best`` model's grid point, by the verdict: the most pruned point judged "within" (dense
    controls left out); if none is, the point with the lowest ratio to its reference. None without verdicts."""
    candidates = points[~points["control"].astype(bool) & points["ratio"].notna()] if "ratio" in points else points[:0]
    if not len(candidates):
        return None
    within_ = candidates[candidates["verdict"] == WITHIN]
    if len(within_):
        return within_.sort_values(["sparsity_mean", "ratio"], ascending=[False, True]).iloc[0]
    return candidates.sort_values("ratio").iloc[0]
