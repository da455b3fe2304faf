"""`ganlab study` (studies/study.py): the whole study (training sweep -> two pruning sweeps -> report ->
results.md, analysis/results.py), tiny. studies/demo.py chains the same commands (`make demo` runs it)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import run_main

TINY = {"dataset": "fashion-mnist", "image_size": 32, "limit": 256, "epochs": 1, "batch_size": 64, "ngf": 8,
        "ndf": 8, "eval_samples": 150}


def _specs(folder: Path) -> Path:
    folder.mkdir()
    common = {"resources": {"cpu": 1}, "max_concurrent": 2, "storage_path": str(folder / "ray")}
    (folder / "cpu_train.yaml").write_text(yaml.safe_dump({
        "kind": "train", "name": "tiny-train", "base": TINY, "search": {"seed": {"choice": [0, 1]}},
        "initial_points": [{"seed": 0}, {"seed": 1}], "num_samples": 2, "scheduler": {"type": "none"}, **common}))
    (folder / "cpu_prune.yaml").write_text(yaml.safe_dump({
        "kind": "prune", "name": "tiny-prune", "grid": {"sensitivity": {"s": [0.75]}, "percentage": {"q": [50]},
                                                         "samples": 150, "eval_draws": 2}, **common}))
    (folder / "cpu_prune_finetune.yaml").write_text(yaml.safe_dump({
        "kind": "prune", "name": "tiny-ft", "grid": {"percentage": {"q": [90]}, "finetune_epochs": [1],
                                                      "finetune_images": 128, "samples": 150, "eval_draws": 2,
                                                      "recovery": [{"distill_out": 10}], "controls": True},
        **common}))
    return folder


@pytest.mark.slow  # ~100 s: three sweeps end to end; verdicts and results.md are also in test_recovery, test_analysis
def test_study_runs_every_step_on_two_sources_and_writes_results_md(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["study", "--scale", "cpu", "--specs", str(_specs(tmp_path / "specs")),
                               "--out", str(tmp_path / "out"), "--results-md", str(tmp_path / "docs" / "r.md")])
    assert code == 0, err
    md = (tmp_path / "docs" / "r.md").read_text()
    points = pd.read_csv(tmp_path / "out" / "grid_points.csv")
    assert len(points) == 4 and (points["n"] == 2).all()  # every grid point on both dense sources
    finetuned = points[(points["param_finetune_epochs"] == 1) & ~points["control"]]
    assert len(finetuned) == 1 and finetuned["param_q"].iloc[0] == 90
    assert finetuned["reference"].iloc[0] == "dense control"  # compared with the same extra training
    assert set(points["verdict"]) <= {"within", "worse", "cannot tell"} and points["ratio_low"].notna().all()
    assert "FCD ratio [95 % CI]" in md and "dense control" in md and "± " in md
    assert "How FCD evolves with the fine-tuning images" in md and "FCD after 128 images" in md
    assert "| 0.75 | 0.566 |" in md  # the seed's table beside ours
    for link in re.findall(r"\]\(([^)]+\.png)\)", md):  # every figure it links is there
        assert (tmp_path / "docs" / link).resolve().is_file(), link
    assert "pareto_fcd.png" in md and "verdict_ratio.png" in md and "minutes" in md
    assert not list(tmp_path.glob("docs/*.tmp"))


def test_bad_study_input_exits_2_with_one_line(store, tmp_path):
    code, _, err = run_main(["study", "--scale", "huge"])
    assert code == 2 and "huge" in err
    code, _, err = run_main(["study", "--scale", "cpu", "--dataset", "mnist"])
    assert code == 2 and "mnist" in err
    code, _, err = run_main(["study", "--scale", "cpu", "--specs", str(tmp_path)])
    assert code == 2 and "no cpu_train.yaml" in err and len(err.strip().splitlines()) == 1
