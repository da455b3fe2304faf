"""Where a run came from and what it cost the machine: MLflow's source / user / git-commit tags, and its system
metrics (CPU, memory, GPU) while a training run runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ganlab.tracking import schema


def source_info(kind: str) -> dict[str, str]:
    """MLflow's Source, User and Version columns: the ganlab command, the user, and ganlab's git commit when it
    runs from a checkout (else its version)."""
    import getpass
    import subprocess

    from ganlab import __file__ as package_file

    info = {"mlflow.source.name": f"ganlab {kind}", "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(KeyError, OSError):
        info["mlflow.user"] = getpass.getuser()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(package_file).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if len(commit) == 40:
        info["mlflow.source.git.commit"] = commit
    else:
        from importlib.metadata import PackageNotFoundError, version

        with contextlib.suppress(PackageNotFoundError):
            info[schema.VERSION] = version("ganlab")
    return info


@contextmanager
def system_metrics(run_id: str, uri: str, on: bool = True) -> Iterator[None]:
    """MLflow's system metrics (system/cpu_utilization_percentage, memory, GPU...) logged to ``run_id`` every
    10 s while the block runs; nothing when ``on`` is False or psutil is missing."""
    monitor = None
    if on:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
            monitor.start()
        except ImportError:
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
