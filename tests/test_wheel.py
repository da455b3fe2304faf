"""ganlab from its built wheel, installed into a fresh venv, used from an empty directory (no repo around it)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO


def _run(cmd, cwd, env, timeout=600):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-3000:])
    return out.stdout


@pytest.mark.slow  # 25-50 s of a real sweep or server: make test-slow (CI runs it), to keep make test under 10 min
def test_the_wheel_runs_a_tiny_sweep_from_an_empty_directory(tmp_path):
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # built from a copy of the tracked files: setuptools writes build/ where it builds, and not into the checkout
    for name in _run(["git", "ls-files"], REPO, os.environ.copy()).splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(wheels)], tmp_path, os.environ.copy())
    (wheel,) = wheels.glob("ganlab-*.whl")
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], tmp_path, os.environ.copy())
    python = fresh / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], tmp_path,
         os.environ.copy())
    # the dependencies (torch, ray, mlflow...) of this venv, without its editable ganlab: a path, not a site dir
    packages = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                    os.environ.copy()).strip()
    Path(packages, "reuse_deps.pth").write_text(site.getsitepackages()[0] + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{empty / 'mlflow.db'}", "PYTHONPATH": "",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ganlab = str(fresh / "bin" / "ganlab")
    where = _run([str(python), "-c", "import ganlab, sweeps; print(ganlab.__file__); print(sweeps.__file__)"], empty,
                 env)
    assert str(REPO) not in where and str(fresh) in where  # the wheel's code, not the checkout's
    assert "demo_train" in _run([ganlab, "sweep", "list"], empty, env)
    out = _run([ganlab, "train", "--dataset", "fashion-mnist", "--image-size", "32", "--limit", "256", "--epochs", "1",
                "--batch-size", "64", "--ngf", "8", "--ndf", "8", "--no-progress", "--threads", "1"], empty, env)
    source = out.strip().splitlines()[-1].split("run_id: ")[1]
    (empty / "tiny.yaml").write_text(yaml.safe_dump({
        "kind": "prune", "name": "tiny", "grid": {"percentage": {"q": [50]}, "samples": 150, "eval_draws": 2},
        "resources": {"cpu": 1}, "max_concurrent": 1}))
    out = _run([ganlab, "sweep", "prune", "tiny.yaml", "--from-run", source], empty, env)
    assert out.strip().splitlines()[-1].startswith("sweep_run_id: ")
    out = _run([ganlab, "demo", "--help"], empty, env)
    assert "make" not in out
    visible = sorted(p.name for p in empty.iterdir() if not p.name.startswith("."))
    assert visible == ["mlartifacts", "mlflow.db", "ray_results", "tiny.yaml"]
    assert not list(empty.glob(".mlflow-server-*"))  # the sweep's server logs elsewhere
