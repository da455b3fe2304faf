"""A resumed sweep is the sweep it was asked to be (sweeps/runner.py, sweeps/storage.py, ganlab/faults.py).

One small pruning grid (3 points on one source, one trial at a time) is stopped at each moment a user or a
machine can stop it — before Tune wrote anything, between Tune's tuner.pkl and its first experiment state,
mid-trial, between trials, during the final registration — by Ctrl-C (SIGINT to the driver's group) or SIGKILL,
then resumed. Each resume must give the spec's every point exactly once, FINISHED, one registered version, no run
left RUNNING (deleted ones included), nothing of ganlab's in the temp directory; and a second resume must say the
sweep has finished and change nothing. ``GANLAB_PAUSE_AT`` holds the driver at the moments no file shows.
"""

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
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import TINY_TRAIN

QS = [30.0, 60.0, 90.0]
MODEL = "interrupted-gen"


@pytest.fixture(scope="module")
def source(tmp_path_factory, evaluator_32):
    """A tiny trained generator in a store each test copies."""
    root = tmp_path_factory.mktemp("interrupt-source")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "ganlab.cli", "train", *TINY_TRAIN], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done.stdout.split()[-1]


@pytest.fixture
def temp_dir():
    """The sweep's system temp directory: short, since Ray puts its sockets there (at most 107 bytes a path)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="gi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _setup(tmp_path: Path, source, temp_dir: Path) -> tuple[dict, Path]:
    import shutil

    root, _ = source
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(temp_dir)}
    env.pop("RAY_ADDRESS", None)
    env.pop("GANLAB_PAUSE_AT", None)
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump({
        "kind": "prune", "name": "grid", "storage_path": str(tmp_path / "ray"), "registered_model": MODEL,
        "grid": {"percentage": {"q": QS}, "samples": 129, "eval_draws": 2}, "resources": {"cpu": 1},
        "max_concurrent": 1}))
    return env, spec


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_driver_left_behind():
    """A case that fails while a driver is paused or running must not leave it behind: its group is killed."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ganlab(args, tmp_path, env):
    """The command in its own session, its output read line by line into ``proc.lines`` as it comes."""
    import threading

    # SIGINT as a terminal's process has it: a runner started in the background (a shell without job control)
    # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "ganlab.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    proc.reader.start()
    STARTED.append(proc)
    return proc


def _ended(proc, timeout: float) -> str:
    """Wait for the command; all it printed."""
    proc.wait(timeout=timeout)
    proc.reader.join(timeout=10)
    return "".join(proc.lines)


def _children(db: Path, status: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        try:
            return con.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid where t.key = "
                               "'mlflow.parentRunId' and r.status = ?", (status,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _wait_for(proc, what, done, limit=300):
    deadline = time.monotonic() + limit
    while not done([line.rstrip("\n") for line in proc.lines]):
        assert proc.poll() is None, f"ended before {what}: " + "".join(proc.lines[-40:])
        assert time.monotonic() < deadline, f"{what} did not come in time"
        time.sleep(0.05)


MOMENTS = {  # moment -> (what the driver waits at: a pause point or a state of the store)
    "before-tune": "sweep-state-saved",  # parent run and ganlab_sweep.json written, no Tune file yet
    "tuner-pkl-only": "tuner-saved",  # Tune's tuner.pkl written, its first experiment state not yet
    "mid-trial": None,  # a trial's run is RUNNING
    "between-trials": None,  # one point has finished
    "registering": "registering",  # every point ran; the generator is being registered
}


@pytest.mark.slow  # ~1.5 minutes a case: a sweep's own Ray started, stopped, resumed and resumed again
@pytest.mark.parametrize("moment, how", [
    ("before-tune", signal.SIGINT), ("tuner-pkl-only", signal.SIGKILL), ("tuner-pkl-only", signal.SIGINT),
    ("mid-trial", signal.SIGKILL), ("between-trials", signal.SIGINT), ("registering", signal.SIGKILL)])
def test_a_sweep_stopped_at_any_moment_resumes_to_every_point_exactly_once(tmp_path, source, temp_dir, moment,
                                                                          how):
    env, spec = _setup(tmp_path, source, temp_dir)
    db = tmp_path / "mlflow.db"
    pause = MOMENTS[moment]
    proc = _ganlab(["sweep", "prune", str(spec), "--from-run", source[1]], tmp_path,
                   {**env, "GANLAB_PAUSE_AT": pause} if pause else env)
    if pause:
        _wait_for(proc, pause, lambda lines: f"ganlab: paused at {pause}" in lines)
    elif moment == "mid-trial":
        _wait_for(proc, "a running trial", lambda _: _children(db, "RUNNING") >= 1)
    else:
        _wait_for(proc, "a finished point", lambda _: _children(db, "FINISHED") >= 1)
    if how == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the driver's whole group
        out = _ended(proc, 120)
        assert proc.returncode == 130, out[-3000:]
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        _ended(proc, 60)
    if moment == "before-tune":  # edited after the interrupt: the saved spec runs, and a line says so
        edited = yaml.safe_load(spec.read_text())
        edited["grid"]["percentage"]["q"] = [10.0]
        spec.write_text(yaml.safe_dump(edited))

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [parent] = client.search_runs([client.get_experiment_by_name("ganlab").experiment_id],
                                  "tags.`ganlab.kind` = 'sweep'")
    resume = _ganlab(["sweep", "resume", str(tmp_path / "ray" / "grid")], tmp_path, env)
    out = _ended(resume, 420)
    assert resume.returncode == 0, out[-3000:]
    assert out.strip().splitlines()[-1] == f"sweep_run_id: {parent.info.run_id}"
    if moment == "before-tune":
        assert "has changed since the sweep started (grid.percentage); the spec saved with the sweep is used" in out
    _assert_every_point_once(client, parent.info.run_id, temp_dir)
    before = _snapshot(client, parent.info.run_id)

    again = _ganlab(["sweep", "resume", str(tmp_path / "ray" / "grid")], tmp_path, env)
    out = _ended(again, 300)
    assert again.returncode == 0, out[-3000:]
    assert "has finished" in out and "nothing registered again" in out, out[-3000:]
    assert _snapshot(client, parent.info.run_id) == before  # exactly once: no metric, run or version added


def _assert_every_point_once(client, parent_id: str, temp_dir: Path) -> None:
    experiment = client.get_run(parent_id).info.experiment_id
    every = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                               run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in every if r.info.status == "RUNNING"] == []  # no ghost, deleted ones included
    finished = [r for r in every if r.info.status == "FINISHED" and r.info.lifecycle_stage == "active"]
    assert sorted(float(r.data.params["q"]) for r in finished) == QS  # every point, once
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    assert sorted(p.name for p in temp_dir.glob("ganlab-*")) == []  # no temp file of a killed trial


def _snapshot(client, parent_id: str) -> dict:
    run = client.get_run(parent_id)
    experiment = run.info.experiment_id
    every = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent_id}'",
                               run_view_type=ViewType.ALL)
    return {"metrics": {k: len(client.get_metric_history(parent_id, k)) for k in run.data.metrics},
            "tags": dict(run.data.tags), "runs": sorted(r.info.run_id for r in every),
            "versions": sorted(v.version for v in client.search_model_versions(f"name = '{MODEL}'"))}
