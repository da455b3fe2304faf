"""Where a sweep keeps its Tune experiment: a local directory, or a bucket (``s3://bucket/prefix``).

Tune writes its experiment state and trial checkpoints under ``<storage_path>/<sweep name>``; ganlab
writes its own state file (``ganlab_sweep.json``: spec, parent run, sources) beside them, in the same
storage, so ``ganlab sweep resume <storage_path>/<name>`` works the same for a folder and a bucket.

Remote paths go through pyarrow's filesystems, as Tune's own do: credentials and endpoint come from the
usual AWS settings (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or an instance profile,
``AWS_ENDPOINT_URL`` for an S3-compatible server). A bucket that does not exist or credentials that are
missing are bad input, found before Ray or the tracking store is touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.files import write_atomic
from ganlab.tracking.storage import check_storage, filesystem, is_remote

STATE_FILE = "ganlab_sweep.json"  # what `ganlab sweep resume` needs, beside Tune's own state
TUNER_FILE = "tuner.pkl"  # Tune's, written when the experiment starts
STATE_KEYS = ("spec", "parent_run_id", "tracking_uri_local", "data_dir", "address")


def storage_root(storage_path: str) -> str:
    """A spec's ``storage_path`` as Tune takes it: a URI as given, a local path made absolute."""
    return storage_path.rstrip("/") if is_remote(storage_path) else str(Path(storage_path).resolve())


def experiment_path(storage_path: str, name: str) -> str:
    """``<storage>/<name>``: the sweep's Tune experiment directory, what ``ganlab sweep resume`` takes."""
    root = storage_root(storage_path)
    return f"{root}/{name}" if is_remote(root) else str(Path(root) / name)


def write_state(storage_path: str, name: str, state: dict) -> None:
    """Write the sweep's state file into its experiment directory (temp file then rename where local)."""
    exp = experiment_path(storage_path, name)
    text = json.dumps(state, indent=2)
    if not is_remote(exp):
        write_atomic(text, Path(exp) / STATE_FILE)
        return
    fs, root = filesystem(exp)
    with fs.open_output_stream(f"{root}/{STATE_FILE}") as out:  # one PUT: whole or not at all
        out.write(text.encode())


def read_state(exp: str) -> dict:
    """The ganlab state of sweep directory ``exp`` (a folder or ``s3://...``); GanlabError (one line) if it is
    not a resumable ganlab sweep."""
    import pyarrow.fs

    if is_remote(exp):
        check_storage(exp)
    fs, root = filesystem(exp)
    root = root.rstrip("/")
    state_file = f"{exp.rstrip('/')}/{STATE_FILE}"
    if fs.get_file_info(f"{root}/{STATE_FILE}").type != pyarrow.fs.FileType.File:
        raise GanlabError(f"{exp} is not a ganlab sweep directory (no {STATE_FILE}); give "
                          "<storage_path>/<sweep name> of a sweep ganlab started")
    with fs.open_input_stream(f"{root}/{STATE_FILE}") as f:
        raw = f.read()
    try:
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GanlabError(f"{state_file} is corrupt (not JSON): this sweep cannot be resumed") from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise GanlabError(f"{state_file} is not a ganlab sweep state (it needs {', '.join(STATE_KEYS)})")
    if fs.get_file_info(f"{root}/{TUNER_FILE}").type != pyarrow.fs.FileType.File:
        raise GanlabError(f"{exp} has no {TUNER_FILE} (Ray Tune's state, written when the sweep started): "
                          "it cannot be resumed; start the sweep again")
    return state
