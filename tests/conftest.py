"""Shared fixtures: real MLflow stores in temp dirs, a tiny CIFAR-format dataset, a tiny trained run.

Nothing downloads during tests (GANLAB_OFFLINE=1). Fashion-MNIST comes from Debian's
dataset-fashion-mnist (``make test`` installs it); the scoring classifier is trained once into
the repo's .cache/ and reused by later runs in the same checkout.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "sweeps" / "specs"  # the bundled sweep specs
os.environ["GANLAB_OFFLINE"] = "1"
os.environ.setdefault("GANLAB_CACHE_DIR", str(REPO / ".cache" / "ganlab"))
os.environ.setdefault("GANLAB_DATA_DIR", str(REPO / ".cache" / "data"))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

def run_main(args):
    """``ganlab ARGS`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from ganlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


TINY_TRAIN = ["--dataset", "fashion-mnist", "--image-size", "32", "--limit", "256", "--epochs", "1",
              "--batch-size", "64", "--ngf", "16", "--ndf", "16", "--no-progress"]
# a training sweep's tiny base config (every sweep test's `base:`)
TINY_BASE = {"dataset": "fashion-mnist", "image_size": 32, "limit": 256, "epochs": 2, "batch_size": 64,
             "ngf": 8, "ndf": 8, "eval_samples": 200}


@pytest.fixture(scope="module")
def local_ray():
    """The local Ray a sweep starts for itself (sweeps.cluster), kept for the module's sweeps."""
    from ray._common.utils import get_ray_address_file

    from sweeps.cluster import init_ray, stop_local_ray

    current = Path(get_ray_address_file(None))  # what `ray start --head` repoints; put back at the end
    before = current.read_text() if current.is_file() else None
    init_ray(None)
    yield
    stop_local_ray()
    assert (current.read_text() if current.is_file() else None) == before


def children(uri_or_client, parent_id: str) -> list:
    """A sweep's child runs (every page), as ganlab itself queries them (schema.child_runs)."""
    from mlflow.tracking import MlflowClient

    from ganlab.tracking import schema

    client = uri_or_client if isinstance(uri_or_client, MlflowClient) else MlflowClient(uri_or_client)
    return schema.child_runs(client, client.get_run(parent_id).info.experiment_id, parent_id)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow sqlite store; the working directory is a temp dir."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def all_runs(uri: str, experiment: str = "ganlab"):
    """Every run (deleted ones too) of an experiment, through the MLflow client."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def write_cifar_fixture(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """A tiny CIFAR-10 in its own on-disk format: pickled dicts of uint8 rows + labels, and meta."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": per_batch}, f)
    return root


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """The fixture, its files' md5s trusted by the loader for this test only (see TRUSTED_CIFAR10_MD5)."""
    import hashlib

    from ganlab.gan import data

    root = write_cifar_fixture(tmp_path / "cifar-data")
    digests = {hashlib.md5(p.read_bytes()).hexdigest() for p in (root / "cifar-10-batches-py").iterdir()}
    monkeypatch.setattr(data, "TRUSTED_CIFAR10_MD5", digests)
    return root


@pytest.fixture(scope="session")
def evaluator_32():
    """The Fashion-MNIST 32 px scoring classifier (trained once, cached) with held-out reals."""
    from ganlab.metrics.distribution import Evaluator

    return Evaluator.for_dataset("fashion-mnist", 32, real_samples=1000, progress=False)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A small trained 32 px Fashion-MNIST run in its own store: (uri, run_id, workdir).

    Trained for 96 steps: enough that its weights are no longer the Gaussian initialisation (the
    pruning tests rely on that), small enough for a few seconds on 2 cores.
    """
    workdir = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        code, out, err = run_main(["train", *TINY_TRAIN, "--limit", "3072", "--epochs", "2", "--lr-d", "4e-4",
                                   "--lr-g", "8e-4"])
        assert code == 0, err
    run_id = out.strip().splitlines()[-1].split("run_id: ")[1]
    return uri, run_id, workdir


@pytest.fixture
def trained(trained_run, monkeypatch):
    """trained_run's (uri, run_id), its store the current one and its folder the working directory."""
    uri, run_id, workdir = trained_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(workdir)
    return uri, run_id


def replayed(answer: dict, low: float, high: float, bracket: float, max_steps: int) -> str:
    """The status the pure bisection reaches when fed the recorded steps in the order it asks for them; fails if
    it asks for an amount that was not run, or if a recorded step was never asked for (run twice, or astray)."""
    from sweeps.frontier import Step, bisect

    recorded = {s["amount"]: Step(**{**s, "run_ids": tuple(s.get("run_ids", ()))}) for s in answer["steps"]}
    judged: dict[float, Step] = {}
    while (state := bisect(low, high, judged, bracket, max_steps)).next_amount is not None:
        assert state.next_amount in recorded, (state.next_amount, sorted(recorded))
        judged[state.next_amount] = recorded[state.next_amount]
    assert set(judged) == set(recorded)
    return state.status


def frontier_spec(tmp_path, name: str, **extra) -> dict:
    return {"kind": "prune", "name": name, "storage_path": str(tmp_path / "ray"), "search": "frontier",
            "frontier": {"bracket": 0.1, "max_steps": 2},
            "grid": {"percentage": {"q": [20, 90]}, "finetune_epochs": [0, 1], "controls": True,
                     "finetune_images": 256, "samples": 129, "eval_draws": 2},
            "resources": {"cpu": 1}, **extra}
