"""A frontier search's answer read back (``frontiers.json`` on the sweep's parent run, sweeps/frontier.py): per
method and recipe, the highest sparsity judged within, the lowest judged worse, and how the search ended — as the
report's first answer, as lines of results.md, and as a marker and a bracket on the Pareto plots."""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

from analysis.runs import download
from ganlab.tracking import schema

STATUS_WORDS = {"found": "bracket found", "cannot tell": "the points above cannot tell",
                "none within": "no sparsity in the range is within", "all within": "the whole range is within",
                "steps exhausted": "stopped after its steps", "a trial failed": "a trial failed"}


def frontiers_of(sweep_ids: list[str]) -> dict[str, dict]:
    """Every family's answer of the frontier searches among ``sweep_ids`` (empty for grid sweeps)."""
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ganlab-frontiers-") as tmp:
        for sweep_id in sweep_ids:
            path = download(sweep_id, schema.FRONTIERS, Path(tmp) / sweep_id)
            if path is not None:
                found.update(json.loads(Path(path).read_text()))
    return found


def _bracket(answer: dict) -> str:
    within, worse = answer.get("within"), answer.get("worse")
    low = f"{within['sparsity'] * 100:.1f} %" if within else "—"
    high = f"{worse['sparsity'] * 100:.1f} %" if worse else "—"
    return f"[{low}, {high}]"


def _ratio(step: dict | None) -> str:
    if not step:
        return ""
    return f"{step['ratio']:.3f} [{step['low']:.3f}, {step['high']:.3f}]"


def frontier_rows(frontiers: dict[str, dict]) -> list[dict[str, str]]:
    """One row per family: the frontier (highest sparsity within), its bracket, the FCD ratio there and above,
    how the search ended and how many amounts it scored."""
    rows = []
    for name, answer in frontiers.items():
        within = answer.get("within")
        rows.append({"method and recipe": name,
                     "frontier (highest sparsity within)": f"{within['sparsity'] * 100:.1f} %" if within else "none",
                     "bracket [within, worse]": _bracket(answer),
                     "FCD ratio at the frontier [95 % CI]": _ratio(within),
                     "at the bracket's top": _ratio(answer.get("worse")),
                     "search": STATUS_WORDS.get(answer.get("status"), str(answer.get("status"))),
                     "amounts scored": str(len(answer.get("steps", [])))})
    return rows


def frontier_html(frontiers: dict[str, dict], tolerance: float) -> str:
    """The report's first answer: the frontiers, as a table."""
    if not frontiers:
        return ""
    rows = frontier_rows(frontiers)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return ("<div class='answer'><p><b>The frontier, searched</b>: per method and recipe, the highest sparsity whose "
            f"FCD ratio to its reference has a 95 % interval below {1 + tolerance:.2f}, found by bisecting the amount "
            "on every source (each step judged before the next was chosen) and bracketed by the lowest sparsity "
            f"judged worse:</p><table><tr>{head}</tr>{body}</table></div>")


def frontier_lines(frontiers: dict[str, dict]) -> list[str]:
    """results.md's lines: the same table in markdown."""
    if not frontiers:
        return []
    rows = frontier_rows(frontiers)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
    return lines


def mark_frontiers(ax, frontiers: dict[str, dict]) -> None:
    """On a plot with sparsity on x: per family, a triangle at the top edge and a dotted line at its frontier, and
    its bracket [within, worse] shaded, in a colour of its own."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("Dark2").colors
    for k, (name, answer) in enumerate(frontiers.items()):
        within, worse = answer.get("within"), answer.get("worse")
        if within is None:
            continue
        color = colors[k % len(colors)]
        ax.axvline(within["sparsity"], color=color, linestyle=":", linewidth=1.3, zorder=1)
        ax.plot([within["sparsity"]], [1.0], marker="v", markersize=9, color=color, clip_on=False,
                transform=ax.get_xaxis_transform(), zorder=5,
                label=f"frontier, {name}: {within['sparsity']:.2f}" + (f" (worse at {worse['sparsity']:.2f})"
                                                                       if worse else ""))
        if worse is not None:
            ax.axvspan(within["sparsity"], worse["sparsity"], color=color, alpha=0.12, zorder=0)
