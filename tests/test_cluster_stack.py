"""The cluster stack, real and on 127.0.0.1: ``ganlab server`` on PostgreSQL with artifacts proxied to an S3
server, Tune's storage in that bucket, Ray nodes started with ``ray start``, sweeps launched with
``--address`` and with ``ray job submit``; a lost node and a tracking-server outage survived; the sweep as
the MLflow UI's REST API shows it.

Marked ``servers``, run by ``make test-servers`` (and by .ci/run after ``make test``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from processes import processes, wait_until_gone
from stack import VENV_BIN, Postgres, RayNodes, S3Server, TrackingServer, kill_tagged, own_processes, wait_for

from conftest import REPO, TINY_BASE, children

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory, evaluator_32):
    """PostgreSQL + S3 + ``ganlab server`` on both: (postgres, s3, server, env for every ganlab process)."""
    root = tmp_path_factory.mktemp("stack")
    pg, s3 = Postgres().start(), None
    try:
        s3 = S3Server(root / "s3").start()
        env = {**os.environ, **s3.env, "PYTHONUNBUFFERED": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        env.pop("RAY_ADDRESS", None)
        server = TrackingServer(pg.uri(), f"s3://{s3.bucket}/mlflow", env, root).start()
        env["MLFLOW_TRACKING_URI"] = server.uri
        yield pg, s3, server, env
        server.stop()
    finally:
        if s3 is not None:
            s3.stop()
        pg.stop()


@pytest.fixture
def ray_nodes(servers, tmp_path):
    """A head and one worker node, each with 1 CPU, started by ``ray start`` with the stack's environment."""
    *_, env = servers
    nodes = RayNodes(env, Path(tempfile.mkdtemp(prefix="ganlab-ray-", dir="/tmp")))
    try:
        yield nodes.start(workers=1)
    finally:
        nodes.stop()
        shutil.rmtree(nodes.temp_dir, ignore_errors=True)


def spec_file(tmp_path: Path, name: str, storage: str, **extra) -> Path:
    spec = {"kind": "train", "name": name, "storage_path": storage, "base": {**TINY_BASE, "epochs": 3, "limit": 1024},
            "search": {"lr_d": {"loguniform": [1e-4, 4e-4]}}, "scheduler": {"type": "none"},
            "stopping": {"grace_epochs": 1, "min_coverage": 0}, "resources": {"cpu": 1}, "num_samples": 2,
            "max_concurrent": 2, "max_failures": 2, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_children(client: MlflowClient, name: str):
    """(parent, children) of the newest sweep run called ``name``, or (None, [])."""
    exp = client.get_experiment_by_name("ganlab")
    if exp is None:
        return None, []
    parents = client.search_runs([exp.experiment_id], f"tags.`ganlab.kind` = 'sweep' and attributes.run_name = "
                                 f"'{name}'", order_by=["attributes.start_time DESC"])
    return (parents[0], children(client, parents[0].info.run_id)) if parents else (None, [])


def snapshot_has_checkpoint(s3: S3Server, prefix: str, run) -> bool:
    """Whether Tune's newest experiment snapshot under ``prefix`` records a checkpoint of ``run``'s trial."""
    import json

    states = sorted(k for k in s3.keys(prefix) if k.rsplit("/", 1)[-1].startswith("experiment_state")
                    and k.endswith(".json"))
    if not states:
        return False
    body = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=states[-1])["Body"].read())
    trial = run.data.tags["ganlab.trial_id"]
    return any(json.loads(about)["trial_id"] == trial and "checkpoint_0000" in runtime
               for about, runtime in body["trial_data"])


def each_epoch_logged_once(client: MlflowClient, runs, epochs: int = 3, steps_per_epoch: int = 16) -> None:
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fcd")] == list(range(1, epochs + 1))
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss_d")]
        assert steps == list(range(1, epochs * steps_per_epoch + 1))


def killed_once(args: list[str], cwd: Path, env: dict, ready, what: str):
    """Runs ``ganlab ARGS`` (a sweep) in its own process group on a fresh local Ray, SIGKILLs the group as
    soon as ``ready()`` returns something true, stops what the dead driver left of Ray, and returns that."""
    env = own_processes(env)
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def check():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            return ready()

        return wait_for(check, 300, what)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died by itself (the check says how)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_tagged(env)


def resumed(path: str, cwd: Path, env: dict) -> str:
    """``ganlab sweep resume PATH`` to the end: the sweep's parent run id."""
    env = own_processes(env)
    resume = subprocess.run([sys.executable, "-m", "ganlab.cli", "sweep", "resume", path], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    kill_tagged(env)
    assert resume.returncode == 0, (resume.stdout + resume.stderr)[-3000:]
    return resume.stdout.strip().splitlines()[-1].split("sweep_run_id: ")[1]


def test_ganlab_server_keeps_runs_in_postgres_and_artifacts_in_s3_and_dies_with_its_command(servers, tmp_path):
    pg, s3, server, env = servers
    client = MlflowClient(server.uri)
    exp_id = client.create_experiment("server-check")
    run = client.create_run(exp_id)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), "notes")
    client.log_metric(run.info.run_id, "fcd", 12.5)
    # the run is a row in PostgreSQL and its artifact an object in the bucket, proxied by the server
    assert pg.sql(f"select status from runs where run_uuid = '{run.info.run_id}'", "mlflow") == [("RUNNING",)]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/notes/note.txt") for k in s3.keys("mlflow/"))
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")

    # a second server on the same stack, SIGKILLed: its mlflow server (watchdog, uvicorn workers) goes with it
    other = TrackingServer(server.backend, server.artifacts, env, tmp_path).start()
    groups = {pgid for pgid, cmd in processes().values() if "mlflow server" in cmd and f"--port {other.port}" in cmd}
    assert groups, "the second server's mlflow processes were not found"
    other.proc.kill()
    other.proc.wait()
    assert wait_until_gone(groups) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{other.uri}/health", timeout=2)


def _epochs_written(uri: str, exp_id: str, writers: int) -> None:
    """``writers`` concurrent trials' epochs: create a run, 6 log_batch calls of 44 metrics, end it."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow.entities import Metric

    def trial(k: int) -> None:
        client = MlflowClient(uri)
        run_id = client.create_run(exp_id).info.run_id
        for step in range(6):
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(f"m{m}", float(k + m), now, step) for m in range(44)])
        client.set_terminated(run_id)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(trial, range(writers)))


def test_ganlab_server_keeps_its_database_connections_between_concurrent_writes(servers):
    """8 concurrent writers on 2 workers: a connection a request opens stays in the pool for the next one
    (SQLAlchemy's default pool of 5 closed its overflow connections after each request: 10-21 connections
    opened and closed per round of writes, each a PostgreSQL process forked and ended)."""
    pg, _, server, _ = servers
    exp_id = MlflowClient(server.uri).create_experiment("pool-check")
    for _ in range(2):  # the pools grow to what 8 writers need
        _epochs_written(server.uri, exp_id, 8)
    time.sleep(11)  # an idle PostgreSQL backend reports its session to the statistics within 10 s

    def sessions() -> int:
        return pg.sql("select sessions from pg_stat_database where datname = 'mlflow'")[0][0]

    before, started = sessions(), pg.sql("select now()")[0][0]
    _epochs_written(server.uri, exp_id, 8)
    time.sleep(11)
    opened = sessions() - before
    kept = pg.sql(f"select count(*) from pg_stat_activity where datname = 'mlflow' "
                  f"and backend_start > '{started.isoformat()}'")[0][0]  # a worker that met more writers than before
    assert opened - kept == 0, f"{opened - kept} of {opened} connections opened in one round were closed again"
    assert pg.sql("select count(*) from pg_stat_activity where datname = 'mlflow'")[0][0] <= 2 * 20


def test_a_sweep_on_ray_start_nodes_survives_losing_a_node(servers, ray_nodes, tmp_path):
    _, s3, server, _ = servers
    # 6 epochs: the victim is still training when its node goes (a trial that finished first is only reported)
    spec = spec_file(tmp_path, "lost-node", f"s3://{s3.bucket}/ray", base={**TINY_BASE, "epochs": 6, "limit": 1024})
    without_token = {k: v for k, v in ray_nodes.env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([sys.executable, "-m", "ganlab.cli", "sweep", "train", str(spec), "--address",
                              ray_nodes.address], cwd=tmp_path, env={**without_token, "RAY_AUTH_MODE": "disabled"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "RAY_AUTH_MODE=token" in refused.stderr, refused.stderr[-2000:]
    assert len(refused.stderr.strip().splitlines()) == 1
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "sweep", "train", str(spec), "--address",
                             ray_nodes.address], cwd=tmp_path, env=ray_nodes.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = MlflowClient(server.uri)
    worker = next(n["node_id"] for n in ray_nodes.nodes() if not n["is_head_node"])
    try:
        def running_on_worker_with_a_checkpoint():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            _, runs = sweep_children(client, "lost-node")
            on_worker = [r for r in runs if r.data.tags.get("ganlab.node_id") == worker and r.info.status == "RUNNING"
                         and "fcd" in r.data.metrics]
            # the driver has registered the victim's checkpoint (its snapshot in the bucket records it): a trial
            # killed between uploading a checkpoint and the driver taking in its report restarts from scratch
            return on_worker and snapshot_has_checkpoint(s3, "ray/lost-node/", on_worker[0]) and on_worker[0]

        victim = wait_for(running_on_worker_with_a_checkpoint, 300, "a trial with a checkpoint on the worker node")
        os.kill(ray_nodes.raylet_pid(ray_nodes.worker_manager_ports[0]), signal.SIGKILL)  # the node is gone
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    parent_id = out.strip().splitlines()[-1].split("sweep_run_id: ")[1]
    runs = children(client, parent_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # one run per trial, none RUNNING
    assert len({r.data.tags["ganlab.trial_id"] for r in runs}) == 2
    retried = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert 1 <= int(retried.data.tags["ganlab.resumed_epoch"]) < 6  # from its last checkpoint, not from scratch
    assert retried.data.tags["ganlab.node_id"] != worker  # finished on the node that was left
    each_epoch_logged_once(client, runs, epochs=6)
    keys = s3.keys()
    for r in runs:  # artifacts went through the server into the bucket
        assert any(k.endswith(f"{r.info.run_id}/artifacts/samples/epoch_006.png") for k in keys)
        assert any(k.endswith(f"{r.info.run_id}/artifacts/checkpoints/last.pt") for k in keys)
    assert {"ray/lost-node/tuner.pkl", "ray/lost-node/ganlab_sweep.json"} <= set(keys)


def test_ray_job_submit_runs_a_sweep_that_outlives_a_tracking_server_outage_and_shows_in_the_ui(
        servers, ray_nodes, tmp_path):
    _, s3, server, _ = servers
    spec = spec_file(tmp_path, "job", f"s3://{s3.bucket}/ray")
    job = subprocess.Popen([str(VENV_BIN / "ray"), "job", "submit", "--address", ray_nodes.dashboard,
                            "--working-dir", str(REPO), "--", "ganlab", "sweep", "train", str(spec)], cwd=tmp_path,
                           env=ray_nodes.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    client = MlflowClient(server.uri)
    try:
        def a_trial_with_an_epoch():
            assert job.poll() is None, job.stdout.read()[-3000:]
            _, runs = sweep_children(client, "job")
            return any(r.info.status == "RUNNING" and "fcd" in r.data.metrics for r in runs)

        wait_for(a_trial_with_an_epoch, 300, "a trial's first epoch")
        _, before = sweep_children(client, "job")
        logged_before = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss_d")) for r in before}
        assert server.stop(signal.SIGKILL) != 0  # the tracking server is gone...
        time.sleep(5)
        server.start()  # ...and back on the same port, store and bucket
        out, _ = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 0 and "succeeded" in out, out[-3000:]
    parent_id = next(line.split("sweep_run_id: ")[1].strip() for line in out.splitlines() if "sweep_run_id: " in line)
    exp_id = client.get_run(parent_id).info.experiment_id  # the sweep says where to look, on the runs table
    assert f"ui: {server.uri}/ganlab/open?experiment={exp_id}" in out
    runs = children(client, parent_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for run_id, steps in logged_before.items():  # nothing logged before the outage was lost
        assert len(client.get_metric_history(run_id, "loss_d")) >= steps
    each_epoch_logged_once(client, runs)
    assert len({r.data.tags["ganlab.node_id"] for r in runs}) == 2  # trials ran on both nodes

    # what the MLflow UI's pages ask the server for (its ajax REST API)
    ui = f"{server.uri}/ajax-api/2.0/mlflow"
    experiment = requests.get(f"{ui}/experiments/get-by-name", params={"experiment_name": "ganlab"}, timeout=30).json()
    exp = experiment["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]  # opens on runs
    found = requests.post(f"{ui}/runs/search", timeout=30, json={
        "experiment_ids": [exp["experiment_id"]], "filter": f"tags.`mlflow.parentRunId` = '{parent_id}'"}).json()
    table = found["runs"]
    assert {r["info"]["run_id"] for r in table} == {r.info.run_id for r in runs}
    for r in table:  # the compare view's columns: params against fcd
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        assert metrics["fcd"] > 0 and "lr_d" in params
        dataset = r["inputs"]["dataset_inputs"][0]  # the runs table's Dataset column
        assert dataset["dataset"]["name"] == "fashion-mnist-train-32px-1024" and len(dataset["dataset"]["digest"]) == 16
        image = requests.get(f"{server.uri}/get-artifact", timeout=30,
                             params={"path": "samples/epoch_003.png", "run_uuid": r["info"]["run_id"]})
        assert image.ok and image.content[:8] == b"\x89PNG\r\n\x1a\n"  # a trial's sample images, from S3


def test_a_sweep_stored_in_s3_resumes_after_its_driver_is_killed(servers, tmp_path):
    _, s3, server, env = servers
    spec = spec_file(tmp_path, "s3-resume", f"s3://{s3.bucket}/resumable", max_concurrent=1)
    client = MlflowClient(server.uri)
    prefix = "resumable/s3-resume/"

    def one_done_one_checkpointed():
        _, runs = sweep_children(client, "s3-resume")
        done = [r for r in runs if r.info.status == "FINISHED"]
        going = [r for r in runs if r.info.status == "RUNNING" and "fcd" in r.data.metrics]
        # Tune's own snapshot in the bucket records the checkpoint (it uploads it asynchronously: a driver
        # killed before that is resumed from the snapshot before, and that trial starts over)
        return done and going and snapshot_has_checkpoint(s3, prefix, going[0]) and (done, going[0])

    done, going = killed_once(["sweep", "train", str(spec)], tmp_path, env, one_done_one_checkpointed,
                              "one finished trial and one with a checkpoint")
    steps_before = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss_d")) for r in done}
    parent_id = resumed(f"s3://{s3.bucket}/{prefix}", tmp_path, env)
    runs = children(client, parent_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # no duplicated run
    for run_id, steps in steps_before.items():  # the finished trial was not trained again
        assert len(client.get_metric_history(run_id, "loss_d")) == steps == 48
    continued = next(r for r in runs if r.info.run_id == going.info.run_id)
    assert int(continued.data.tags["ganlab.resumed_epoch"]) >= 1  # from its checkpoint in the bucket
    each_epoch_logged_once(client, runs)


def test_a_pruning_sweep_stored_in_s3_resumes_after_its_driver_is_killed_with_each_point_once(servers, tmp_path):
    """The grid's resume: points that finished are not pruned again, none runs twice and none is skipped
    (its searcher reads what has a trial from Tune's restored trial list, not from its own saved state)."""
    _, s3, server, env = servers
    client = MlflowClient(server.uri)
    trained = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", "--dataset", "fashion-mnist",
                              "--image-size", "32", "--limit", "256", "--epochs", "1", "--ngf", "8", "--ndf", "8",
                              "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    source = trained.stdout.split()[-1]
    qs = [30, 50, 70, 90]
    spec = tmp_path / "prune.yaml"
    spec.write_text(yaml.safe_dump({
        "kind": "prune", "name": "s3-prune-resume", "storage_path": f"s3://{s3.bucket}/resumable-prune",
        "grid": {"percentage": {"q": qs}, "finetune_epochs": [1], "finetune_images": 256, "samples": 200},
        "resources": {"cpu": 1}, "max_concurrent": 1}))

    def one_done():
        return [r for r in sweep_children(client, "s3-prune-resume")[1] if r.info.status == "FINISHED"]

    done = killed_once(["sweep", "prune", str(spec), "--from-run", source], tmp_path, env, one_done,
                       "a finished grid point")
    steps_before = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss_d")) for r in done}
    parent_id = resumed(f"s3://{s3.bucket}/resumable-prune/s3-prune-resume/", tmp_path, env)
    runs = children(client, parent_id)
    assert sorted(float(r.data.params["q"]) for r in runs) == qs  # each grid point once: none twice, none skipped
    assert all(r.info.status == "FINISHED" for r in runs)
    for run_id, steps in steps_before.items():  # what had finished was not pruned and fine-tuned again
        assert client.get_run(run_id).info.status == "FINISHED"
        assert len(client.get_metric_history(run_id, "loss_d")) == steps > 0
    assert client.get_run(parent_id).data.tags["ganlab.registered_model"].startswith("models:/")
