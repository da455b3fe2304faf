"""A pruning spec's grid as PruneConfigs — every (method, amount) x target(s) x finetune_epochs x bn_recalibrate x
iterative_steps x rewind_epoch x recovery recipe, dense controls, sparse training — and, for ``search:
frontier``, its families: each method and recipe whose amount the search bisects."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from ganlab.config import AMOUNT_KEYS, METHODS
from ganlab.pruning.config import PruneConfig


@dataclass(frozen=True)
class Family:
    """One method and recipe whose frontier is searched: its grid point at the lowest amount (``point``, an index
    into the sweep's points), the amounts' range and its dense control's point (None without fine-tuning)."""

    name: str
    point: int
    low: float
    high: float
    control: int | None = None


def build_points(g: dict[str, Any]) -> list[PruneConfig]:
    """The grid ``g`` (a spec's ``grid:``) as PruneConfigs. Iterative and rewound points are made only where they
    can be (with fine-tuning, unstructured pruning), recovery recipes only with fine-tuning. With ``controls:
    true`` every fine-tuning budget and recipe gets a dense control (nothing pruned, the same fine-tuning); method
    sparse (trained sparse from scratch) gets one point per sparsity, mask rule and density."""
    targets = g.get("target", "generator")
    recipes = [dict(r) for r in g.get("recovery", [{}])]
    axes = list(itertools.product([targets] if isinstance(targets, str) else targets,
                                  g.get("finetune_epochs", [0]), g.get("bn_recalibrate", [True]),
                                  g.get("iterative_steps", [1]), g.get("rewind_epoch", [None])))
    common = {"samples": int(g.get("samples", 1000)), "eval_draws": int(g.get("eval_draws", 5))}
    # sparse training first: the longest trials start while the short ones fill the other slots
    out = [PruneConfig(method="sparse", sparsity=float(amount), mask_update=rule, density=density, **common)
           for amount in (g.get("sparse") or {}).get("sparsity", []) for rule in g.get("mask_update", ["rigl"])
           for density in g.get("density", ["uniform"])]
    controls = {}
    for method in METHODS:
        key = AMOUNT_KEYS[method]
        if method == "sparse":
            continue
        for amount in (g.get(method) or {}).get(key, []):
            for target, ft, bn, steps, rewind in axes:
                if (steps > 1 or rewind is not None) and (not ft or method == "channel"):
                    continue
                for recipe in recipes if ft else [{}]:
                    if method == "channel" and (recipe.get("schedule") == "agp" or recipe.get("distill_feat")):
                        continue
                    point = dict(method=method, **{key: float(amount)}, target=target, finetune_epochs=int(ft),
                                 bn_recalibrate=bn, iterative_steps=int(steps), rewind_epoch=rewind,
                                 **recipe, **common)
                    out.append(PruneConfig(**point))
                    if ft and g.get("controls"):
                        control = control_of(point)
                        controls[repr(sorted(control.items()))] = control
    return out + [PruneConfig(**c) for c in controls.values()]


def control_of(point: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuned grid point's dense control: nothing pruned, the same fine-tuning."""
    dropped = {"method", "schedule", "prune_steps", "prune_every", "control", *AMOUNT_KEYS.values()}
    control = {k: v for k, v in point.items() if k not in dropped}
    control.update(method="percentage", q=0.0, control=True, iterative_steps=1)
    return control


def frontier_families(points: list[PruneConfig], controls: bool) -> list[Family]:
    """One Family per method and recipe (every grid point but the amount), searched between the lowest and the
    highest amount the grid lists for its method; its dense control's point when the grid has ``controls: true``.
    Sparse training is not bisected (its grid of sparsities is its own)."""
    from ganlab.runs.prune import recipe_label

    families: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        if p.control or p.method == "sparse":
            continue
        rest = dataclasses.replace(p, **{AMOUNT_KEYS[p.method]: 0.0})
        families.setdefault((p.method, repr(rest)), []).append(i)
    out = []
    for (method, _), members in families.items():
        by_amount = sorted(members, key=lambda i: points[i].amount)
        first, last = points[by_amount[0]], points[by_amount[-1]]
        control = None
        if first.finetune_epochs and controls:
            control = points.index(PruneConfig(**control_of(dataclasses.asdict(first))))
        out.append(Family(f"{method}{recipe_label(first)}", by_amount[0], first.amount, last.amount, control))
    return out
