"""`ganlab study` (studies/study.py, studies/steps.py): the whole study v3 (dense sources -> recipe searches ->
frontier searches -> sparse training -> what the frontiers buy -> report -> results.md, analysis/results.py),
tiny, stopped and continued. studies/demo.py chains the same commands (`make demo` runs it)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_main

TINY = {"dataset": "fashion-mnist", "image_size": 32, "limit": 256, "epochs": 1, "batch_size": 64, "ngf": 8,
        "ndf": 8, "eval_samples": 150}


def _specs(folder: Path) -> Path:
    """Every step of the study at a size a test runs: 2 sources, 1 epoch, 2-recipe searches, 1-step bisections."""
    folder.mkdir()
    common = {"resources": {"cpu": 1}, "max_concurrent": 2, "storage_path": str(folder / "ray")}
    scoring = {"samples": 150, "eval_draws": 2}
    tuning = {"percentage": {"q": [80]}, "finetune_epochs": [2], "finetune_images": 128, **scoring}
    recipe = {"num_samples": 2, "scheduler": {"type": "none"}}
    frontier = {"search": "frontier", "frontier": {"bracket": 0.05, "max_steps": 1}}
    specs = {
        "train": {"kind": "train", "base": {**TINY, "rewind_epoch": 0}, "search": {"seed": {"choice": [0, 1]}},
                  "initial_points": [{"seed": 0}, {"seed": 1}], "num_samples": 2, "scheduler": {"type": "none"}},
        "recipe_ft": {"kind": "prune", "search": {"lr_scale": {"loguniform": [0.1, 1.0]}}, "grid": tuning, **recipe},
        "recipe_distill": {"kind": "prune", "search": {"distill_out": {"loguniform": [1.0, 100.0]}},
                           "grid": {**tuning, "recovery": [{"distill_out": 10}]}, **recipe},
        "recipe_agp": {"kind": "prune", "search": {"adv_weight": {"uniform": [0.5, 1.0]}},
                       "grid": {**tuning, "finetune_images": 256,
                                "recovery": [{"schedule": "agp", "distill_out": 10, "prune_steps": 2}]}, **recipe},
        "frontier": {"kind": "prune", "grid": {"percentage": {"q": [20, 90]}, "sensitivity": {"s": [0.1, 1.5]},
                                               **scoring}, **frontier},
        "frontier_recovery": {"kind": "prune", "grid": {**tuning, "percentage": {"q": [20, 90]},
                                                        "controls": True}, **frontier},
        "frontier_lth": {"kind": "prune", "grid": {**tuning, "percentage": {"q": [20, 90]}, "iterative_steps": [2],
                                                   "rewind_epoch": [0], "finetune_epochs": [1], "controls": True},
                         **frontier},
        "sparse": {"kind": "prune", "grid": {"sparse": {"sparsity": [0.5]}, "density": ["erk"], **scoring}},
    }
    for key, spec in specs.items():
        (folder / f"cpu_{key}.yaml").write_text(yaml.safe_dump({"name": f"tiny-{key.replace('_', '-')}", **spec,
                                                                **common}))
    return folder


@pytest.mark.slow  # ~5 minutes: eight sweeps end to end, then the last three again
@pytest.mark.timeout(1500)  # eleven sweeps: twice the suite's 600 s on a busy machine
def test_study_runs_every_step_on_two_sources_writes_results_md_and_continues_where_it_stopped(
        store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["study", "--scale", "cpu", "--specs", str(_specs(tmp_path / "specs")), "--out", str(tmp_path / "out"),
            "--results-md", str(tmp_path / "docs" / "r.md")]
    code, out, err = run_main(args)
    assert code == 0, err
    state = json.loads((tmp_path / "out" / "study_state.json").read_text())
    assert list(state["steps"]) == ["train", "recipe_ft", "recipe_distill", "recipe_agp", "frontier",
                                    "frontier_recovery", "frontier_lth", "sparse"]
    md = (tmp_path / "docs" / "r.md").read_text()
    assert "## The frontier, searched" in md and "## The recipes, searched" in md
    assert "What the frontier buys" in md or "none" in md  # a frontier found is compressed and measured
    for name in ("percentage", "sensitivity", "percentage ft2", "percentage ft1 rewind0 x2"):
        assert f"| {name}" in md, name
    assert "What the budget limits" in md and "frontier_lth: " in md  # each step's images, rounds included
    assert "FCD∞" in md and "FCD at 150" in md  # the verdict's figure named, FCD at N beside it
    for link in re.findall(r"\]\(([^)]+\.png)\)", md):  # every figure it links is there
        assert (tmp_path / "docs" / link).resolve().is_file(), link
    assert not list(tmp_path.glob("docs/*.tmp"))
    # stopped after its fifth step (the state says so, the later sweeps never started): run again, it continues
    # with the sixth
    for key in ("frontier_recovery", "frontier_lth", "sparse"):
        del state["steps"][key]
        shutil.rmtree(tmp_path / "specs" / "ray" / f"tiny-{key.replace('_', '-')}")
    (tmp_path / "out" / "study_state.json").write_text(json.dumps(state))
    code, out, err = run_main(args)
    assert code == 0, err
    assert "5/8 one-shot pruning's frontier per method, on every source: done" in out
    again = json.loads((tmp_path / "out" / "study_state.json").read_text())
    assert again["steps"]["frontier"] == state["steps"]["frontier"] and len(again["steps"]) == 8


def test_bad_study_input_exits_2_with_one_line(store, tmp_path):
    code, _, err = run_main(["study", "--scale", "huge"])
    assert code == 2 and "huge" in err
    code, _, err = run_main(["study", "--scale", "cpu", "--dataset", "mnist"])
    assert code == 2 and "mnist" in err
    code, _, err = run_main(["study", "--scale", "cpu", "--specs", str(tmp_path)])
    assert code == 2 and "no cpu_train.yaml" in err and len(err.strip().splitlines()) == 1
