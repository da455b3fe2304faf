"""How a sweep's driver stops: Ctrl-C or SIGTERM through Tune's own graceful stop, and the sweep's runs closed in the
store itself (the served store may be booting or gone)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from ganlab.errors import Terminated
from ganlab.tracking import schema
from ganlab.tracking import store as tracking


@contextlib.contextmanager
def interrupts_stop_tune_gracefully(local: bool = True) -> Iterator[list[KeyboardInterrupt]]:
    """Around ``tuner.fit()``: collects the interrupt that stopped it, if one did.

    On Ctrl-C, Tune's own handler stops the trials, saves the experiment state one last time (so a
    resume continues every trial from its last checkpoint) and returns from fit() as if the sweep
    had finished. It also puts back the SIGINT handler it found: a sentinel installed here tells
    that it fired. SIGTERM is routed into the same graceful stop through SIGUSR1, which Tune also
    handles. A second Ctrl-C, once Tune has restored the sentinel, stops at once.
    """
    interrupted: list[KeyboardInterrupt] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}

    def sentinel(signum, frame):
        raise KeyboardInterrupt()

    def on_sigterm(signum, frame):
        interrupted.append(Terminated())
        if signal.getsignal(signal.SIGUSR1) in (previous[signal.SIGUSR1], signal.SIG_DFL):
            raise interrupted[0]  # Tune's handler is not there (yet): unwind instead
        os.kill(os.getpid(), signal.SIGUSR1)

    # Tune handles signals only in the main thread of a local driver (not under Ray Client, not when
    # the user disabled it): anywhere else the default KeyboardInterrupt path applies.
    tune_handles = (local and threading.current_thread() is threading.main_thread()
                    and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") or 0))
    if not tune_handles:
        yield interrupted
        return
    signal.signal(signal.SIGINT, sentinel)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield interrupted
        if signal.getsignal(signal.SIGINT) is sentinel and not interrupted:
            interrupted.append(KeyboardInterrupt())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def close_unfinished_children(uri: str, parent_run_id: str, status: str, include_parent: bool = False) -> None:
    client = tracking.mlflow_client(uri)
    parent = client.get_run(parent_run_id)
    runs = schema.child_runs(client, parent.info.experiment_id, parent_run_id)
    for run in [*runs, *([parent] if include_parent else [])]:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)


