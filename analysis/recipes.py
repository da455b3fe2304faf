"""A recipe search's answer read back (sweeps/results.log_recipe_search): the best recovery recipe it found and how
much each searched setting mattered (Optuna's importances), for the report and results.md."""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

from analysis.runs import download
from ganlab.tracking import schema


def recipe_searches(sweep_ids: list[str]) -> dict[str, dict]:
    """Per recipe-search sweep among ``sweep_ids``: {"best": recipe, "importance": {setting: share}}."""
    found = {}
    with tempfile.TemporaryDirectory(prefix="ganlab-recipes-") as tmp:
        for sweep_id in sweep_ids:  # a pruning sweep with a best_config.json searched recipes
            best = download(sweep_id, schema.BEST_CONFIG, Path(tmp) / sweep_id)
            if best is None:
                continue
            importance = download(sweep_id, schema.RECIPE_IMPORTANCE, Path(tmp) / sweep_id)
            found[sweep_id] = {"best": json.loads(Path(best).read_text()),
                               "importance": json.loads(Path(importance).read_text()) if importance else {}}
    return found


def recipe_lines(searches: dict[str, dict]) -> list[str]:
    """results.md's lines: per search, the recipe chosen and the settings by importance."""
    lines = []
    for sweep_id, found in searches.items():
        chosen = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in found["best"].items())
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(found["importance"].items(), key=lambda kv: -kv[1]))
        mattered = f"what mattered (Optuna's importances): {ranked}" if ranked else \
            "too few finished recipes (or one setting) to say what mattered"
        lines.append(f"- recipe search `{sweep_id[:8]}`: chose {chosen}; {mattered}.")
    return lines


def recipe_html(searches: dict[str, dict]) -> str:
    if not searches:
        return ""
    items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in recipe_lines(searches))
    return f"<div class='answer'><p><b>The recipes, searched</b>:</p><ul>{items}</ul></div>"
