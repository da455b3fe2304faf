"""Where every run function gets its model: a checkpoint file, or an MLflow run's saved checkpoint.

The one place the GAN core (``ganlab.gan``) meets the tracking store: the run id is resolved to a local file
through MLflow, then read as data (``torch.load(weights_only=True)``) by ``ganlab.gan.checkpoint``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ganlab.device import pick_device
from ganlab.errors import CheckpointError
from ganlab.gan.checkpoint import load_checkpoint
from ganlab.gan.loop import TrainingState, restore_state
from ganlab.metrics.distribution import Evaluator
from ganlab.tracking import schema
from ganlab.tracking.store import RunContext, download_artifact, source_tags


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


@dataclass
class OpenedSource:
    """A run's starting point: the source's model, a scratch folder, and its dataset's evaluator (built on first
    use: bad input is found before the classifier is loaded or trained)."""

    source: str
    state: TrainingState
    workdir: Path
    ctx: RunContext
    given_evaluator: Evaluator | None = None

    @cached_property
    def evaluator(self) -> Evaluator:
        cfg = self.state.config
        return self.given_evaluator or Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=self.ctx.data_dir,
                                                             progress=self.ctx.progress)

    @property
    def tags(self) -> dict[str, str]:
        """Where the model came from (ganlab_run adds the run context's own tags)."""
        return source_tags(self.source)


@contextmanager
def opened_source(source: str, ctx: RunContext, *, device: str = "auto", with_optimizers: bool = False,
                  evaluator: Evaluator | None = None, what: str = "run") -> Iterator[OpenedSource]:
    """The one opening of every run function that starts from a model (prune, evaluate, compress): the checkpoint
    of a run id or a file read into a TrainingState inside a scratch folder that is gone afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"ganlab-{what}-") as tmp:
        state = state_from_source(source, Path(tmp), device, ctx.uri, with_optimizers=with_optimizers)
        yield OpenedSource(source, state, Path(tmp), ctx, evaluator)
