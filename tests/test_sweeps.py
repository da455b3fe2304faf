"""Ray Tune sweeps on a real local Ray (2 CPUs) and real MLflow stores: tiny trials, 32 px."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from ganlab.errors import ConfigError
from analysis.best import register_best
from sweeps.runner import run_sweep
from sweeps.spec import load_spec, spec_from_dict

from conftest import REPO, TINY_TRAIN

REPO_SPECS = REPO / "sweeps"
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


def children(uri, parent_id):
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_training_sweep_stops_a_diverging_trial_and_finishes_the_others(local_ray, store, evaluator_32, tmp_path,
                                                                         capfd):
    spec = spec_from_dict({
        "kind": "train", "name": "t-sweep", "storage_path": str(tmp_path / "ray"), "base": TINY_BASE,
        "search": {"lr_d": {"loguniform": [1e-4, 4e-4]}, "lr_g": {"loguniform": [2e-4, 6e-4]}},
        "initial_points": [{"lr_d": 50.0, "lr_g": 50.0}],  # absurd: this trial must diverge
        "num_samples": 3, "max_concurrent": 2, "scheduler": {"type": "none"},
        "stopping": {"grace_epochs": 1, "min_coverage": 0}, "resources": {"cpu": 1}})
    import torch

    torch.set_num_threads(2)  # the driver's own, whatever an earlier test left
    parent_id = run_sweep(spec)
    banner = capfd.readouterr().out
    assert re.search(r"Number of trials\s+3\b", banner), banner[:2000]  # was 9223372036854775807 (num_samples=-1)

    assert os.environ["MLFLOW_TRACKING_URI"] == store  # the served URI does not outlive the sweep
    assert torch.get_num_threads() == 2  # the driver's one-thread evaluator set-up gave them back
    client = MlflowClient(store)
    parent = client.get_run(parent_id)
    assert parent.data.tags["ganlab.kind"] == "sweep" and parent.info.status == "FINISHED"
    assert "spec.yaml" in {a.path for a in client.list_artifacts(parent_id)}
    runs = children(store, parent_id)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    diverged = [r for r in runs if r.data.tags["ganlab.status"] == "diverged"]
    healthy = [r for r in runs if r.data.tags["ganlab.status"] == "ok"]
    assert len(diverged) == 1 and float(diverged[0].data.params["lr_d"]) == 50.0
    assert len(client.get_metric_history(diverged[0].info.run_id, "images_per_sec")) == 1  # stopped after epoch 1
    for r in healthy:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fcd")] == [1, 2]
        assert {"kid", "coverage", "class_kl", "loss_d"} <= set(r.data.metrics)
        assert {"samples/epoch_002.png"} <= {a.path for a in client.list_artifacts(r.info.run_id, "samples")}
    assert parent.data.tags["ganlab.best_run_id"] in {r.info.run_id for r in healthy}


def test_pruning_sweep_with_finetuning_reads_data_dir_and_analyzes(local_ray, store, cifar_dir, tmp_path,
                                                                     monkeypatch):
    # The source is a CIFAR-10 run whose data lives only in --data-dir: fine-tuning trials must read it
    # from there (they read the default dir before), and `ganlab analyze` must read what they logged.
    import tempfile
    from pathlib import Path

    import mlflow
    import numpy as np
    import pandas as pd
    import torch

    from conftest import run_main

    monkeypatch.setenv("GANLAB_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_main(["train", "--dataset", "cifar10", "--image-size", "32", "--batch-size", "50",
                               "--ngf", "8", "--ndf", "8", "--epochs", "1", "--data-dir", str(cifar_dir),
                               "--no-progress"])
    assert code == 0, err
    source = out.split()[-1]
    spec = spec_from_dict({"kind": "prune", "name": "p-sweep", "storage_path": str(tmp_path / "ray"),
                           "grid": {"sensitivity": {"s": [0.5]}, "percentage": {"q": [30, 70]},
                                    "finetune_epochs": [0, 1], "samples": 150},
                           "resources": {"cpu": 1}})
    parent_id = run_sweep(spec, from_run=source, data_dir=str(cifar_dir))
    runs = children(store, parent_id)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(store)
    assert "ganlab.registered_model" not in client.get_run(parent_id).data.tags  # the engine registers nothing
    register_best(parent_id, store)  # the step after the sweep (`ganlab sweep prune` runs both)
    for r in runs:
        p, m = r.data.params, r.data.metrics
        assert r.data.tags["ganlab.kind"] == "prune" and r.data.tags["ganlab.source_run_id"] == source
        wanted = {"ssim_mean", "msssim_mean", "uqi_mean", "fcd", "kid", "coverage", "size_sparse_bytes"}
        assert wanted <= set(m)
        if p["method"] == "percentage":
            assert m["sparsity"] == pytest.approx(float(p["q"]) / 100, abs=0.01)
        else:
            assert 0.3 < m["sparsity"] < 0.5
        finetuned = client.get_metric_history(r.info.run_id, "loss_d")
        assert len(finetuned) == (2 if p["finetune_epochs"] == "1" else 0)  # 100 images / 50 per step
        assert "sparsity/generator.csv" in {a.path for a in client.list_artifacts(r.info.run_id, "sparsity")}

    # the operating point, by the paired verdict: the most pruned point "within" (else the lowest ratio),
    # registered as <name>-generator@best and loadable by MLflow alone; the version says why it was chosen
    parent = client.get_run(parent_id)
    verdicts = pd.read_csv(client.download_artifacts(parent_id, "verdicts.csv", str(tmp_path / "v")))
    best = client.get_run(parent.data.tags["ganlab.best_run_id"]).data.metrics
    within = verdicts[(verdicts["verdict"] == "within") & ~verdicts["control"]]
    if len(within):
        assert best["sparsity"] == pytest.approx(within["sparsity_mean"].max())
    else:
        assert parent.data.metrics["best_fcd_ratio"] == pytest.approx(verdicts["ratio"].min())
    assert parent.data.tags["ganlab.best_verdict"] in ("within", "worse", "cannot tell")
    assert "trials_sparsity_vs_fcd_ratio.png" in {a.path for a in client.list_artifacts(parent_id)}
    assert parent.data.tags["ganlab.registered_model"] == "models:/p-sweep-generator@best"
    version = client.get_model_version_by_alias("p-sweep-generator", "best")
    assert version.run_id == parent.data.tags["ganlab.best_run_id"]
    # an MLflow 3 model of the best trial (the experiment's Models tab), carrying why it was chosen
    [logged] = client.search_logged_models([parent.info.experiment_id], f"source_run_id = '{version.run_id}'")
    assert version.source == f"models:/{logged.model_id}" and logged.status == "READY"
    assert logged.tags["verdict"] == parent.data.tags["ganlab.best_verdict"] and "fcd_ratio" in logged.tags
    assert [o.model_id for o in client.get_run(version.run_id).outputs.model_outputs] == [logged.model_id]
    assert version.tags["source_run_id"] == source and version.tags["verdict"] == parent.data.tags[
        "ganlab.best_verdict"] and {"sparsity", "fcd_ratio", "fcd_ratio_ci95", "method"} <= set(version.tags)
    assert len({r.info.run_name for r in runs}) == 6  # trials tell themselves apart in the runs table
    assert all(r.data.tags["mlflow.source.name"] == "ganlab prune" and "mlflow.user" in r.data.tags for r in runs)
    mlflow.set_tracking_uri(store)  # as a user of the registry does (other tests may have set another store)
    model = mlflow.pyfunc.load_model("models:/p-sweep-generator@best")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 100, 1, 1)
    noise = np.random.default_rng(0).standard_normal((3, 100, 1, 1)).astype(np.float32)
    images = model.predict(noise)
    assert images.shape == (3, 3, 32, 32) and np.abs(images).max() <= 1.0
    with tempfile.TemporaryDirectory() as d:  # the same images as the trial's own checkpoint gives
        from ganlab.runs.source import state_from_source

        g = state_from_source(version.run_id, Path(d), "cpu", store, with_optimizers=False).generator.eval()
        with torch.no_grad():
            np.testing.assert_allclose(images, g(torch.from_numpy(noise)).numpy(), atol=1e-5)

    code, out, err = run_main(["analyze", "--sweep", parent_id, "--out", str(tmp_path / "reports")])
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1].split("report: ")[1]).parent
    front = pd.read_csv(folder / "pareto_front.csv")
    assert {"fcd", "ssim_mean"} <= set(";".join(front["on_front"]).split(";"))
    assert set(" ".join(front["run_ids"]).split()) <= {r.info.run_id for r in runs}
    for name in ("pareto_fcd.png", "pruning_strips.png", "layer_sparsity.png"):
        assert (folder / name).is_file(), name


@pytest.mark.slow  # 50 s: make test's 10-minute budget (make test-slow runs it)
def test_a_training_sweep_repeats_its_best_and_a_pruning_sweep_prunes_its_top_k(local_ray, store, evaluator_32,
                                                                                tmp_path):
    import pandas as pd

    from conftest import run_main

    base = {**TINY_BASE, "epochs": 1}
    spec = spec_from_dict({"kind": "train", "name": "rep", "storage_path": str(tmp_path / "ray"), "base": base,
                           "search": {"lr_d": {"choice": [2e-4, 3e-4]}}, "num_samples": 2, "repeats": 1,
                           "scheduler": {"type": "none"}, "stopping": {"min_coverage": 0}, "resources": {"cpu": 1}})
    train_id = run_sweep(spec)
    client = MlflowClient(store)
    parent = client.get_run(train_id)
    runs = children(store, train_id)
    best = parent.data.tags["ganlab.best_run_id"]
    repeats = [r for r in runs if r.data.tags.get("ganlab.repeat_of") == best]
    assert len(runs) == 3 and len(repeats) == 1 and all(r.info.status == "FINISHED" for r in runs)
    best_params = client.get_run(best).data.params
    assert repeats[0].data.params["seed"] == "1" and best_params["seed"] == "0"  # the same config, a new seed
    assert repeats[0].data.params["lr_d"] == best_params["lr_d"]
    assert parent.data.tags["ganlab.repeat_run_ids"] == repeats[0].info.run_id
    fcds = [client.get_run(best).data.metrics["fcd"], repeats[0].data.metrics["fcd"]]
    assert parent.data.metrics["best_fcd_mean"] == pytest.approx(sum(fcds) / 2)

    prune = spec_from_dict({"kind": "prune", "name": "rep-prune", "storage_path": str(tmp_path / "ray"),
                            "grid": {"percentage": {"q": [50]}, "samples": 150}, "resources": {"cpu": 1}})
    with pytest.raises(ConfigError, match="only 3 finished trial"):
        run_sweep(prune, from_sweep=train_id, top=4)
    prune_id = run_sweep(prune, from_sweep=train_id, top=2)  # the best trial and its repeat
    pruned = children(store, prune_id)
    assert {r.data.tags["ganlab.source_run_id"] for r in pruned} == {best, repeats[0].info.run_id}
    code, out, err = run_main(["analyze", "--sweep", prune_id, "--out", str(tmp_path / "r")])
    assert code == 0, err
    points = pd.read_csv(Path(out.strip().splitlines()[-1].split("report: ")[1]).parent / "grid_points.csv")
    assert len(points) == 1 and points["n"].iloc[0] == 2
    assert points["fcd_mean"].iloc[0] == pytest.approx(sum(r.data.metrics["fcd"] for r in pruned) / 2)


def test_served_sqlite_store_takes_four_concurrent_writers(local_ray, store, tmp_path):
    """Four Ray tasks on 0.5 CPU each write at once through the served store, which runs a worker for each on the
    database in WAL mode: no 'database is locked', no write lost."""
    import sqlite3

    from ganlab.tracking.server import served_store
    from ganlab.tracking.store import ensure_experiment

    exp_id = ensure_experiment("concurrency", store)

    @ray.remote(num_cpus=0.5)
    class Barrier:
        def __init__(self):
            self.n = 0

        def arrive(self):
            self.n += 1

        def count(self):
            return self.n

    @ray.remote(num_cpus=0.5)
    def writer(uri, barrier, k):
        import time

        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        run = client.create_run(exp_id, tags={"writer": str(k)})
        ray.get(barrier.arrive.remote())
        while ray.get(barrier.count.remote()) < 4:  # all four start writing together
            time.sleep(0.05)
        for step in range(60):
            client.log_metric(run.info.run_id, "x", float(step), step=step)
            client.log_param(run.info.run_id, f"p{step}", step)
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    with served_store(store, writers=4) as server:
        uri = server.uri
        assert uri.startswith("http://127.0.0.1:")
        workers = [c for c in alive_in(server_groups(tmp_path / "mlflow.db")) if "spawn_main" in c]
        assert len(workers) == 4, workers  # uvicorn's worker processes
        with sqlite3.connect(tmp_path / "mlflow.db") as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        barrier = Barrier.options(num_cpus=0).remote()
        ids = ray.get([writer.remote(uri, barrier, k) for k in range(4)], timeout=240)
        # a CLI run on the served store: stdout is ganlab's own lines only (MLflow's own "View run" links
        # would come before them, for every run that ends on an http store)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
        done = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", *TINY_TRAIN], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stdout.splitlines()
        assert lines[-1] == f"run_id: {done.stdout.split()[-1]}" and lines[-2] == f"ui: {uri}/ganlab/open", lines
        assert all(line.startswith(("epoch ", "trained: ", "ui: ", "run_id: ")) for line in lines), lines
    client = MlflowClient(store)
    for run_id in ids:
        assert [m.step for m in client.get_metric_history(run_id, "x")] == list(range(60))
        assert len(client.get_run(run_id).data.params) == 60


def test_trials_starting_together_on_the_same_data_each_log_it_as_their_dataset(store):
    """MLflow looks a dataset up, then inserts it: runs logging one new dataset at once race on its unique key
    (2 trials of the demo did). Each of 4 writers, 12 rounds, must end linked to the round's dataset."""
    import threading

    from ganlab.tracking.server import served_store
    from ganlab.tracking.store import RunLogger, ensure_experiment, mlflow_client

    exp_id = ensure_experiment("datasets", store)
    writers, rounds = 4, 12
    barrier, errors, runs = threading.Barrier(writers), [], []

    def writer(uri):
        client = mlflow_client(uri)
        for r in range(rounds):
            run_id = client.create_run(exp_id).info.run_id
            runs.append((run_id, r))
            barrier.wait()  # all four log the round's new dataset together
            try:
                RunLogger(client, run_id).log_dataset(f"data-{r}", f"{r:016x}", {"dataset": "x"}, {"n": r})
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(f"round {r}: {exc}")

    with served_store(store) as server:
        threads = [threading.Thread(target=writer, args=(server.uri,)) for _ in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[:2]
    client = MlflowClient(store)
    for run_id, r in runs:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [(f"data-{r}", f"{r:016x}")]


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
    from pathlib import Path

    repo = Path(__file__).parents[1]
    paths = sorted((repo / "sweeps" / "specs").glob("*.yaml"))
    assert len(paths) >= 11  # the demo's, the examples and the study's, all in sweeps/specs/
    for path in paths:
        spec = load_spec(path)
        assert spec.kind in ("train", "prune")
        # what a sweep stores for `ganlab sweep resume` reads back to the same spec
        assert spec_from_dict(spec.to_dict()).to_dict() == spec.to_dict()


def test_bad_sweep_input_exits_2_before_ray_or_any_store(tmp_path, monkeypatch):
    import yaml

    from conftest import run_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GANLAB_FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "none"))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"kind": "train", "name": "x", "base": TINY_BASE,
                                    "search": {"lr_d": {"loguniform": [1e-4, 1e-3]}}}))
    code, _, err = run_main(["sweep", "train", str(spec), "--data-dir", str(tmp_path / "empty")])
    assert code == 2 and "fashion-mnist not found" in err and len(err.strip().splitlines()) == 1
    spec.write_text(yaml.safe_dump({"kind": "train", "name": "x", "base": TINY_BASE, "serach": {}}))
    code, _, err = run_main(["sweep", "train", str(spec)])
    assert code == 2 and "unknown key 'serach'" in err
    code, _, err = run_main(["sweep", "prune", str(REPO_SPECS / "demo_prune.yaml"), "--from-run", "nope"])
    assert code == 2 and "not found" in err
    code, _, err = run_main(["sweep", "train", str(REPO_SPECS / "demo_prune.yaml")])
    assert code == 2 and "kind: train" in err
    code, _, err = run_main(["sweep", "prune", str(REPO_SPECS / "demo_prune.yaml"), "--from-sweep", "x", "--top", "0"])
    assert code == 2 and "--top must be at least 1" in err
    code, _, err = run_main(["sweep", "prune", str(REPO_SPECS / "demo_prune.yaml"),
                             "--from-run", "a", "--from-run", "a"])
    assert code == 2 and "names run a twice" in err
    spec.write_text(yaml.safe_dump({"kind": "train", "name": "x", "base": TINY_BASE, "repeats": 0}))
    code, _, err = run_main(["sweep", "train", str(spec)])
    assert code == 2 and "repeats" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "a-file").write_text("not a folder")  # was found 70 s in, after Ray and the store had started
    spec.write_text(yaml.safe_dump({"kind": "train", "name": "x", "base": TINY_BASE,
                                    "storage_path": str(tmp_path / "a-file")}))
    code, _, err = run_main(["sweep", "train", str(spec)])
    assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_a_server_that_fails_to_start_keeps_the_log_it_names(tmp_path):
    from ganlab.tracking.server import served_store

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(RuntimeError, match="did not start") as err, served_store(f"sqlite:///{db}") as server:
        server.uri  # noqa: B018 - waits for the server
    log = str(err.value).rsplit("kept at ", 1)[1]
    assert Path(log).is_file() and Path(log).read_text().strip()


def test_a_restored_trial_checkpoint_leaves_no_temp_dir(tmp_path, monkeypatch):
    import json
    import tempfile

    from ray import tune

    from sweeps.trials import restored_checkpoint

    saved = tmp_path / "ckpt"
    saved.mkdir()
    (saved / "last.pt").write_bytes(b"weights")
    (saved / "meta.json").write_text(json.dumps({"run_id": "abc"}))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with restored_checkpoint(tune.Checkpoint.from_directory(str(saved))) as (local, meta):
        assert local.read_bytes() == b"weights" and meta == {"run_id": "abc"}
    assert list((tmp_path / "tmp").iterdir()) == []


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (process group, command line) of every running process (zombies left out)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state, _, pgid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if state != "Z":  # a zombie has exited: only its parent has not read its status yet
            out[int(proc.name)] = (int(pgid), cmd)
    return out


def descendants(pid: int) -> set[int]:
    """Every live process started by ``pid``, however deep (Ray's GCS, raylet, agents and workers included)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket some process in ``pids`` listens on, read from /proc."""
    import ipaddress

    inodes = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN, owned by one of pids
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints host order
                ip = ipaddress.ip_address(raw)
                out.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(hex_port, 16)))  # ::ffff:a.b.c.d
    return out


def wait_until_dead(pids: set[int], wait_s: float = 30) -> set[int]:
    """Those of ``pids`` still running after up to ``wait_s`` seconds."""
    import time

    deadline = time.monotonic() + wait_s
    while pids & _processes().keys() and time.monotonic() < deadline:
        time.sleep(0.5)
    return pids & _processes().keys()


def server_groups(db: Path) -> set[int]:
    """Process groups of the processes serving store ``db`` (its watchdog and mlflow server)."""

    return {pgid for pgid, cmd in _processes().values() if str(db) in cmd} - {os.getpgrp()}


def alive_in(groups: set[int]) -> list[str]:
    """Command lines of live processes in ``groups`` (uvicorn and its workers included)."""
    return [cmd for pgid, cmd in _processes().values() if pgid in groups]


def wait_until_gone(groups: set[int], wait_s: float = 30) -> list[str]:
    import time

    deadline = time.monotonic() + wait_s
    while alive_in(groups) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive_in(groups)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_served_store_dies_with_the_process_that_started_it(tmp_path, sig):

    code = ("import sys, time\nfrom ganlab.tracking.server import served_store\n"
            f"with served_store('sqlite:///{tmp_path}/mlflow.db') as s:\n    print(s.uri, flush=True)\n"
            "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().startswith("http://127.0.0.1:")
        groups = server_groups(tmp_path / "mlflow.db")
        serving = alive_in(groups)
        assert any("mlflow server" in c for c in serving) and any("uvicorn" in c for c in serving)
        assert not any("huey" in c for c in serving)  # no job runner: a sweep never submits jobs
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert wait_until_gone(groups) == []
    finally:
        proc.kill()


LAUNCHER = '''
import signal, subprocess, sys, time
from pathlib import Path
out = Path(sys.argv[1])
child = subprocess.Popen([sys.executable, str(out / "child.py"), str(out)])
signal.signal(signal.SIGTERM, lambda *_: None)  # like mlflow server: it waits for what it started
child.wait()
time.sleep(3)  # a slow teardown once its server has stopped
out.joinpath("launcher-finished").touch()
'''
CHILD = '''
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: (out.joinpath("child-stopped").touch(), sys.exit(0)))
out.joinpath("child-serving").touch()
while True:
    time.sleep(0.05)
'''


@pytest.mark.parametrize("launcher", [True, False])
def test_a_watched_launcher_is_ended_once_what_it_started_has_stopped(tmp_path, launcher):
    """stop(): what the launcher started gets SIGTERM and stops on its own; the launcher's slow teardown after
    that is cut short only in launcher mode (mlflow server), otherwise the command is waited for."""
    import time

    from ganlab.tracking.server import WatchedProcess

    (tmp_path / "launcher.py").write_text(LAUNCHER)
    (tmp_path / "child.py").write_text(CHILD)
    watched = WatchedProcess([sys.executable, str(tmp_path / "launcher.py"), str(tmp_path)], tmp_path / "log",
                             launcher=launcher)
    deadline = time.monotonic() + 30
    while not (tmp_path / "child-serving").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "child-serving").exists(), (tmp_path / "log").read_text()
    group = watched.proc.pid  # the watchdog leads the group
    watched.stop()
    assert (tmp_path / "child-stopped").exists()
    assert (tmp_path / "launcher-finished").exists() is not launcher
    assert wait_until_gone({group}) == []


@pytest.mark.parametrize("damage, needle", [
    ("no-state", "is not a ganlab sweep directory"),
    ("corrupt-state", "is corrupt (not JSON)"),
    ("no-tuner", "has no tuner.pkl"),
])
def test_resume_of_a_broken_sweep_dir_exits_2_and_leaves_the_parent_as_it_was(store, tmp_path, damage, needle):
    import json

    from ganlab.tracking.store import ganlab_run

    from conftest import run_main

    with ganlab_run("sweep", run_name="done") as parent:
        pass
    sweep_dir = tmp_path / "ray" / "done"
    sweep_dir.mkdir(parents=True)
    state = {"spec": {"kind": "train", "name": "done", "base": TINY_BASE,
                      "search": {"lr_d": {"loguniform": [1e-4, 1e-3]}}},
             "parent_run_id": parent.run_id, "tracking_uri_local": store, "data_dir": None, "address": None}
    if damage != "no-state":
        (sweep_dir / "ganlab_sweep.json").write_text("{not json" if damage == "corrupt-state" else json.dumps(state))
    code, _, err = run_main(["sweep", "resume", str(sweep_dir)])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert MlflowClient(store).get_run(parent.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("resources, needle", [({"cpu": 1, "gpu": 2}, "gpu=2"), ({"cpu": 3}, "cpu=3")])
def test_resources_no_node_has_exit_2_before_the_store(local_ray, tmp_path, monkeypatch, resources, needle):
    import yaml

    from conftest import run_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"kind": "train", "name": "big", "base": TINY_BASE, "resources": resources,
                                    "storage_path": str(tmp_path / "ray"),
                                    "search": {"lr_d": {"loguniform": [1e-4, 1e-3]}}}))
    code, _, err = run_main(["sweep", "train", str(spec)])
    assert code == 2 and needle in err and "no node of this Ray cluster" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_a_resumed_searcher_counts_and_limits_trials_from_tunes_trial_list_not_its_saved_state(tmp_path):
    """A driver killed mid-upload leaves the searcher's saved state older than Tune's trial list: it recorded
    trial a as running, which finished before the kill. Tune's list decides: a's slot is free, and the sweep
    finishes at num_samples (stale state made a resumed sweep with max_concurrent wait forever)."""
    from ray import tune
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import RestorableOptunaSearch

    def searcher():
        s = RestorableOptunaSearch(num_samples=3, max_concurrent=1, seed=0)
        s.set_search_properties("fcd", "min", {"lr_d": tune.loguniform(1e-4, 1e-3)})
        return s

    def trial(trial_id, status):
        t = Trial("train_trial", stub=True, trial_id=trial_id)
        t.set_status(status)
        return t

    before = searcher()
    before.sync([])
    assert before.suggest("a") is not None and before.suggest("b") is None  # one at a time
    before.save(str(tmp_path / "searcher.pkl"))  # the snapshot the kill left: a still running

    resumed = searcher()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.PENDING)])  # Tune's newer list
    assert resumed.suggest("c") is None  # b holds the one slot
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.TERMINATED)])
    assert resumed.suggest("c") is not None  # a's slot was not held by the stale record
    resumed.sync([trial("a", Trial.TERMINATED), trial("b", Trial.TERMINATED), trial("c", Trial.TERMINATED)])
    assert resumed.suggest("d") == Searcher.FINISHED  # num_samples trials exist: no fourth


def test_a_resumed_grid_runs_each_point_once_from_tunes_trial_list_whatever_its_saved_state(tmp_path):
    """A pruning sweep's grid, resumed with saved state older or newer than Tune's trial list: the list
    decides which points have a trial (none runs twice, none is skipped) and which slots are free."""
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import GridSearch

    grid = [{"point": p, "source": s} for p in range(2) for s in range(2)]

    def trial(trial_id, status, point, source):
        t = Trial("prune_trial", stub=True, trial_id=trial_id, config={"point": point, "source": source})
        t.set_status(status)
        return t

    before = GridSearch(grid, max_concurrent=1)
    before.sync([])
    assert before.suggest("a") == {"point": 0, "source": 0} and before.suggest("b") is None  # one at a time
    before.save(str(tmp_path / "grid.json"))  # the snapshot the kill left: a running, nothing else taken

    older = GridSearch(grid, max_concurrent=1)
    older.restore(str(tmp_path / "grid.json"))
    older.sync([trial("a", Trial.TERMINATED, 0, 0), trial("b", Trial.TERMINATED, 0, 1)])  # Tune's newer list
    assert older.suggest("c") == {"point": 1, "source": 0}  # not (0, 1) again, and a's slot is free
    assert older.suggest("d") is None  # c holds the one slot
    older.sync([trial("a", Trial.TERMINATED, 0, 0), trial("b", Trial.TERMINATED, 0, 1),
                trial("c", Trial.TERMINATED, 1, 0)])
    assert older.suggest("d") == {"point": 1, "source": 1}
    older.sync([trial(i, Trial.TERMINATED, p, s) for i, (p, s) in zip("abcd", [(0, 0), (0, 1), (1, 0), (1, 1)])])
    assert older.suggest("e") == Searcher.FINISHED

    newer = GridSearch(grid, max_concurrent=0)  # saved after (0, 0) and (0, 1) were suggested...
    newer.sync([])
    assert [newer.suggest(i) for i in "ab"] == grid[:2]
    newer.sync([trial("a", Trial.TERMINATED, 0, 0)])  # ...but the list Tune restored has only the first
    assert [newer.suggest(i) for i in "xyz"] == [grid[1], grid[2], grid[3]]  # (0, 1) is not skipped
    assert newer.suggest("w") == Searcher.FINISHED


@pytest.mark.parametrize("kind", ["grid", "optuna"])
def test_a_searcher_step_costs_the_same_at_ten_thousand_trials(kind):
    """Tune hands its searcher the whole trial list at every step; the searchers read only what changed, so a
    step (sync + suggestion) costs no more with 10,000 trials behind it than with 100 (was O(N): 10,000 trials
    meant 5*10^7 trial reads per sweep)."""
    import time

    from ray import tune
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

    from sweeps.search import GridSearch, RestorableOptunaSearch

    n = 10_000
    if kind == "grid":
        searcher = GridSearch([{"point": p} for p in range(n)], max_concurrent=4)
    else:  # Optuna's own TPE is not what is measured: random sampling keeps its cost flat
        import optuna

        searcher = RestorableOptunaSearch(num_samples=n, max_concurrent=4, seed=0,
                                          sampler=optuna.samplers.RandomSampler(seed=0))
        searcher.set_search_properties("fcd", "min", {"lr_d": tune.loguniform(1e-4, 1e-3)})

    class FakeTrial:  # what the searchers read of Tune's Trial
        __slots__ = ("trial_id", "status", "config")

        def __init__(self, trial_id, config):
            self.trial_id, self.status, self.config = trial_id, Trial.RUNNING, config

    trials: list = []  # Tune's list: the same object every step, only appended to
    step_s = []
    for step in range(n + 1):
        start = time.perf_counter()
        searcher.sync(trials)
        suggestion = searcher.suggest(f"t{step}")
        step_s.append(time.perf_counter() - start)
        if suggestion == Searcher.FINISHED:
            break
        assert suggestion is not None, f"step {step}: a slot should be free"
        trials.append(FakeTrial(f"t{step}", suggestion))
        if len(trials) > 3:  # the oldest running trial ends: one slot frees per step, four run
            trials[-4].status = Trial.TERMINATED
    assert len(trials) == n and searcher.suggest("extra") == Searcher.FINISHED
    if kind == "grid":
        assert len({t.config["point"] for t in trials}) == n  # each point once
    early, late = sorted(step_s[100:600])[250], sorted(step_s[n - 500:n])[250]  # medians of 500 steps
    assert late < 5 * early + 2e-4, f"a step took {early * 1e6:.0f} us at 100 trials, {late * 1e6:.0f} us at {n}"


def test_every_query_over_a_sweeps_children_reads_every_page(store, monkeypatch):
    """A sweep with more children than one page (PAGE_SIZE made 7 here, 1,000 in use): the end-of-sweep cleanup
    closes all of them and analysis reads all of them (cleanup read only the first page at 5,000 children)."""
    from mlflow.tracking import MlflowClient

    from analysis.runs import search, sweep_children
    from ganlab.tracking import schema
    from ganlab.tracking.store import ensure_experiment
    from sweeps.runner import _close_unfinished_children

    monkeypatch.setattr(schema, "PAGE_SIZE", 7)
    client = MlflowClient(store)
    exp = ensure_experiment(None, store)
    parent = client.create_run(exp, tags={schema.KIND: "sweep"}).info.run_id
    children = [client.create_run(exp, tags={schema.PARENT_RUN: parent, schema.KIND: "prune"}).info.run_id
                for _ in range(23)]
    assert sorted(r.info.run_id for r in schema.child_runs(client, exp, parent)) == sorted(children)
    assert len(search([exp], schema.child_filter(parent), store)) == 23
    assert len(sweep_children(parent)) == 23
    _close_unfinished_children(store, parent, "KILLED")
    assert {client.get_run(c).info.status for c in children} == {"KILLED"}


def test_a_busy_served_store_is_left_to_answer_and_a_dead_one_restarted(tmp_path):
    """The sweep's watch restarts the store only when it is dead (process gone, port refusing): a server that
    answers slowly (here: frozen by SIGSTOP, its port still accepting) holds trials' requests and was restarted
    after two 5 s health checks."""
    from ganlab.tracking.server import ServedStore

    store = ServedStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        store.uri  # noqa: B018 - booted
        groups = server_groups(tmp_path / "mlflow.db")
        serving = [pid for pid, (pgid, cmd) in _processes().items() if pgid in groups and "uvicorn" in cmd]
        for pid in serving:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert not store.healthy(timeout_s=2)  # no answer...
            assert store.ensure_alive() is False  # ...but busy, not dead: no restart
        finally:
            for pid in serving:
                os.kill(pid, signal.SIGCONT)
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        import time

        deadline = time.monotonic() + 10
        while not store.dead():  # its processes are gone within moments
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert store.ensure_alive() is True and store.healthy()  # dead: restarted on the same port
    finally:
        store.close()


def test_a_trial_whose_worker_is_told_to_exit_ends_killed_not_failed(store):
    """Tune stops a trial by SIGTERM to its Ray worker, whose handler raises SystemExit inside the trial: its run
    was FAILED (the intermittent Ctrl-C result); a real error still ends FAILED."""
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.store import ganlab_run

    ids = {}
    for name, exc in (("stopped", SystemExit(1)), ("broken", ValueError("bug"))):
        with pytest.raises(type(exc)), ganlab_run("train", run_name=name) as run:
            ids[name] = run.run_id
            raise exc
    client = MlflowClient(store)
    assert client.get_run(ids["stopped"]).info.status == "KILLED"
    assert client.get_run(ids["broken"]).info.status == "FAILED"


@pytest.mark.slow  # 200 trials: ~10 minutes on 2 cores
def test_a_200_trial_pruning_sweep_closes_every_child_and_analyze_reads_them_all(local_ray, trained, tmp_path):
    """Issue 23's scale check at a size a CI box runs: 200 tiny trials (no fine-tuning, few samples), one child
    per trial, all FINISHED, every one in analyze's grid points; the searcher and the paging hold at this count."""
    import pandas as pd

    from conftest import run_main

    uri, source = trained
    spec = spec_from_dict({"kind": "prune", "name": "p200", "storage_path": str(tmp_path / "ray"),
                           "grid": {"percentage": {"q": [round(0.5 * i, 1) for i in range(1, 101)]},
                                    "sensitivity": {"s": [round(0.02 * i, 2) for i in range(1, 101)]},
                                    "samples": 129, "eval_draws": 2},
                           "resources": {"cpu": 1}})
    parent_id = run_sweep(spec, from_run=source)
    runs = children(uri, parent_id)
    assert len(runs) == 200 and all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.params["method"], r.data.params.get("q"), r.data.params.get("s")) for r in runs}) == 200
    code, out, err = run_main(["analyze", "--sweep", parent_id, "--out", str(tmp_path / "reports")])
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1].split("report: ")[1]).parent
    points = pd.read_csv(folder / "grid_points.csv")
    assert len(points) == 200 and points["n"].eq(1).all()
    assert sorted(" ".join(points["run_ids"]).split()) == sorted(r.info.run_id for r in runs)
