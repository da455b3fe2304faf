"""The one atomic writer: a temp file beside the target, then a rename, so no reader ever sees a partial file
(checkpoints, sweep state, results.md, unpacked datasets). No torch here: analysis writes through it too."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ganlab.errors import interrupt_behind


def write_atomic(data: bytes | str | Callable[[BinaryIO], None], path: str | Path) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function writing to the file) to a temp file beside ``path``, then
    rename: never a partial file. The file gets the umask's usual mode, not mkstemp's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, str)):
                f.write(data.encode() if isinstance(data, str) else data)
            else:
                data(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        interrupt = interrupt_behind(exc)
        if interrupt is not None:
            # Ctrl-C or SIGTERM inside torch.save: its zip writer's __exit__ then fails on the half
            # record, and that RuntimeError would hide the interrupt from every caller
            raise interrupt from None
        raise
    return path
