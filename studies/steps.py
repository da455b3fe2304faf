"""The steps of ``ganlab study`` (issue 31's study v3), each a ``ganlab sweep`` subprocess, and what the study
keeps between runs: ``<out>/study_state.json`` names every finished step's sweep, so a study stopped anywhere (a
killed driver, a session's end) continues when run again — finished steps are skipped, an interrupted sweep is
resumed (``ganlab sweep resume``), the others start.

1. five dense sources; 2. a recipe search at 80 % (first source) for plain fine-tuning, distillation with the
adversarial weight free, and AGP + distillation; 3. one-shot pruning's frontier per method (percentage,
sensitivity, channel); 4. the frontier of each recipe step 2 chose; 5. iterative pruning with late rewinding;
6. sparse training (RigL, ERK) on its own grid. Then what each frontier buys: its stored size, its Deep-Compression
file (``ganlab compress``) against the dense fp32 generator, and for channel pruning the measured speed-up.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Step:
    key: str  # the state file's name for it, and the spec <scale>_<key>.yaml
    title: str
    kind: str  # train | prune
    sources: str = "all"  # prune: "all" dense sources, or "first"


STEPS = (
    Step("train", "dense sources", "train"),
    Step("recipe_ft", "plain fine-tuning's recipe, searched at 80 % on the first source", "prune", "first"),
    Step("recipe_distill", "distillation's recipe (adversarial weight free), searched at 80 %", "prune", "first"),
    Step("recipe_agp", "AGP + distillation's recipe, searched at 80 %", "prune", "first"),
    Step("frontier", "one-shot pruning's frontier per method, on every source", "prune"),
    Step("frontier_recovery", "the frontier of each searched recipe, against its dense control", "prune"),
    Step("frontier_lth", "iterative pruning with late rewinding: its frontier", "prune"),
    Step("sparse", "sparse training from scratch (RigL, ERK) on its own grid", "prune"),
)
RECIPE_STEPS = ("recipe_ft", "recipe_distill", "recipe_agp")


class StudyState:
    """``study_state.json``: the finished steps' sweep run ids (and the compress runs of the frontiers), written
    after each step (temp file, then rename)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"steps": {}, "compressed": {}}

    def save(self) -> None:
        from ganlab.files import write_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(json.dumps(self.data, indent=2), self.path)

    def done(self, key: str, sweep_run_id: str) -> None:
        self.data["steps"][key] = sweep_run_id
        self.save()

    def sweeps(self, given: list[str] | None = None) -> dict[str, str]:
        """The study's sweeps by step: the ones ``given`` (--report-only TRAIN PRUNE...), else the state's."""
        from ganlab.errors import ConfigError

        if given:
            return {"train": given[0], **{f"sweep {i}": s for i, s in enumerate(given[1:], 1)}}
        if "train" not in self.data["steps"]:
            raise ConfigError(f"{self.path}: no finished study to report on (run `ganlab study` without "
                              "--report-only, or give --report-only TRAIN PRUNE... sweep run ids)")
        return dict(self.data["steps"])


def run_steps(args, state: StudyState) -> None:
    """Every step not in ``state``, in order; every spec is read (and checked) before anything starts."""
    from studies.demo import run_step

    env = study_env(args)
    extra = [*(["--address", args.address] if args.address else []),
             *(["--data-dir", args.data_dir] if args.data_dir else [])]
    with tempfile.TemporaryDirectory(prefix="ganlab-study-") as tmp:
        paths = {s.key: spec_for(Path(args.specs), f"{args.scale}_{s.key}.yaml", args.dataset, Path(tmp))
                 for s in STEPS}
        if args.train_sweep and "train" not in state.data["steps"]:
            state.done("train", args.train_sweep)
        trained = yaml.safe_load(Path(paths["train"]).read_text())  # every dense source is pruned
        sources = str(1 + trained["repeats"] if trained.get("repeats") else trained.get("num_samples", 1))
        for number, step in enumerate(STEPS, 1):
            if step.key in state.data["steps"]:
                print(f"== {number}/{len(STEPS)} {step.title}: done (sweep {state.data['steps'][step.key]})")
                continue
            if step.key == "frontier_recovery":
                _searched_recipes_into(paths[step.key], state)
            command = _command(step, paths[step.key], state, sources)
            title = f"{number}/{len(STEPS)} {step.title}"
            state.done(step.key, run_step(title, [*command, *extra], env))


def _command(step: Step, path: str, state: StudyState, sources: str) -> list[str]:
    """``ganlab sweep ...`` for a step: a resume when its sweep folder holds an interrupted sweep."""
    from sweeps.storage import STATE_FILE, experiment_path

    spec = yaml.safe_load(Path(path).read_text())
    folder = Path(experiment_path(str(Path(spec.get("storage_path", "ray_results")).resolve()), spec["name"]))
    if (folder / STATE_FILE).is_file():
        return ["sweep", "resume", str(folder)]
    if step.kind == "train":
        return ["sweep", "train", path]
    top = "1" if step.sources == "first" else sources
    return ["sweep", "prune", path, "--from-sweep", state.data["steps"]["train"], "--top", top]


def searched_recipe(sweep_run_id: str) -> dict:
    """The recipe a recipe search chose: its fixed recovery settings (the spec's grid.recovery) with the searched
    ones it found best (best_config.json)."""
    from analysis.best import sweep_spec
    from analysis.runs import download
    from ganlab.errors import GanlabError
    from ganlab.tracking import schema
    from ganlab.tracking.store import tracking_uri

    spec = sweep_spec(sweep_run_id, tracking_uri())
    fixed = dict((spec.grid.get("recovery") or [{}])[0])
    with tempfile.TemporaryDirectory(prefix="ganlab-recipe-") as tmp:
        path = download(sweep_run_id, schema.BEST_CONFIG, Path(tmp))
        if path is None:
            raise GanlabError(f"recipe search {sweep_run_id} ({spec.name}) finished no trial, so it chose no recipe; "
                              "see its trials' errors in the MLflow UI, fix its spec and run the study again")
        best = json.loads(Path(path).read_text())
    # three significant digits: the recipe reads as a recipe (its run names and the report show it)
    return {**fixed, **{k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in best.items()}}


def _searched_recipes_into(path: str, state: StudyState) -> None:
    """Step 4's spec with grid.recovery = the recipes steps 2a-2c chose (handed on)."""
    spec = yaml.safe_load(Path(path).read_text())
    spec["grid"]["recovery"] = [searched_recipe(state.data["steps"][key]) for key in RECIPE_STEPS]
    print("the searched recipes handed on: " + "; ".join(json.dumps(r) for r in spec["grid"]["recovery"]))
    Path(path).write_text(yaml.safe_dump(spec, sort_keys=False))


def what_it_buys(frontiers: dict[str, dict], state: StudyState, env: dict[str, str]) -> list[dict[str, str]]:
    """Per family with a frontier: its first source's generator at the frontier, stored sparse (bytes) and as a
    Deep-Compression file (``ganlab compress``, 5-bit k-means; made once, kept in the state) against the dense fp32
    generator, and its measured latency against the dense one's (channel pruning's speed-up)."""
    from ganlab.tracking.store import get_run
    from studies.demo import run_step

    rows = []
    for name, answer in frontiers.items():
        within = answer.get("within")
        if not within or not within.get("run_ids"):
            continue
        run_id = within["run_ids"][0]
        if name not in state.data["compressed"]:
            state.data["compressed"][name] = run_step(f"compress the frontier of {name}",
                                                      ["compress", "--run-id", run_id, "--no-progress"], env)
            state.save()
        pruned, compressed = get_run(run_id).data.metrics, get_run(state.data["compressed"][name]).data.metrics
        dense_bytes = pruned["size_dense_bytes_generator"]
        speed = pruned["dense_latency_ms_generator"] / pruned["latency_ms_generator"] \
            if "latency_ms_generator" in pruned else None
        rows.append({"method and recipe": name, "frontier sparsity": f"{within['sparsity'] * 100:.1f} %",
                     "stored sparse / dense fp32": f"{pruned['size_sparse_bytes_generator'] / dense_bytes:.3f}",
                     ".glz file / dense fp32": f"{compressed['file_bytes'] / compressed['dense_bytes']:.3f} "
                     f"({compressed['compression_ratio']:.1f}× smaller)",
                     "latency vs dense": f"{speed:.2f}× faster" if speed else "–"})
    return rows


def spec_for(specs: Path, name: str, dataset: str, tmp: Path) -> str:
    """The scale's spec with the dataset swapped in (its epochs follow the dataset unless the spec sets them)."""
    from ganlab.config import read_yaml
    from ganlab.errors import ConfigError
    from sweeps.spec import spec_from_dict

    if not (specs / name).is_file():
        raise ConfigError(f"--specs {specs}: no {name} there")
    spec = read_yaml(specs / name, f"--specs {specs}:")
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"--specs {specs}: {name} must be a mapping of a sweep spec's keys (it is "
                          f"{'empty' if not spec else type(spec).__name__})")
    if spec.get("kind") == "train" and isinstance(spec.get("base"), dict):
        spec["base"]["dataset"] = dataset
    try:  # every step's spec valid before the first one runs
        spec_from_dict(spec, where=f"--specs {specs}: {name}")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if name in message else f"--specs {specs}: {name}: {message}") from None
    path = tmp / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def study_env(args) -> dict[str, str]:
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", f"study-{args.scale}-{args.dataset}")
    return {**os.environ, "MLFLOW_EXPERIMENT_NAME": experiment, "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1"}
