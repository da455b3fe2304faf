"""``RunLogger``: everything a ganlab run writes to its MLflow run, through MlflowClient (no global active-run
state, safe in Ray workers): params and metrics in as few requests as MLflow allows, the typed tags of
``ganlab.tracking.schema``, datasets, files, images and text."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ganlab.tracking import schema

_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100

# what a unique-key violation says in sqlite and in PostgreSQL (psycopg), directly or through a server
_LOST_INSERT_RACE = ("UNIQUE constraint failed", "UniqueViolation", "duplicate key value")


class RunLogger:
    """Logs to one MLflow run through MlflowClient (no global active-run state, safe in Ray workers)."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_steps([(step, metrics)])

    def log_steps(self, steps: Iterable[tuple[int, dict[str, float]]]) -> None:
        """Many (step, {name: value}) rows in as few requests as MLflow allows."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for step, row in steps for k, v in row.items()]
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + _MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def set_status(self, status: str) -> None:
        """The model's health: ok | collapsed | diverged (``schema.STATUS``)."""
        self.set_tags({schema.STATUS: status})

    def set_stopped_early(self, reason: str) -> None:
        """Why training ended before its epoch cap (``schema.STOPPED_EARLY``)."""
        self.set_tags({schema.STOPPED_EARLY: reason})

    def log_dataset(self, name: str, digest: str, source: dict[str, Any], profile: dict[str, Any],
                    context: str = "train") -> None:
        """A dataset this run used, as an MLflow dataset input (the runs table's Dataset column).

        ``digest`` identifies the exact images; ``source`` says where they came from and ``profile`` what
        they are (split, image size, count); ``context`` is "train", "finetune" or "eval".
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        dataset = Dataset(name=name, digest=digest, source_type="torchvision", source=json.dumps(source),
                          profile=json.dumps(profile))
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException as exc:
            # MLflow looks a dataset up, then inserts it: trials starting together with the same data race,
            # and the loser's insert breaks the unique key (its whole request rolled back). The dataset
            # exists now, so logging again links this run to it.
            if not any(word in str(exc) for word in _LOST_INSERT_RACE):
                raise
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def log_image(self, image, artifact_path: str) -> None:
        """A PIL image saved as PNG at ``artifact_path`` (e.g. samples/epoch_001.png)."""
        with self._staged(artifact_path) as path:
            image.save(path)

    def log_text(self, text: str, artifact_path: str) -> None:
        with self._staged(artifact_path) as path:
            path.write_text(text)

    @contextmanager
    def _staged(self, artifact_path: str) -> Iterator[Path]:
        directory, _, name = artifact_path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            yield path
            self.log_file(path, directory or None)
