"""Sweeps as a user runs them: a killed driver resumed, interrupts, a served store restarted, cluster.yaml.

A sweep across real `ray start` nodes is in test_cluster_stack.py (`make test-servers`)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import descendants, listening, processes, server_groups, wait_until_dead, wait_until_gone

from conftest import REPO, TINY_BASE, children


def write_spec(tmp_path: Path, name: str, **extra) -> Path:
    spec = {"kind": "train", "name": name, "storage_path": str(tmp_path / "ray"), "base": TINY_BASE,
            "search": {"lr_d": {"loguniform": [1e-4, 4e-4]}}, "scheduler": {"type": "none"},
            "stopping": {"grace_epochs": 1, "min_coverage": 0}, "resources": {"cpu": 1}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def ganlab(*args, cwd, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "ganlab.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def finishedchildren(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                               "where t.key = 'mlflow.parentRunId' and r.status = 'FINISHED'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def running_trial_with_an_epoch(db: Path) -> tuple[str, str] | None:
    """(sweep parent run, a RUNNING child that has logged fcd), read-only, or None."""
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            row = con.execute(
                "select t.value, r.run_uuid from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'mlflow.parentRunId' and r.status = 'RUNNING' and exists "
                "(select 1 from metrics m where m.run_uuid = r.run_uuid and m.key = 'fcd')").fetchone()
        except sqlite3.OperationalError:
            return None
    return tuple(row) if row else None


@pytest.fixture
def env(tmp_path, evaluator_32):
    e = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    e.pop("RAY_ADDRESS", None)
    return e


@pytest.mark.slow  # a minute of a sweep's own Ray started, killed and resumed: make test-slow (CI runs it)
def test_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, env):
    spec = write_spec(tmp_path, "resumable", num_samples=2, max_concurrent=1)
    proc = ganlab("sweep", "train", str(spec), cwd=tmp_path, env=env)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    while finishedchildren(db) < 1:  # wait until the first trial has finished, then kill the driver
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)
    groups = server_groups(db)
    assert groups
    started = descendants(proc.pid)  # the served store, and the local Ray: GCS, raylet, agents, workers
    commands = " ".join(Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in started
                        if Path(f"/proc/{p}/cmdline").exists())
    assert "raylet" in commands and "gcs_server" in commands and "dashboard/agent.py" in commands
    # a local sweep listens on loopback only: no dashboard, no monitor, and Ray's own servers on 127.0.0.1
    assert {addr for addr, _ in listening(started)} <= {"127.0.0.1", "::1"}, listening(started)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver's group only: Ray and the store live in their own
    proc.wait()
    assert wait_until_dead(started) == set()  # within 30 s, Ray's agents too (they outlived ray.init's drivers)
    assert wait_until_gone(groups) == []  # the served store died with its driver
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment_id = client.get_experiment_by_name("ganlab").experiment_id
    parent = client.search_runs([experiment_id], "tags.`ganlab.kind` = 'sweep'")[0]
    trials = children(client, parent.info.run_id)
    done_before = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "loss_d"))
                   for r in trials if r.info.status == "FINISHED"}
    assert done_before

    resume = ganlab("sweep", "resume", str(tmp_path / "ray" / "resumable"), cwd=tmp_path, env=env)
    out, _ = resume.communicate(timeout=420)
    assert resume.returncode == 0, out[-3000:]
    assert out.strip().splitlines()[-1] == f"sweep_run_id: {parent.info.run_id}"
    runs = children(client, parent.info.run_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["ganlab.trial_id"] for r in runs}) == 2  # one run per trial: no duplicates
    for run_id, steps in done_before.items():  # finished trials were not trained again
        assert len(client.get_metric_history(run_id, "loss_d")) == steps == 8  # 2 epochs x 4 steps
        assert [m.step for m in client.get_metric_history(run_id, "fcd")] == [1, 2]
    assert server_groups(db) == set()  # and the resumed driver's too
    for r in runs:  # every trial has each epoch exactly once
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fcd")] == [1, 2]


@pytest.mark.parametrize("how, code, word", [
    pytest.param("ctrl-c", 130, "interrupted", marks=pytest.mark.slow),  # a minute: make test-slow (in CI)
    # the same path with another signal and exit code (make test's 10-minute budget: make test-slow)
    pytest.param("sigterm", 143, "terminated", marks=pytest.mark.slow)])
def test_ctrl_c_stops_the_sweep_as_killed_and_resume_continues_from_checkpoints(tmp_path, env, how, code, word):
    spec = write_spec(tmp_path, "interrupted", num_samples=2, max_concurrent=1,
                      base={**TINY_BASE, "epochs": 4, "limit": 1024})  # 16 steps an epoch: time to interrupt
    proc = ganlab("sweep", "train", str(spec), cwd=tmp_path, env=env)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    # interrupt once a trial has an epoch logged and Tune has its checkpoint
    checkpoints = tmp_path / "ray" / "interrupted"
    while not ((found := running_trial_with_an_epoch(db)) and list(checkpoints.glob("*/checkpoint_*"))):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no epoch logged in time"
        time.sleep(0.1)
    time.sleep(0.3)  # the driver takes in the report
    parent_id, running_id = found
    groups = server_groups(db)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # what `timeout` or a scheduler sends: the driver alone
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert word in last and f"ganlab sweep resume {tmp_path / 'ray' / 'interrupted'}" in last, last
    assert "sweep_run_id:" not in out
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_run(parent_id).info.status == "KILLED"
    # the interrupted trial is KILLED, not FAILED: its worker is in the local Ray's own process group, so
    # Ctrl-C reaches the driver alone and Tune stops the trial (it was FAILED in 2 of 3 runs when the signal
    # reached the worker too and raised KeyboardInterrupt inside the trial)
    assert client.get_run(running_id).info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in children(client, parent_id))
    assert wait_until_gone(groups) == []
    if how == "sigterm":  # the resume is the same as after Ctrl-C, tested there
        return

    resume = ganlab("sweep", "resume", str(tmp_path / "ray" / "interrupted"), cwd=tmp_path, env=env)
    out, _ = resume.communicate(timeout=420)
    assert resume.returncode == 0, out[-3000:]
    assert out.strip().splitlines()[-1] == f"sweep_run_id: {parent_id}"
    runs = children(client, parent_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    interrupted = [r for r in runs if r.info.run_id == running_id][0]
    assert int(interrupted.data.tags["ganlab.resumed_epoch"]) >= 1  # continued from its checkpoint
    for r in runs:  # every step and epoch logged exactly once
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss_d")]
        assert steps == list(range(1, 65))  # 4 epochs x 16 steps, each once
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fcd")] == [1, 2, 3, 4]


def test_cluster_yaml_passes_rays_autoscaler_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's JSON schema, after its own defaults are filled in
    types = config["available_node_types"]
    gpu_workers = [t for t in types.values() if t.get("resources", {}).get("GPU")]
    assert gpu_workers and all(t["max_workers"] >= t["min_workers"] for t in types.values())
    head = types[config["head_node_type"]]
    assert not head.get("resources", {}).get("GPU")
    server = [c for c in config["head_start_ray_commands"] if c.startswith("nohup ganlab server")]
    assert server and "127.0.0.1" not in server[0]  # the head's private address: the workers log to it
    assert "postgresql://" in server[0] and "--artifacts-destination s3://" in server[0]
    assert any("install -y -q postgresql" in c for c in config["head_setup_commands"])
    assert any("[cluster]" in c for c in config["setup_commands"])


@pytest.mark.slow  # the restart itself: test_tracking_server (busy vs dead); this, end to end: make test-slow
def test_a_tracking_server_killed_mid_sweep_is_restarted_and_nothing_is_lost(tmp_path, env):
    spec = write_spec(tmp_path, "outage", num_samples=2, max_concurrent=1,
                      base={**TINY_BASE, "epochs": 3, "limit": 1024})
    proc = ganlab("sweep", "train", str(spec), cwd=tmp_path, env=env)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    while not running_trial_with_an_epoch(db):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no epoch logged in time"
        time.sleep(0.1)
    groups = server_groups(db)
    for group in groups:  # the whole served store: watchdog, mlflow server, uvicorn
        os.killpg(group, signal.SIGKILL)
    out, _ = proc.communicate(timeout=420)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped answering; restarted it on the same store" in out
    parent_id = out.strip().splitlines()[-1].split("sweep_run_id: ")[1]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = children(client, parent_id)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # every epoch of every trial, before and after the outage, exactly once
        assert [m.step for m in client.get_metric_history(r.info.run_id, "fcd")] == [1, 2, 3]
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss_d")]
        assert steps == list(range(1, 49))  # 3 epochs x 16 steps, each once
    assert server_groups(db) == set()


@pytest.mark.slow  # timing-sensitive under a loaded machine (hung once in a full run): `make test-slow`
def test_a_tracking_server_that_cannot_come_back_stops_the_sweep_in_one_line(tmp_path, env):
    import re
    import socket


    spec = write_spec(tmp_path, "lost", num_samples=2, max_concurrent=1, base={**TINY_BASE, "epochs": 3})
    proc = ganlab("sweep", "train", str(spec), cwd=tmp_path, env=env)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    while not (found := running_trial_with_an_epoch(db)):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no epoch logged in time"
        time.sleep(0.5)
    groups = server_groups(db)
    port = next(int(m.group(1)) for _, cmd in processes().values() if str(db) in cmd
                if (m := re.search(r"--port (\d+)", cmd)))
    os.kill(proc.pid, signal.SIGSTOP)  # freeze the driver: its watch must not restart the server first
    squatter = socket.socket()  # holds the port and never answers: the restart cannot bind it
    try:
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bind_by = time.monotonic() + 15  # the dying server lets go of the port within moments
        while True:
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < bind_by, "the killed server kept its port"
                time.sleep(0.05)
        squatter.listen(64)
        os.kill(proc.pid, signal.SIGCONT)
        start = time.monotonic()
        out, _ = proc.communicate(timeout=300)
        took = time.monotonic() - start
    finally:
        squatter.close()
        if proc.poll() is None:  # never leave a stopped driver behind
            os.kill(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert "died and could not be restarted" in last and "ganlab sweep resume" in last, last
    assert "Traceback" not in out and took < 120, took
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent_id, _ = found
    assert client.get_run(parent_id).info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in children(client, parent_id))
    assert server_groups(db) == set()


@pytest.mark.slow  # two minutes: a frontier search's driver SIGKILLed mid-search, then resumed
def test_a_killed_frontier_search_resumes_without_losing_or_repeating_a_trial_and_continues_its_bisection(
        tmp_path, env):
    import json

    from conftest import TINY_TRAIN, frontier_spec, replayed

    trained = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", *TINY_TRAIN], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    source = trained.stdout.split()[-1]
    raw = frontier_spec(tmp_path, "killed-frontier", max_concurrent=1)
    raw["frontier"] = {"bracket": 0.05, "max_steps": 4}
    raw["grid"].update(finetune_epochs=[0])
    spec = tmp_path / "frontier.yaml"
    spec.write_text(yaml.safe_dump(raw))
    proc = ganlab("sweep", "prune", str(spec), "--from-run", source, cwd=tmp_path, env=env)
    db = tmp_path / "mlflow.db"
    deadline = time.monotonic() + 300
    while finishedchildren(db) < 3:  # both endpoints and the first bisection step, then the kill
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no three trials finished in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent = client.search_runs([client.get_experiment_by_name("ganlab").experiment_id],
                                "tags.`ganlab.kind` = 'sweep'")[0]
    before = {r.info.run_id: r.data.tags["ganlab.grid_point"] for r in children(client, parent.info.run_id)
              if r.info.status == "FINISHED"}
    assert len(before) >= 3
    resume = ganlab("sweep", "resume", str(tmp_path / "ray" / "killed-frontier"), cwd=tmp_path, env=env)
    out, _ = resume.communicate(timeout=600)
    assert resume.returncode == 0, out[-3000:]
    runs = [r for r in children(client, parent.info.run_id) if r.info.status == "FINISHED"]
    points = [r.data.tags["ganlab.grid_point"] for r in runs]
    assert len(points) == len(set(points))  # no amount scored twice on the source
    assert before.items() <= {r.info.run_id: r.data.tags["ganlab.grid_point"] for r in runs}.items()  # none lost
    with open(client.download_artifacts(parent.info.run_id, "frontiers.json", str(tmp_path))) as f:
        [answer] = json.load(f).values()
    assert answer["status"] is not None and len(answer["steps"]) == len(runs)
    assert replayed(answer, 20.0, 90.0, 0.05, 4) == answer["status"]  # the bisection went on where it was
