"""Local sqlite stores (tracking/store.py, tracking/run_logger.py) as users move and mistake them: a copied store
folder still shows its images, a file that is not a database is one line (exit 2)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from PIL import Image


def _log_run_with_image(folder) -> tuple[str, str]:
    """A run logged straight to sqlite (no server) with an image artifact, as `ganlab train` logs one."""
    from ganlab.tracking.store import ensure_experiment, mlflow_client

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow_client(uri)
    run = client.create_run(ensure_experiment("moved", uri))
    image = folder / "epoch_001.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    client.log_artifact(run.info.run_id, str(image), "samples")
    client.set_terminated(run.info.run_id)
    image.unlink()
    return uri, run.info.run_id


def test_a_store_folder_moved_elsewhere_still_serves_its_images(tmp_path):
    from ganlab.tracking.server import free_port

    old = tmp_path / "lab"
    old.mkdir()
    _, run_id = _log_run_with_image(old)
    new = tmp_path / "copied elsewhere"  # a space: file URIs are percent-encoded
    shutil.move(old, new)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{new / 'mlflow.db'}",
           "GANLAB_CACHE_DIR": str(tmp_path / "cache")}
    server = subprocess.Popen([sys.executable, "-m", "ganlab.cli", "server", "--port", str(port)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (line := server.stdout.readline()) and not line.startswith("tracking_uri:"):
            assert time.monotonic() < deadline
        assert line, server.stderr.read()
        url = f"http://127.0.0.1:{port}/get-artifact?path=samples/epoch_001.png&run_uuid={run_id}"
        with urllib.request.urlopen(url, timeout=30) as answer:  # what the UI's image preview fetches
            assert answer.status == 200 and answer.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert "was moved" in server.stderr.read()
    from ganlab.tracking.store import mlflow_client

    run = mlflow_client(f"sqlite:///{new / 'mlflow.db'}").get_run(run_id)
    assert run.info.artifact_uri.startswith((new / "mlartifacts").as_uri())


def test_a_store_in_place_is_left_as_it_is(tmp_path):
    from ganlab.tracking.storage import relocate_moved_store
    from ganlab.tracking.store import mlflow_client

    uri, run_id = _log_run_with_image(tmp_path)
    before = mlflow_client(uri).get_run(run_id).info.artifact_uri
    assert relocate_moved_store(tmp_path / "mlflow.db") is None
    assert mlflow_client(uri).get_run(run_id).info.artifact_uri == before


def test_a_tracking_store_that_is_not_a_database_is_one_line(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    out = subprocess.run([sys.executable, "-m", "ganlab.cli", "evaluate", "--run-id", "0123abcd"], cwd=tmp_path,
                         capture_output=True, text=True,
                         env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{junk}"}, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "not an MLflow sqlite database" in out.stderr and str(junk) in out.stderr
