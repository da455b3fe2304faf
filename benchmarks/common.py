"""What every benchmark prints and controls: the machine, torch's threads, and the load beside it.

``--threads N`` sets torch's intra-op threads (default: ganlab's own default, the usable cores that are
idle, decided in each load phase once the neighbour runs, as a command started then would).
``--load busy`` runs a CPU-bound neighbour process for the benchmark's duration (the normal case
when several trials share a machine); ``--load both`` measures idle, then busy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from ganlab.device import cpu_model, set_threads, usable_cores  # noqa: F401 - the one definition, re-exported

LOADS = ("idle", "busy", "both")


def add_common_arguments(p: argparse.ArgumentParser, load_default: str = "idle") -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: ganlab's, the usable cores idle at the start of each load "
                   "phase)")
    p.add_argument("--load", choices=LOADS, default=load_default,
                   help="idle machine, a CPU-bound process running beside the benchmark (busy), or both "
                        f"(default: {load_default})")


def machine_line(threads: int, load: str) -> str:
    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"machine: {cpu}, {os.cpu_count()} CPUs ({usable_cores()} usable){gpu}; torch {torch.__version__}; "
            f"threads {threads}; load {load}; load average {os.getloadavg()[0]:.2f}")


@contextlib.contextmanager
def neighbour(load: str) -> Iterator[None]:
    """For ``load == 'busy'``: a CPU-bound process (one busy core) running beside the block, killed after."""
    if load != "busy":
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # running, as it would be when a command starts beside it
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def loads(load: str) -> list[str]:
    return ["idle", "busy"] if load == "both" else [load]
