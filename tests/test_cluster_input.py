"""Bad input to the cluster stack: one line, exit 2, before any server, Ray or trial starts, nothing left behind.

Real servers where the input is about them: an S3-compatible server (moto) on 127.0.0.1; ports with
nothing listening for the tracking database, the tracking server and the Ray cluster that are not there.
Marked ``servers`` with the rest of the stack's tests (`make test-servers`, run by .ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from processes import processes
from stack import S3Server

from ganlab.tracking.server import free_port

from conftest import all_runs, run_main

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def one_line_exit_2(args, *needles, env=None, cwd=None):
    """``ganlab ARGS`` exits 2 with one line naming the problem; in this process, or (``env`` given) in a
    subprocess with a time limit: a server that wrongly starts must not hang the test."""
    if env is None:
        code, out, err = run_main(args)
    else:
        proc = subprocess.run([sys.executable, "-m", "ganlab.cli", *args], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=90)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    assert code == 2, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def spec(tmp_path, **extra):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"kind": "train", "name": "bad", "base": {"limit": 256, "epochs": 1},
                                    "search": {"lr_d": {"loguniform": [1e-4, 4e-4]}}, "num_samples": 1, **extra}))
    return str(path)


def _ray_processes() -> set[int]:
    return {pid for pid, (_, cmd) in processes().items() if "raylet" in cmd or "gcs_server" in cmd}


@pytest.fixture
def no_ray_started():
    """A check that the test started no Ray node: no raylet or GCS beyond those running when it began (a Ray
    someone else runs on this machine is not the test's)."""
    before = _ray_processes()
    return lambda: not (_ray_processes() - before)


def test_server_refuses_a_database_that_does_not_answer(tmp_path):
    port = free_port()
    start = time.monotonic()
    err = one_line_exit_2(["server", "--backend-store-uri", f"postgresql://ganlab:secret@127.0.0.1:{port}/mlflow",
                           "--artifacts-destination", str(tmp_path / "art"), "--port", str(free_port())],
                          "cannot connect to the tracking database", f"127.0.0.1:{port}/mlflow",
                          env=dict(os.environ), cwd=tmp_path)
    assert "secret" not in err  # the password is not printed
    assert time.monotonic() - start < 30
    assert list(tmp_path.iterdir()) == []  # no log, no artifact folder, no server


def test_server_refuses_a_missing_bucket_and_missing_credentials(tmp_path, s3):
    env = {**os.environ, **s3.env}
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    one_line_exit_2(["server", "--backend-store-uri", backend, "--artifacts-destination", "s3://no-such-bucket/mlflow",
                     "--port", str(free_port())], "bucket 'no-such-bucket' does not exist", env=env, cwd=tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    one_line_exit_2(["server", "--backend-store-uri", backend, "--artifacts-destination", f"s3://{s3.bucket}/m",
                     "--port", str(free_port())], "no AWS credentials", env=env, cwd=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_server_refuses_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line_exit_2(["server", "--port", str(port)], f"--port {port}: cannot listen there", env=dict(os.environ),
                        cwd=tmp_path)


def test_commands_refuse_a_tracking_store_that_does_not_answer(tmp_path, monkeypatch, store, no_ray_started):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://ganlab@127.0.0.1:{port}/mlflow")
    one_line_exit_2(["sweep", "train", spec(tmp_path)], "cannot connect to the tracking database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    one_line_exit_2(["train", "--limit", "256", "--epochs", "1"], f"tracking server http://127.0.0.1:{port} does not "
                    "answer")
    assert time.monotonic() - start < 20  # not MLflow's minutes of retries
    assert no_ray_started()


def test_a_sweep_refuses_a_missing_bucket_and_a_cluster_that_is_not_there(tmp_path, s3_env, store, no_ray_started):
    one_line_exit_2(["sweep", "train", spec(tmp_path, storage_path="s3://no-such-bucket/ray")],
                    "bucket 'no-such-bucket' does not exist")
    port = free_port()
    start = time.monotonic()
    one_line_exit_2(["sweep", "train", spec(tmp_path), "--address", f"127.0.0.1:{port}"],
                    f"--address 127.0.0.1:{port}: no Ray cluster answers there")
    assert time.monotonic() - start < 60
    assert all_runs(store) == [] and not (tmp_path / "ray_results").exists()
    assert no_ray_started()


def test_resume_refuses_an_s3_prefix_without_a_sweep(tmp_path, s3_env, store, no_ray_started):
    s3_env.client().put_object(Bucket=s3_env.bucket, Key="elsewhere/other/file.txt", Body=b"x")
    one_line_exit_2(["sweep", "resume", f"s3://{s3_env.bucket}/elsewhere/other"],
                    "is not a ganlab sweep directory (no ganlab_sweep.json)")
    one_line_exit_2(["sweep", "resume", "s3://no-such-bucket/ray/x"], "bucket 'no-such-bucket' does not exist")
    assert all_runs(store) == [] and no_ray_started()


def test_ganlab_server_serves_until_sigterm_and_takes_its_mlflow_server_with_it(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "server", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("tracking_uri: "):
                break
        assert lines and lines[-1].strip() == f"tracking_uri: http://127.0.0.1:{port}", lines
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")  # a working server on ./mlflow.db and ./mlartifacts
        run = client.create_run(client.create_experiment("x"))
        (tmp_path / "a.txt").write_text("a")
        client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))
        assert list((tmp_path / "mlartifacts").rglob("a.txt"))
        serving = [pid for pid, (_, cmd) in processes().items() if f"--port {port}" in cmd and "mlflow" in cmd]
        assert serving
        proc.terminate()
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while any(pid in processes() for pid in serving) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(pid in processes() for pid in serving)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
