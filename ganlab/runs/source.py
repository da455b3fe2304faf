"""Where every run function gets its model: a checkpoint file, or an MLflow run's saved checkpoint.

The one place the GAN core (``ganlab.gan``) meets the tracking store: the run id is resolved to a local file
through MLflow, then read as data (``torch.load(weights_only=True)``) by ``ganlab.gan.checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

from ganlab.device import pick_device
from ganlab.errors import CheckpointError
from ganlab.gan.checkpoint import load_checkpoint
from ganlab.gan.loop import TrainingState, restore_state
from ganlab.tracking import schema
from ganlab.tracking.store import download_artifact


def resolve_checkpoint(source: str, workdir: Path, uri: str | None = None) -> Path:
    """A local checkpoint file from a path or an MLflow run id (its checkpoints/last.pt, downloaded)."""
    path = Path(source)
    if path.exists():
        return path
    if "/" in source or source.endswith(".pt"):
        raise CheckpointError(f"checkpoint {source} does not exist")
    return download_artifact(source, schema.CHECKPOINT, workdir, uri)


def state_from_source(source: str, workdir: Path, device: str = "auto", uri: str | None = None,
                      *, with_optimizers: bool = True) -> TrainingState:
    """The TrainingState of a checkpoint file or of an MLflow run's checkpoints/last.pt."""
    ckpt = load_checkpoint(resolve_checkpoint(source, workdir, uri))
    return restore_state(ckpt, pick_device(device), with_optimizers=with_optimizers)
