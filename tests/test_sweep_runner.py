"""sweeps/runner.py: whole sweeps on a real local Ray (2 CPUs) and real MLflow stores, tiny trials at 32 px;
the Tuners (sweeps/tuners.py), runs closed and the best trial marked (sweeps/results.py), a training sweep's
repeats and a pruning sweep's sources (sweeps/sources.py); bad sweep input exits 2 before Ray or any store
(`ganlab sweep`, studies/sweep_cli.py); then analysis/best.py, the step after a pruning sweep, registers the
operating point (runs/register.py) and the runs carry their provenance (tracking/provenance.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.best import register_best
from ganlab.errors import ConfigError
from sweeps.runner import SweepOptions, run_sweep
from sweeps.sources import Sources
from sweeps.spec import spec_from_dict

from conftest import SPECS, TINY_BASE, children


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
    shown = capfd.readouterr().out
    # ganlab's progress line, a line per ended trial here (not a terminal), counts against the spec's 3 trials (Ray's
    # banner said 9223372036854775807 for num_samples=-1) and tells the diverged trial from the finished ones
    lines = [line for line in shown.splitlines() if line.startswith("ganlab sweep t-sweep: ")]
    assert [line.split(": ")[1].split(" ended")[0] for line in lines] == ["1/3", "2/3", "3/3"], shown[-2000:]
    assert "(2 done, 1 stopped early, 0 failed), 0 running; best fcd" in lines[-1]
    assert "Number of trials" not in shown and "TensorBoard" not in shown  # Ray's tables: only with --verbose

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


@pytest.mark.slow  # 25-50 s of a real sweep or server: make test-slow (CI runs it), to keep make test under 10 min
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
    parent_id = run_sweep(spec, Sources.of(source), SweepOptions(data_dir=str(cifar_dir)))
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
        run_sweep(prune, Sources.of(sweep=train_id, top=4))
    prune_id = run_sweep(prune, Sources.of(sweep=train_id, top=2))  # the best trial and its repeat
    pruned = children(store, prune_id)
    assert {r.data.tags["ganlab.source_run_id"] for r in pruned} == {best, repeats[0].info.run_id}
    code, out, err = run_main(["analyze", "--sweep", prune_id, "--out", str(tmp_path / "r")])
    assert code == 0, err
    points = pd.read_csv(Path(out.strip().splitlines()[-1].split("report: ")[1]).parent / "grid_points.csv")
    assert len(points) == 1 and points["n"].iloc[0] == 2
    assert points["fcd_mean"].iloc[0] == pytest.approx(sum(r.data.metrics["fcd"] for r in pruned) / 2)


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
    code, _, err = run_main(["sweep", "prune", str(SPECS / "demo_prune.yaml"), "--from-run", "nope"])
    assert code == 2 and "not found" in err
    code, _, err = run_main(["sweep", "train", str(SPECS / "demo_prune.yaml")])
    assert code == 2 and "kind: train" in err
    code, _, err = run_main(["sweep", "prune", str(SPECS / "demo_prune.yaml"), "--from-sweep", "x", "--top", "0"])
    assert code == 2 and "--top must be at least 1" in err
    code, _, err = run_main(["sweep", "prune", str(SPECS / "demo_prune.yaml"),
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


@pytest.mark.parametrize("damage, needle", [
    ("no-state", "is not a ganlab sweep directory"),
    ("corrupt-state", "is corrupt (not JSON)"),
    ("state-without-a-field", "is not a ganlab sweep state"),
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
    if damage == "state-without-a-field":
        state.pop("parent_run_id")
    if damage != "no-state":
        (sweep_dir / "ganlab_sweep.json").write_text("{not json" if damage == "corrupt-state" else json.dumps(state))
    code, _, err = run_main(["sweep", "resume", str(sweep_dir)])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert MlflowClient(store).get_run(parent.run_id).info.status == "FINISHED"


def test_resuming_a_finished_sweep_says_so_and_changes_nothing(store, tmp_path):
    """A state file from before this version (tracking_uri_local, no phase) of a sweep whose parent ended FINISHED:
    the resume starts no Ray and no store, logs nothing, and prints the parent's id (the slow interrupt tests
    check the same after a real sweep)."""
    import json

    from ganlab.tracking.store import ganlab_run

    from conftest import run_main

    with ganlab_run("sweep", run_name="done") as parent:
        parent.log_metrics({"trials": 3.0})
    sweep_dir = tmp_path / "ray" / "done"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "ganlab_sweep.json").write_text(json.dumps({
        "spec": {"kind": "train", "name": "done", "base": TINY_BASE, "search": {"lr_d": {"loguniform": [1e-4, 1e-3]}}},
        "parent_run_id": parent.run_id, "tracking_uri_local": store, "data_dir": None, "address": None}))
    client = MlflowClient(store)
    before = client.get_run(parent.run_id)
    code, out, err = run_main(["sweep", "resume", str(sweep_dir)])
    assert code == 0, err
    assert "has finished" in out and out.strip().splitlines()[-1] == f"sweep_run_id: {parent.run_id}"
    after = client.get_run(parent.run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
    assert len(client.get_metric_history(parent.run_id, "trials")) == 1
    assert not (sweep_dir / "tuner.pkl").exists()


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
    parent_id = run_sweep(spec, Sources.of(source))
    runs = children(uri, parent_id)
    assert len(runs) == 200 and all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.params["method"], r.data.params.get("q"), r.data.params.get("s")) for r in runs}) == 200
    code, out, err = run_main(["analyze", "--sweep", parent_id, "--out", str(tmp_path / "reports")])
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1].split("report: ")[1]).parent
    points = pd.read_csv(folder / "grid_points.csv")
    assert len(points) == 200 and points["n"].eq(1).all()
    assert sorted(" ".join(points["run_ids"]).split()) == sorted(r.info.run_id for r in runs)


def test_a_restored_sweep_watches_its_own_new_store_not_the_pickled_one(local_ray, tmp_path):
    """StoreWatch (sweeps/tuners.py) keeps no server in tuner.pkl; `watch` hands a restored Tuner the server of the
    process that restored it (no module global)."""
    import pickle

    from ray import tune

    from sweeps.tuners import StoreWatch, watch

    class FakeStore:  # counts the watch's checks; the server's own restart is tested in test_tracking_server
        store_uri = "sqlite:///x.db"

        def __init__(self):
            self.checks = 0

        def ensure_alive(self):
            self.checks += 1
            return False

    def trainable(config):
        tune.report({"x": 1.0})

    first, second = FakeStore(), FakeStore()
    assert pickle.loads(pickle.dumps(StoreWatch(first))).store is None
    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(name="w", storage_path=str(tmp_path),
                                                            callbacks=[StoreWatch(first)]))
    tuner.fit()
    restored = watch(tune.Tuner.restore(str(tmp_path / "w"), trainable=trainable), second)
    [callback] = [c for c in restored._local_tuner.get_run_config().callbacks if isinstance(c, StoreWatch)]
    assert callback.store is second
    assert first.checks >= 1  # the first run was watched by its own store
