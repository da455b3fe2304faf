"""ganlab/tracking/server.py: the served store takes concurrent writers, keeps its log, dies with the process
that started it, and is restarted when dead but left alone when busy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from processes import alive_in, processes, server_groups, wait_until_gone

from conftest import REPO, TINY_TRAIN


@pytest.mark.slow  # 25-50 s of a real sweep or server: make test-slow (CI runs it), to keep make test under 10 min
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


def test_a_server_that_fails_to_start_keeps_the_log_it_names(tmp_path):
    from ganlab.tracking.server import served_store

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(RuntimeError, match="did not start") as err, served_store(f"sqlite:///{db}") as server:
        server.uri  # noqa: B018 - waits for the server
    log = str(err.value).rsplit("kept at ", 1)[1]
    assert Path(log).is_file() and Path(log).read_text().strip()


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


def test_a_busy_served_store_is_left_to_answer_and_a_dead_one_restarted(tmp_path):
    """The sweep's watch restarts the store only when it is dead (process gone, port refusing): a server that
    answers slowly (here: frozen by SIGSTOP, its port still accepting) holds trials' requests and was restarted
    after two 5 s health checks."""
    from ganlab.tracking.server import ServedStore

    store = ServedStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        store.uri  # noqa: B018 - booted
        groups = server_groups(tmp_path / "mlflow.db")
        serving = [pid for pid, (pgid, cmd) in processes().items() if pgid in groups and "uvicorn" in cmd]
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
