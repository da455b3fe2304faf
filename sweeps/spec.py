"""Sweep specs: YAML files validated on load, before Ray starts.

A training sweep (``kind: train``) searches TrainConfig fields with Optuna's TPE under ASHA; a
pruning sweep (``kind: prune``) runs a grid of method x s|q x fine-tune epochs. Every key is
checked: an unknown one, or a bad value, raises ConfigError naming it and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganlab.config import (
    AMOUNT_KEYS,
    METHODS,
    TrainConfig,
    brief,
    check_choice,
    check_range,
    config_from_dict,
    read_yaml,
)
from ganlab.errors import ConfigError
from ganlab.gan.health import HealthRules
from ganlab.pruning.config import FINETUNE, TARGETS, PruneConfig
from ganlab.tracking.schema import OBJECTIVES

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
SEARCHABLE = tuple(f.name for f in dataclasses.fields(TrainConfig)
                   if f.name not in ("dataset", "image_size", "device", "eval_every", "limit"))


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractional: 0.25 lets four trials share one GPU

    def validate(self, where: str) -> Resources:
        check_range(f"{where}.cpu", self.cpu, low=0.0, ends="(]")
        check_range(f"{where}.gpu", self.gpu, low=0.0)
        return self


@dataclass
class SweepSpec:
    kind: str
    name: str
    experiment: str | None = None
    storage_path: str = "ray_results"  # local dir by default; s3://... or an NFS path on a cluster
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 1  # a trial whose worker dies is retried from its last checkpoint
    max_concurrent: int = 0  # 0: as many as resources allow
    # kind: train
    base: dict[str, Any] = field(default_factory=dict)
    # train: distributions over TrainConfig fields; prune: "frontier" (bisect each method's amount, see frontier.py)
    search: dict[str, dict[str, list]] | str = field(default_factory=dict)
    initial_points: list[dict[str, Any]] = field(default_factory=list)
    objective: dict[str, str] = field(default_factory=lambda: {"metric": "fcd", "mode": "min"})
    num_samples: int = 4
    time_budget_s: float | None = None
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha", "grace_period": 1})
    stopping: HealthRules = field(default_factory=HealthRules)
    # after the search, train the best configuration `repeats` more times with new seeds (seed + 1 ... +N):
    # dense sources for a pruning sweep's error bars (`ganlab sweep prune --from-sweep ID --top N+1`)
    repeats: int | None = None
    # kind: prune
    grid: dict[str, Any] = field(default_factory=dict)
    # the sweep's best model (the most pruned trial with fcd within `tolerance` of the dense model's) is
    # registered in the MLflow Model Registry as `registered_model` (default: <name>-generator), alias "best"
    registered_model: str | None = None
    tolerance: float = 0.05
    # search: frontier: stop when [highest within, lowest worse] spans at most `bracket` of sparsity, or after
    # `max_steps` bisection steps per family
    frontier: dict[str, float] = field(default_factory=dict)
    _points: list[PruneConfig] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def metric(self) -> str:
        return self.objective["metric"]

    @property
    def mode(self) -> str:
        return self.objective["mode"]

    @property
    def model_name(self) -> str:
        return self.registered_model or f"{self.name}-generator"

    def train_config(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The base config with ``overrides``; sweeps always evaluate every epoch (the objective)."""
        return dataclasses.replace(config_from_dict(TrainConfig, self.base, where="base"),
                                   **(overrides or {}), eval_every=1).resolved()

    def prune_points(self) -> list[PruneConfig]:
        """The grid as PruneConfigs: every (method, amount) x target(s) x finetune_epochs x bn_recalibrate x
        iterative_steps x rewind_epoch x recovery recipe. Iterative and rewound points are made only where they
        can be (with fine-tuning, unstructured pruning), recovery recipes only with fine-tuning. With
        ``controls: true`` every fine-tuning budget and recipe gets a dense control (nothing pruned, the same
        fine-tuning); method sparse (trained sparse from scratch) gets one point per sparsity and mask rule.
        Built and validated once (when the spec is loaded); the driver hands these objects to the trials."""
        if self._points is None:
            self._points = self._build_points()
        return self._points

    def _build_points(self) -> list[PruneConfig]:
        from sweeps.grid import build_points

        return build_points(self.grid)

    @property
    def searches_frontier(self) -> bool:
        return self.kind == "prune" and self.search == "frontier"

    @property
    def searches_recipe(self) -> bool:
        """A pruning sweep whose ``search`` holds distributions over the recovery settings (Optuna, one point)."""
        return self.kind == "prune" and isinstance(self.search, dict) and bool(self.search)

    def frontier_families(self) -> list:
        """``search: frontier``: one Family per method and recipe (sweeps/grid.py)."""
        from sweeps.grid import frontier_families

        return frontier_families(self.prune_points(), bool(self.grid.get("controls")))

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data that ``spec_from_dict`` reads back (only this kind's keys)."""
        other = _PRUNE_ONLY if self.kind == "train" else _TRAIN_ONLY
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in other and k != "_points"}


_TOP_KEYS = {f.name for f in dataclasses.fields(SweepSpec)}
_TRAIN_ONLY = {"base", "objective", "time_budget_s", "stopping", "repeats"}
_PRUNE_ONLY = {"grid", "registered_model", "tolerance", "frontier"}
_GRID_KEYS = {*METHODS, "finetune_epochs", "target", "samples", "bn_recalibrate", "finetune_images",
              "iterative_steps", "rewind_epoch", "recovery", "controls", "eval_draws", "mask_update", "density"}
# what a recovery recipe (one entry of grid.recovery) may set: PruneConfig's fine-tuning settings
RECIPE_KEYS = (*FINETUNE, "prune_steps", "prune_every")


def _unknown(where: str, keys, allowed) -> None:
    bad = sorted(set(keys) - set(allowed))
    if bad:
        raise ConfigError(f"{where}: unknown key {brief(bad[0])}; allowed: {', '.join(sorted(allowed))}")


BUNDLED = Path(__file__).resolve().parent / "specs"  # every bundled spec, the studies' too (the wheel ships them)


def bundled_specs() -> dict[str, Path]:
    """The bundled specs by name (file name without .yaml): ``ganlab sweep train demo_train`` anywhere."""
    return {p.stem: p for p in sorted(BUNDLED.glob("*.yaml"))}


def find_spec(given: str | Path) -> Path:
    """A spec file: ``given`` if it exists, else the bundled spec it names (``demo_train``,
    ``demo_train.yaml`` or ``sweeps/specs/demo_train.yaml`` from outside the repo); ConfigError naming the bundled
    ones otherwise."""
    path = Path(given)
    if path.is_file():
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    bundled = bundled_specs()
    if name in bundled and (path.parent == Path(".") or path.parent.name in ("sweeps", "specs")):
        return bundled[name]
    raise ConfigError(f"sweep spec {given} does not exist; bundled specs: {', '.join(bundled)} "
                      "(`ganlab sweep list` describes them)")


def spec_differences(saved: dict[str, Any], edited: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Where two specs (``SweepSpec.to_dict()``) differ: top-level keys, dotted one level into mappings
    (``grid.percentage``), leaving out ``ignore``."""
    out = []
    for key in sorted(set(saved) | set(edited)):
        a, b = saved.get(key), edited.get(key)
        if key in ignore or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec (a file, or a bundled spec's name); raises ConfigError (one line)."""
    path = find_spec(path)
    raw = read_yaml(path, "sweep spec")
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep spec {path} must be a mapping of keys to values")
    return spec_from_dict(raw, where=path.name)


# the YAML type of each key that holds more than a number (numbers are checked by range, with their names)
_MAPPINGS = ("resources", "base", "objective", "scheduler", "stopping", "grid", "frontier")
_STRINGS = ("kind", "name", "experiment", "storage_path", "registered_model")


def _typed(where: str, raw: dict[str, Any]) -> None:
    """ConfigError (one line) for a key of the wrong YAML type, before any of its contents is read."""
    search = raw.get("search")
    frontier = raw.get("kind") == "prune" and search == "frontier"
    if search is not None and not isinstance(search, dict) and not frontier:
        raise ConfigError(f"{where}: search must be a mapping of distributions (a training sweep) or `frontier` (a "
                          f"pruning sweep), got {brief(search)}")
    for key in _MAPPINGS:
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ConfigError(f"{where}: {key} must be a mapping (key: value lines), got {brief(raw[key])}")
    for key in _STRINGS:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigError(f"{where}: {key} must be a string, got {brief(raw[key])}")
    points = raw.get("initial_points")
    if points is not None and not (isinstance(points, list) and all(isinstance(p, dict) for p in points)):
        raise ConfigError(f"{where}: initial_points must be a list of mappings (lr_d: ..., lr_g: ...), got "
                          f"{brief(points)}")
    grid = raw.get("grid") or {}
    for method in METHODS:
        amounts = grid.get(method)
        if amounts is None:
            continue
        if not isinstance(amounts, dict):
            raise ConfigError(f"{where}: grid.{method} must be a mapping ({AMOUNT_KEYS[method]}: [...]), got "
                              f"{brief(amounts)}")
        values = amounts.get(AMOUNT_KEYS[method])
        if values is not None and not (isinstance(values, list) and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ConfigError(f"{where}: grid.{method}.{AMOUNT_KEYS[method]} must be a non-empty list of numbers, "
                              f"got {brief(values)}")
    targets = grid.get("target")
    if targets is not None and not (isinstance(targets, str) or (
            isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))):
        raise ConfigError(f"{where}: grid.target must be one of {', '.join(TARGETS)} or a list of them, got "
                          f"{brief(targets)}")


def spec_from_dict(raw: dict[str, Any], where: str = "spec") -> SweepSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a sweep spec is a mapping of keys to values, got {brief(raw)}")
    _unknown(where, raw, _TOP_KEYS)
    _typed(where, raw)
    kind = raw.get("kind")
    check_choice(f"{where}: kind", kind, ("train", "prune"))
    _unknown(where, raw, _TOP_KEYS - (_PRUNE_ONLY if kind == "train" else _TRAIN_ONLY))
    if not isinstance(raw.get("name"), str) or not raw["name"].replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: name must be letters, digits, '-' or '_' (got {brief(raw.get('name'))})")
    values = dict(raw)
    res = values.get("resources") or {}
    _unknown(f"{where}: resources", res, ("cpu", "gpu"))
    values["resources"] = Resources(**res).validate("resources")
    stop = values.get("stopping") or {}
    _unknown(f"{where}: stopping", stop, [f.name for f in dataclasses.fields(HealthRules)])
    values["stopping"] = HealthRules(**stop)
    spec = SweepSpec(**values)
    check_range("max_failures", spec.max_failures, low=0, integer=True)
    check_range("max_concurrent", spec.max_concurrent, low=0, integer=True)
    if kind == "train":
        _validate_train(spec, where)
    else:
        _validate_prune(spec, where)
    return spec


def _validate_train(spec: SweepSpec, where: str) -> None:
    spec.train_config()  # unknown base keys and bad base values fail here
    _unknown(f"{where}: search", spec.search, SEARCHABLE)
    for name, dist in spec.search.items():
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(f"{where}: search.{name} must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}}")
        (kind, args), = dist.items()
        check_choice(f"search.{name} distribution", kind, DISTRIBUTIONS)
        if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
            wanted = "values" if kind == "choice" else "[low, high]"
            raise ConfigError(f"{where}: search.{name}.{kind} needs a list ({wanted})")
        for value in args:
            spec.train_config({name: value})  # each value must be a valid config value
        if kind != "choice" and not args[0] < args[1]:
            raise ConfigError(f"{where}: search.{name}.{kind} has low={brief(args[0])} >= high={brief(args[1])}; "
                              "give [low, high] with low < high")
    for point in spec.initial_points:
        _unknown(f"{where}: initial_points", point, spec.search)
        spec.train_config(point)
    _unknown(f"{where}: objective", spec.objective, ("metric", "mode"))
    check_choice("objective.metric", spec.objective.get("metric"), tuple(OBJECTIVES))
    spec.objective.setdefault("mode", OBJECTIVES[spec.metric])
    check_choice("objective.mode", spec.objective["mode"], ("min", "max"))
    check_range("num_samples", spec.num_samples, low=1, integer=True)
    if spec.time_budget_s is not None:
        check_range("time_budget_s", spec.time_budget_s, low=0, ends="(]")
    _unknown(f"{where}: scheduler", spec.scheduler, ("type", "grace_period", "reduction_factor"))
    check_choice("scheduler.type", spec.scheduler.get("type", "asha"), ("asha", "none"))
    # ASHA judges a trial first after grace_period epochs and keeps 1/reduction_factor of them
    epochs = spec.train_config().epochs
    check_range("scheduler.grace_period", spec.scheduler.get("grace_period", 1), low=1, high=epochs, integer=True)
    check_range("scheduler.reduction_factor", spec.scheduler.get("reduction_factor", 3), low=1, ends="(]")
    spec.stopping.validate("stopping")
    if spec.repeats is not None:
        check_range("repeats", spec.repeats, low=1, integer=True)


def _validate_prune(spec: SweepSpec, where: str) -> None:
    _unknown(f"{where}: grid", spec.grid, _GRID_KEYS)
    for method in METHODS:
        _unknown(f"{where}: grid.{method}", spec.grid.get(method) or {}, (AMOUNT_KEYS[method],))
    targets = spec.grid.get("target", "generator")
    for target in [targets] if isinstance(targets, str) else targets or [None]:
        check_choice("grid.target", target, TARGETS)
    if "finetune_images" in spec.grid:  # fine-tune on a fixed random subset of the train split
        check_range("grid.finetune_images", spec.grid["finetune_images"], low=1, integer=True)
    recipes = spec.grid.get("recovery", [{}])
    if not isinstance(recipes, list) or not recipes or not all(isinstance(r, dict) for r in recipes):
        raise ConfigError(f"{where}: grid.recovery must be a non-empty list of mappings (got {brief(recipes)})")
    for recipe in recipes:
        _unknown(f"{where}: grid.recovery", recipe, RECIPE_KEYS)
    for key in ("finetune_epochs", "bn_recalibrate", "iterative_steps", "rewind_epoch", "mask_update", "density"):
        if key in spec.grid and (not isinstance(spec.grid[key], list) or not spec.grid[key]):
            raise ConfigError(f"{where}: grid.{key} must be a non-empty list (got {brief(spec.grid[key])})")
    check_range("tolerance", spec.tolerance, low=0.0)
    _validate_frontier(spec, where)
    if spec.registered_model is not None and (not isinstance(spec.registered_model, str)
                                              or not spec.registered_model.strip()):
        raise ConfigError(f"{where}: registered_model must be a non-empty name (got {brief(spec.registered_model)})")
    if not spec.prune_points():
        raise ConfigError(f"{where}: grid has no points; give grid.sensitivity.s, grid.percentage.q, "
                          "grid.channel.ratio and/or grid.sparse.sparsity lists")


RECIPE_SEARCHABLE = tuple(k for k in RECIPE_KEYS if k not in ("finetune_epochs", "schedule", "prune_steps",
                                                               "prune_every"))


def _validate_recipe_search(spec: SweepSpec, where: str) -> None:
    """A recipe search: distributions over the recovery settings of the grid's one fine-tuned point."""
    _unknown(f"{where}: search", spec.search, RECIPE_SEARCHABLE)
    pruned = [p for p in spec.prune_points() if not p.control]
    if len(pruned) != 1 or not pruned[0].finetune_epochs:
        raise ConfigError(f"{where}: a recipe search tunes one fine-tuned point: give one amount, one target and "
                          f"finetune_epochs: [N >= 1] (the grid makes {len(pruned)} pruned point(s))")
    base = dataclasses.asdict(pruned[0])
    for name, dist in spec.search.items():
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(f"{where}: search.{name} must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}}")
        (kind, args), = dist.items()
        check_choice(f"search.{name} distribution", kind, DISTRIBUTIONS)
        if not isinstance(args, list) or not args or (kind != "choice" and len(args) != 2):
            wanted = "values" if kind == "choice" else "[low, high]"
            raise ConfigError(f"{where}: search.{name}.{kind} needs a list ({wanted})")
        for value in args:
            PruneConfig(**{**base, name: value})  # each value must make a valid recipe
    check_range("num_samples", spec.num_samples, low=1, integer=True)
    _unknown(f"{where}: scheduler", spec.scheduler, ("type", "grace_period", "reduction_factor"))
    check_range("scheduler.grace_period", spec.scheduler.get("grace_period", 1), low=1,
                high=pruned[0].finetune_epochs, integer=True)
    for point in spec.initial_points:
        _unknown(f"{where}: initial_points", point, spec.search)


def _validate_frontier(spec: SweepSpec, where: str) -> None:
    if spec.searches_recipe:
        _validate_recipe_search(spec, where)
    elif spec.search not in ({}, "frontier"):
        raise ConfigError(f"{where}: a pruning sweep's search is `frontier` or distributions over recovery "
                          f"settings (got {brief(spec.search)})")
    elif spec.initial_points or spec.num_samples != 4:
        raise ConfigError(f"{where}: num_samples and initial_points belong to a search over recovery settings")
    _unknown(f"{where}: frontier", spec.frontier, ("bracket", "max_steps"))
    if spec.frontier and not spec.searches_frontier:
        raise ConfigError(f"{where}: frontier settings need `search: frontier`")
    check_range("frontier.bracket", spec.frontier.get("bracket", 0.05), low=0.0, high=1.0, ends="(]")
    check_range("frontier.max_steps", spec.frontier.get("max_steps", 8), low=0, integer=True)
    if spec.searches_frontier:
        for family in spec.frontier_families():
            if family.low >= family.high:
                raise ConfigError(f"{where}: search: frontier bisects between the lowest and highest amount the grid "
                                  f"lists; {family.name} has only {family.low:g}")
