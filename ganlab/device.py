"""Where and with how many threads work runs: devices, the cores a process was given and the ones idle now,
thread counts, a fractional GPU's memory share. No training here (ganlab.gan.loop is the loop)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch

from ganlab.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. ConfigError if the named device is not on this machine."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is visible here; use --device cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device='mps' but MPS is not available here; use --device cpu (or auto)")
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which container limits narrow), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def free_cores(window_s: float = 0.1, busy_above: float = 0.5) -> int:
    """Usable cores that are idle now: those of this process's affinity whose non-idle share over a short
    look at /proc/stat is at most ``busy_above`` (at least 1; ``usable_cores()`` where /proc/stat is absent).

    A torch thread on a core another process keeps busy stalls every parallel op it joins: measured on 2 cores
    with one busy neighbour, 2 threads ran the quality metrics 5x and training 2.5-5x slower than 1 thread.
    """
    import time

    def ticks() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as stat:
            for line in stat:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    v = [int(x) for x in values]
                    out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))  # total, idle + iowait
        return out

    try:
        cpus = os.sched_getaffinity(0)
        before = ticks()
        time.sleep(window_s)
        after = ticks()
    except (OSError, AttributeError):
        return usable_cores()
    free = 0
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            continue
        total = after[cpu][0] - before[cpu][0]
        idle = after[cpu][1] - before[cpu][1]
        free += total <= 0 or (total - idle) / total <= busy_above
    return max(1, free)


def cpu_model() -> str:
    """This machine's CPU as /proc/cpuinfo names it (the platform's processor string elsewhere)."""
    import contextlib
    import platform

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    return name


def set_threads(threads: int | None = None) -> int:
    """torch's intra-op threads = the cores this piece of work was given (default: the usable cores that are
    free now, ``free_cores``).

    torch's default (one per core of the machine) makes concurrent trials, or a job beside a busy
    process, fight over cores: measured 15x slower on 2 busy cores.
    """
    from ganlab.config import check_range

    if threads is not None:
        check_range("threads", threads, low=1, integer=True)
        if threads > usable_cores():  # more threads than cores only contend; 100,000 crashed OpenMP (exit 139)
            print(f"ganlab: --threads {threads}: this process may use {usable_cores()} cores; using "
                  f"{usable_cores()} threads", file=sys.stderr)
            threads = usable_cores()
    n = threads or free_cores()
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def threads_for(n: int) -> Iterator[None]:
    """torch's intra-op threads = ``n`` within the block, then back to what they were."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gpu_memory_share(gpus: float) -> float | None:
    """The share of its GPU's memory a job given ``gpus`` of one GPU may take: ``gpus`` when it is a fraction
    (0.25: four jobs share the GPU), None when it has whole GPUs or none (no cap)."""
    return float(gpus) if 0.0 < gpus < 1.0 else None


def limit_gpu_memory(gpus: float) -> float | None:
    """Cap this process's CUDA allocations at its share of the GPU (``gpu_memory_share``), so fractional-GPU
    trials sharing a GPU cannot take each other's memory: an allocation beyond the share raises
    OutOfMemoryError in the trial that made it, not in its neighbours. Returns the cap set (None: none)."""
    share = gpu_memory_share(gpus)
    if share is None or not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(share, torch.cuda.current_device())
    return share
