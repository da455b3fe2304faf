"""A recipe search (a pruning sweep whose ``search`` holds distributions over the recovery settings,
sweeps/tuners.py): Optuna's TPE over one fine-tuned point, its study kept in ``optuna.db`` beside the tracking store,
ASHA on each fine-tuning pass's FCD, the best recipe and what mattered on the parent run (sweeps/results.py) and in
the report (analysis/recipes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganlab.errors import ConfigError
from sweeps.spec import spec_from_dict


def recipe_spec(tmp_path, **extra) -> dict:
    return {"kind": "prune", "name": "recipe", "storage_path": str(tmp_path / "ray"),
            "search": {"distill_out": {"loguniform": [1.0, 100.0]}, "adv_weight": {"uniform": [0.2, 1.0]},
                       "lr_scale": {"loguniform": [0.3, 1.0]}},
            "num_samples": 4, "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
            "grid": {"percentage": {"q": [60]}, "finetune_epochs": [2], "finetune_images": 256, "samples": 129,
                     "eval_draws": 2},
            "resources": {"cpu": 1}, **extra}


@pytest.mark.parametrize("patch, needle", [
    ({"search": {"seed": {"choice": [1, 2]}}}, "search: unknown key 'seed'"),
    ({"grid": {"percentage": {"q": [60, 80]}, "finetune_epochs": [2]}}, "one fine-tuned point"),
    ({"grid": {"percentage": {"q": [60]}}}, "one fine-tuned point"),
    ({"search": {"d_lr_scale": {"uniform": [0.0, 1.0]}}}, "d_lr_scale"),  # 0 holds D: --hold-d-steps does that
    ({"scheduler": {"grace_period": 3}}, "grace_period"),
])
def test_a_bad_recipe_search_names_the_problem(tmp_path, patch, needle):
    with pytest.raises(ConfigError, match=needle):
        spec_from_dict({**recipe_spec(tmp_path), **patch})


@pytest.mark.slow  # 25-50 s of a real sweep or server: make test-slow (CI runs it), to keep make test under 10 min
def test_a_recipe_search_tunes_the_recovery_keeps_its_study_beside_the_store_and_says_what_mattered(
        local_ray, trained, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.store import sqlite_path
    from sweeps.runner import run_sweep
    from sweeps.sources import Sources

    from conftest import children, run_main

    uri, source = trained
    parent_id = run_sweep(spec_from_dict(recipe_spec(tmp_path)), Sources.of(source))
    client = MlflowClient(uri)
    runs = children(uri, parent_id)
    assert len(runs) == 4 and len({r.data.tags["ganlab.grid_point"] for r in runs}) == 4  # 4 recipes, none reused
    for r in runs:
        p = r.data.params
        assert float(p["q"]) == 60 and 1.0 <= float(p["distill_out"]) <= 100 and 0.2 <= float(p["adv_weight"]) <= 1
    finished = [r for r in runs if "fcd" in r.data.metrics]
    assert finished and all(len(client.get_metric_history(r.info.run_id, "finetune_fcd")) == 2 for r in finished)
    with open(client.download_artifacts(parent_id, "best_config.json", str(tmp_path))) as f:
        best = json.load(f)
    assert set(best) == {"distill_out", "adv_weight", "lr_scale"}
    best_run = client.get_run(client.get_run(parent_id).data.tags["ganlab.best_run_id"])
    assert best_run.data.metrics["fcd"] == pytest.approx(min(r.data.metrics["fcd"] for r in finished))
    # the Optuna study lives beside the tracking store: optuna-dashboard and Optuna's plots read it
    study = optuna.load_study(study_name="recipe",
                              storage=f"sqlite:///{sqlite_path(uri).parent / 'optuna.db'}")
    assert len(study.trials) == 4 and study.best_value == pytest.approx(
        min(t.value for t in study.trials if t.value is not None))
    if len(finished) >= 3:  # importances need three finished recipes (ASHA may stop more)
        with open(client.download_artifacts(parent_id, "recipe_importance.json", str(tmp_path))) as f:
            importance = json.load(f)
        assert set(importance) == set(best) and sum(importance.values()) == pytest.approx(1.0, abs=1e-6)
        # ganlab analyze shows which settings mattered (analysis/recipes.py)
        code, out, err = run_main(["analyze", "--sweep", parent_id, "--out", str(tmp_path / "reports")])
        assert code == 0, err
        page = Path(out.strip().splitlines()[-1].split("report: ")[1]).read_text()
        assert "The recipes, searched" in page and "what mattered" in page
