"""The command line a researcher meets first: it says what it measured, starts fast, and tells its version."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from conftest import REPO, TINY_TRAIN, run_main


def test_version():
    code, out, err = run_main(["--version"])
    assert code == 0 and out.startswith("ganlab ") and out.split()[1][0].isdigit()


def test_help_imports_no_torch_so_it_starts_at_once():
    """--help builds every command's parser (core and plugins) without importing torch, pandas or Ray."""
    code = ("import sys\nfrom ganlab.cli import build_parser\n"
            "for argv in (['--help'], ['prune', '--help'], ['sweep', 'prune', '--help']):\n"
            "    try:\n        build_parser().parse_args(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'ray', 'mlflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_train_prints_a_line_per_epoch_and_a_summary_and_logs_system_metrics(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # the default 10 s outlasts a tiny run
    code, out, err = run_main(["train", *TINY_TRAIN, "--epochs", "2", "--eval-every", "1", "--eval-samples", "150"])
    assert code == 0, err
    metrics = MlflowClient(store).get_run(out.split()[-1]).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)
    lines = out.strip().splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1", "2"] and all("fcd" in line for line in epochs)
    assert lines[-3].startswith("trained: FCD ") and lines[-2].startswith("ui: ") and lines[-1].startswith("run_id: ")


def test_prune_and_evaluate_say_what_they_measured(trained):
    uri, source = trained
    code, out, err = run_main(["prune", "--run-id", source, "--method", "percentage", "--q", "50", "--samples",
                               "150", "--eval-draws", "2", "--no-progress"])
    assert code == 0, err
    summary = out.strip().splitlines()[-3]
    assert summary.startswith("pruned: sparsity 0.500, FCD ") and "vs dense" in summary and "ratio" in summary
    assert "coverage" in summary and ("MB" in summary or "kB" in summary)
    code, out, err = run_main(["evaluate", "--run-id", source, "--samples", "150", "--no-progress"])
    assert code == 0, err
    assert out.strip().splitlines()[-3].startswith("evaluated: FCD ")


def test_scoring_raises_no_warning_the_user_cannot_act_on(evaluator_32):
    import torch

    fake = torch.rand(200, 1, 32, 32) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluator_32.evaluate_images(fake)


def test_bool_flags_say_their_defaults_in_words():
    code, out, _ = run_main(["train", "--help"])
    assert "(default: False)" not in out and "(default: True)" not in out and "(default: off)" in out


@pytest.mark.slow  # ~25 s with its notebook sweep (Ray)
def test_the_python_api_page_runs_as_written(store):
    """docs/python-api.md's code blocks, run in order in one namespace against a fresh store."""
    import re

    from conftest import REPO

    page = (REPO / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "python-api.md", "exec"), namespace)  # noqa: S102 - the page's own example
    assert namespace["pruned"].metrics["sparsity"] > 0.79 and namespace["sweep"]


def test_train_takes_a_config_file_with_a_sweeps_base_keys(store, tmp_path):
    import yaml

    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"dataset": "fashion-mnist", "image_size": 32, "limit": 256, "epochs": 1,
                                    "batch_size": 64, "ngf": 8, "ndf": 8}))
    code, out, err = run_main(["train", "--config", str(path), "--ngf", "16", "--no-progress"])
    assert code == 0, err
    from mlflow.tracking import MlflowClient

    params = MlflowClient(store).get_run(out.split()[-1]).data.params
    assert params["ngf"] == "16" and params["ndf"] == "8" and params["limit"] == "256"  # flags win over the file
    path.write_text("epochs: 1\nwidth: 3\n")
    code, out, err = run_main(["train", "--config", str(path)])
    assert code == 2 and "width" in err and len(err.strip().splitlines()) == 1


def test_a_failed_download_names_the_url_and_the_reason():
    import urllib.error

    from ganlab.gan.data import _missing

    message = str(_missing("cifar10", [REPO], urllib.error.URLError(ConnectionRefusedError(111, "refused"))))
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message and "refused" in message
    assert "allow the download" not in message and "GANLAB_OFFLINE" not in message
    offline = str(_missing("cifar10", [REPO], None))
    assert "GANLAB_OFFLINE" in offline


def test_bundled_specs_resolve_by_name_and_are_listed(store):
    code, out, err = run_main(["sweep", "list"])
    assert code == 0, err
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert "demo_train" in names and "demo_prune" in names
    from sweeps.spec import find_spec

    assert find_spec("demo_train").name == "demo_train.yaml" == find_spec("sweeps/demo_train.yaml").name
    code, out, err = run_main(["sweep", "train", "no_such_spec"])
    assert code == 2 and "bundled specs: " in err and "demo_train" in err


def test_a_sweep_never_mixes_its_state_into_an_earlier_sweeps_folder(store, tmp_path):
    from ganlab.errors import ConfigError
    from sweeps.runner import _fresh_folder
    from sweeps.spec import load_spec
    from sweeps.storage import STATE_FILE

    spec = load_spec("demo_train")
    spec.storage_path = str(tmp_path / "ray_results")
    (tmp_path / "ray_results" / spec.name).mkdir(parents=True)
    assert _fresh_folder(spec, new=False) is spec  # an empty folder holds no sweep
    (tmp_path / "ray_results" / spec.name / STATE_FILE).write_text("{}")
    code, out, err = run_main(["sweep", "train", "demo_train"])  # its storage_path is ./ray_results: this one
    assert code == 2 and "already holds a sweep" in err and "--new" in err
    assert _fresh_folder(spec, new=True).name == f"{spec.name}-2"
    try:
        _fresh_folder(spec, new=False)
    except ConfigError as exc:
        assert "ganlab sweep resume" in str(exc)



def test_no_system_metrics_when_told_not_to(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    code, out, err = run_main(["train", *TINY_TRAIN, "--no-system-metrics"])
    assert code == 0, err
    assert not any(k.startswith("system/") for k in MlflowClient(store).get_run(out.split()[-1]).data.metrics)
