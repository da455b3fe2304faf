"""The one atomic writer: a temp file beside the target, then a rename, so no reader ever sees a partial file
(checkpoints, sweep state, results.md, unpacked datasets). No torch here: analysis writes through it too."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ganlab.errors import ConfigError, interrupt_behind


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a file to write, checked before any work: ConfigError (one line) if it is an existing
    directory, or its folder is not one (a file, or missing beyond one level the writer would make), or
    cannot be written to."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name (e.g. {path / 'out'}...)")
    _nearest_folder_writable(path.parent, path, flag)
    return path


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into (made if missing), checked before any work: ConfigError (one line) if
    it or a folder above it is an existing file, or it cannot be written to."""
    path = Path(path)
    _nearest_folder_writable(path, path, flag)
    return path


def _nearest_folder_writable(folder: Path, given: Path, flag: str) -> None:
    """ConfigError unless the nearest existing one of ``folder`` and its parents is a folder we may write in
    (the writer makes the missing ones)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{flag} {given}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {given}: cannot write in {existing} (permission denied)")


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
