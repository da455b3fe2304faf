"""Named moments where a test can hold a process to interrupt it there (fault injection, as etcd's gofail).

``GANLAB_PAUSE_AT=NAME`` makes the process print ``ganlab: paused at NAME`` when it reaches ``pause_point(NAME)``
and sleep until a signal ends it; unset (always, outside tests) a pause point does nothing. The moments a
sweep can be stopped at are in tests/test_sweep_interrupts.py.
"""

from __future__ import annotations

import os
import time

ENV = "GANLAB_PAUSE_AT"


def pause_point(name: str) -> None:
    if os.environ.get(ENV) != name:
        return
    print(f"ganlab: paused at {name}", flush=True)
    while True:  # Ctrl-C raises KeyboardInterrupt here; SIGKILL ends it
        time.sleep(3600)
