"""The MLflow UI as a user meets it (tracking/server_cli.py, tracking/mlflow_app.py): `ganlab server`'s printed link,
then a plain click into the experiment, in headless Chromium. MLflow 3.17 opens its (empty) GenAI overview in a
fresh browser; ganlab's link must leave the browser on the runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:  # a missing browser fails loudly: this test must not pass by skipping
        pytest.fail("headless Chromium is not installed: run `make browser` or `apt-get install chromium`")
    return found


def _page(profile, url: str, *extra: str) -> str:
    out = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra,
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return out.stdout


def test_the_printed_link_opens_the_runs_and_later_clicks_stay_there(trained_run, tmp_path):
    from mlflow.tracking import MlflowClient

    from ganlab.tracking.server import free_port

    uri, run_id, workdir = trained_run
    run_name = MlflowClient(uri).get_run(run_id).info.run_name
    exp_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GANLAB_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "server", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        link = None
        deadline = time.monotonic() + 120
        while link is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "ganlab server ended before it printed its link"
            link = line.split("ui: ", 1)[1].strip() if line.startswith("ui: ") else None
        assert link == f"http://127.0.0.1:{port}/ganlab/open"
        plain = f"http://127.0.0.1:{port}/#/experiments/{exp_id}"  # what clicking the experiment opens
        fresh = _page(tmp_path / "fresh", plain)
        assert run_name not in fresh and re.search(r"Traces|Usage", fresh)  # MLflow's own default: GenAI
        _page(tmp_path / "user", link)  # the user follows the printed link once...
        shot = tmp_path / "mlflow-ui.png"
        subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'user'}", "--virtual-time-budget=15000",
                        "--window-size=1400,900", f"--screenshot={shot}", plain], capture_output=True, timeout=120)
        after = _page(tmp_path / "user", plain)  # ...then clicks into the experiment: the runs table
        assert run_name in after
        print(f"screenshot of the runs table a user gets: {shot}")
        assert shot.is_file() and shot.stat().st_size > 10_000
        # the experiment's link (what a sweep prints) opens ganlab's shared view: runs ordered by FCD...
        view = _page(tmp_path / "user", f"http://127.0.0.1:{port}/ganlab/open?experiment={exp_id}")
        assert "viewing a shared view" in view and "Sort: fcd" in view and run_name in view
        # ...and its charts tab holds the comparison's section (sparsity vs FCD, parallel coordinates)
        charts = _page(tmp_path / "user", f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?"
                       "viewStateShareKey=ganlab-comparison&compareRunsMode=CHART")
        assert "ganlab: sparsity against image quality" in charts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
