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

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.files import write_atomic
from ganlab.tracking.storage import check_storage, filesystem, is_remote

STATE_FILE = "ganlab_sweep.json"  # what `ganlab sweep resume` needs, beside Tune's own state
TUNER_FILE = "tuner.pkl"  # Tune's, written when the experiment starts
# SweepState.phase: Tune may still have trials to run / it stopped short of its spec (a resume starts Tune afresh) /
# every trial ran and the answer is logged (a resume changes nothing)
RUNNING, RESTART, FITTED = "running", "restart", "fitted"


@dataclass
class SweepState:
    """The sweep driver's state, one field per fact, written to ``ganlab_sweep.json`` beside Tune's own state: what
    `ganlab sweep resume` needs to continue the sweep it was asked to be.

    ``tracking_uri`` is the store itself (sqlite or PostgreSQL, resolved once by the entry point), not the served
    address trials log to. ``phase`` is FITTED once Tune ran every trial the spec names and the parent run holds
    the sweep's answer: a resume then changes nothing. ``spec_file`` is where the spec was read from (a resume
    says when that file has changed since: the saved ``spec`` is what runs)."""

    spec: dict
    tracking_uri: str
    data_dir: str | None = None
    address: str | None = None
    source_run_ids: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    spec_file: str | None = None
    phase: str = RUNNING

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> SweepState:
        """A state file's contents, this version's or an older one's (``tracking_uri_local``, one
        ``source_run_id``); GanlabError (one line) when a field it needs is missing."""
        raw = dict(raw)
        if "tracking_uri_local" in raw:
            raw.setdefault("tracking_uri", raw.pop("tracking_uri_local"))
        if "source_run_id" in raw:
            raw.setdefault("source_run_ids", [raw.pop("source_run_id")])
        missing = [k for k in STATE_KEYS if k not in raw]
        if missing:
            raise GanlabError(f"{where} is not a ganlab sweep state (it needs {', '.join(STATE_KEYS)})")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


STATE_KEYS = ("spec", "parent_run_id", "tracking_uri", "data_dir", "address")


def storage_root(storage_path: str) -> str:
    """A spec's ``storage_path`` as Tune takes it: a URI as given, a local path made absolute."""
    return storage_path.rstrip("/") if is_remote(storage_path) else str(Path(storage_path).resolve())


def experiment_path(storage_path: str, name: str) -> str:
    """``<storage>/<name>``: the sweep's Tune experiment directory, what ``ganlab sweep resume`` takes."""
    root = storage_root(storage_path)
    return f"{root}/{name}" if is_remote(root) else str(Path(root) / name)


def write_state(storage_path: str, name: str, state: SweepState) -> None:
    """Write the sweep's state file into its experiment directory (temp file then rename where local)."""
    exp = experiment_path(storage_path, name)
    text = state.to_json()
    if not is_remote(exp):
        write_atomic(text, Path(exp) / STATE_FILE)
        return
    fs, root = filesystem(exp)
    with fs.open_output_stream(f"{root}/{STATE_FILE}") as out:  # one PUT: whole or not at all
        out.write(text.encode())


def read_state(exp: str) -> SweepState:
    """The ganlab state of sweep directory ``exp`` (a folder or ``s3://...``); GanlabError (one line) if it is
    not a ganlab sweep."""
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
    if not isinstance(state, dict):
        raise GanlabError(f"{state_file} is not a ganlab sweep state (it needs {', '.join(STATE_KEYS)})")
    return SweepState.from_dict(state, state_file)


def tune_has_started(exp: str) -> bool:
    """Whether Tune recorded the sweep's trials in ``exp``: its tuner.pkl *and* a first experiment state
    (``experiment_state-*.json``). Between the two, ``Tuner.restore`` cannot rebuild the run: it restarts with a
    searcher that has forgotten the grid, so a resume starts Tune afresh instead (finished points are found in
    MLflow, not run again)."""
    import pyarrow.fs

    fs, root = filesystem(exp)
    root = root.rstrip("/")
    if fs.get_file_info(f"{root}/{TUNER_FILE}").type != pyarrow.fs.FileType.File:
        return False
    listing = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return any(Path(info.path).name.startswith("experiment_state-") and info.path.endswith(".json")
               for info in listing)


def trial_temp_dir(parent_run_id: str) -> Path:
    """Where a sweep's trials on this machine keep their temporary files (``ganlab-sweep-<parent run>`` in the
    system's temp directory): a trial killed with its driver leaves them there, and the sweep removes the folder
    when it ends or resumes. Under the sweep's parent run, not its storage: that may be a bucket."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"ganlab-sweep-{parent_run_id}"


def clear_tune_files(exp: str) -> None:
    """Remove Tune's own files from sweep directory ``exp`` (tuner.pkl, experiment states, trial folders), keeping
    ganlab's state file: a sweep that Tune cannot restore starts a fresh Tune run in the same folder."""
    import pyarrow.fs

    fs, root = filesystem(exp)
    root = root.rstrip("/")
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if Path(info.path).name == STATE_FILE:
            continue
        if info.type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
