"""sweeps/spec.py: a spec's keys checked and named, the grid points it makes (sweeps/grid.py), the bundled specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganlab.errors import ConfigError
from sweeps.spec import load_spec, spec_from_dict

from conftest import TINY_BASE


@pytest.mark.parametrize("patch, needle", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"base": {**TINY_BASE, "lr": 0.1}}, "base: unknown key 'lr'"),
    ({"search": {"lr_d": {"normal": [0, 1]}}}, "search.lr_d distribution='normal'"),
    ({"search": {"dataset": {"choice": ["cifar10"]}}}, "search: unknown key 'dataset'"),
    ({"search": {"batch_size": {"choice": [64, -1]}}}, "batch_size=-1"),
    ({"objective": {"metric": "accuracy"}}, "objective.metric='accuracy'"),
    ({"resources": {"cpu": 1, "tpu": 1}}, "resources: unknown key 'tpu'"),
    ({"kind": "evaluate"}, "kind='evaluate'"),
    ({"grid": {}}, "unknown key 'grid'"),
    ({"search": {"lr_d": {"uniform": [1e-3, 1e-4]}}}, "search.lr_d.uniform has low=0.001 >= high=0.0001"),
    ({"search": {"lr_d": {"loguniform": [1e-3, 1e-3]}}}, "low=0.001 >= high=0.001"),
    ({"search": {"batch_size": {"randint": [128, 64]}}}, "search.batch_size.randint has low=128"),
    ({"scheduler": {"type": "asha", "grace_period": 0}}, "scheduler.grace_period=0"),
    ({"scheduler": {"type": "asha", "grace_period": 5}}, "scheduler.grace_period=5 is out of range"),
    ({"scheduler": {"type": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor=1"),
    ({"stopping": {"min_loss_d": float("nan")}}, "stopping.min_loss_d=nan"),
    ({"stopping": {"grace_epochs": -1}}, "stopping.grace_epochs=-1"),
])
def test_bad_specs_name_the_key_and_what_is_allowed(patch, needle):
    raw = {"kind": "train", "name": "x", "base": TINY_BASE, "search": {"lr_d": {"loguniform": [1e-4, 1e-3]}}}
    raw.update(patch)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        spec_from_dict(raw)


def test_bad_prune_grid():
    with pytest.raises(ConfigError, match="q=120"):
        spec_from_dict({"kind": "prune", "name": "x", "grid": {"percentage": {"q": [20, 120]}}})
    with pytest.raises(ConfigError, match="no points"):
        spec_from_dict({"kind": "prune", "name": "x", "grid": {"finetune_epochs": [0]}})
    grid = {"percentage": {"q": [20]}}
    with pytest.raises(ConfigError, match="tolerance=-0.1 is out of range"):
        spec_from_dict({"kind": "prune", "name": "x", "grid": grid, "tolerance": -0.1})
    with pytest.raises(ConfigError, match="registered_model must be a non-empty name"):
        spec_from_dict({"kind": "prune", "name": "x", "grid": grid, "registered_model": " "})
    with pytest.raises(ConfigError, match="unknown key 'tolerance'"):  # a training sweep registers nothing
        spec_from_dict({"kind": "train", "name": "x", "tolerance": 0.1})
    assert spec_from_dict({"kind": "prune", "name": "x", "grid": grid}).model_name == "x-generator"


def test_rewinding_and_iterative_axes_make_only_the_points_that_can_be():
    spec = spec_from_dict({"kind": "prune", "name": "lt", "grid": {
        "percentage": {"q": [50]}, "channel": {"ratio": [0.5]}, "finetune_epochs": [0, 1],
        "rewind_epoch": [None, 1], "iterative_steps": [1, 3]}})
    points = {(p.method, p.finetune_epochs, p.rewind_epoch, p.iterative_steps) for p in spec.prune_points()}
    assert points == {("percentage", 0, None, 1), ("percentage", 1, None, 1), ("percentage", 1, 1, 1),
                      ("percentage", 1, None, 3), ("percentage", 1, 1, 3), ("channel", 0, None, 1),
                      ("channel", 1, None, 1)}
    with pytest.raises(ConfigError, match="rewind_epoch"):
        spec_from_dict({"kind": "prune", "name": "lt", "grid": {"percentage": {"q": [50]}, "rewind_epoch": 1}})


def test_shipped_specs_are_valid():

    repo = Path(__file__).parents[1]
    paths = sorted((repo / "sweeps" / "specs").glob("*.yaml"))
    assert len(paths) >= 11  # the demo's, the examples and the study's, all in sweeps/specs/
    for path in paths:
        spec = load_spec(path)
        assert spec.kind in ("train", "prune")
        # what a sweep stores for `ganlab sweep resume` reads back to the same spec
        assert spec_from_dict(spec.to_dict()).to_dict() == spec.to_dict()
