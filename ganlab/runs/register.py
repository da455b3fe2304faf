"""A generator as an MLflow Model, registered under an alias.

Logged as an MLflow 3 model of its run (a LoggedModel: the experiment's Models tab, the run's Models column) in
MLflow's ``pt2`` format (``torch.export``: a traced
graph, so loading it runs no pickled code), with a signature (noise ``(N, nz, 1, 1)`` float32 in,
images ``(N, nc, H, W)`` in [-1, 1] out) and an input example, then registered in the Model
Registry with an alias, so ``mlflow.pyfunc.load_model("models:/NAME@best").predict(noise)`` gives
images anywhere MLflow and torch are installed, without ganlab.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ganlab.tracking.store import mlflow_client

MODEL_NAME = "generator"  # the model's name inside its run (artifact path of the logged model)


def register_generator(source_run_id: str, *, registered_model: str, uri: str, alias: str = "best",
                       log_to_run_id: str | None = None) -> tuple[str, str, str]:
    """Log the generator of ``source_run_id`` (its checkpoint) as an MLflow Model in run ``log_to_run_id``
    (default: the source run), register it as ``registered_model`` and point ``alias`` at that version.

    The steps of ``mlflow.pytorch.log_model`` through this store's client (it would use MLflow's global tracking
    URI and active run): a LoggedModel whose source is the run, its files, READY, the run's output.

    Returns (model URI ``models:/NAME@ALIAS``, registered version, the LoggedModel's id).
    """
    from ganlab.runs.source import state_from_source

    run_id = log_to_run_id or source_run_id
    client = mlflow_client(uri)  # this store only: mlflow's global tracking URI is left alone
    earlier = _version_of(client, registered_model, run_id)
    if earlier is not None:  # registered before (a registration that was stopped and redone): that version again
        # a searched version may not carry its model_id (sqlite store): its source is models:/<model_id>
        version = str(earlier.version)
        model_id = earlier.model_id or str(earlier.source).removeprefix("models:/")
    else:
        with tempfile.TemporaryDirectory(prefix="ganlab-register-") as tmp:
            state = state_from_source(source_run_id, Path(tmp), "cpu", uri, with_optimizers=False)
        model_id = _logged_model(client, run_id, state.generator.eval(), state.config.seed)
        version = _registered_version(client, registered_model, run_id, model_id)
    client.set_registered_model_alias(registered_model, alias, version)
    return f"models:/{registered_model}@{alias}", version, model_id


def _version_of(client, registered_model: str, run_id: str):
    """The version of ``registered_model`` made from run ``run_id``, if there is one: a run's generator is
    registered once per model name."""
    versions = client.search_model_versions(f"name = '{registered_model}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _logged_model(client, run_id: str, generator, seed: int) -> str:
    """The generator as a READY LoggedModel of run ``run_id`` (torch.export's pt2, a signature with a free batch
    dimension, an input example), listed as the run's output; FAILED if its files could not be written."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    from ganlab.gan.models import evaluation_noise

    example = evaluation_noise(2, generator.nz, seed).numpy().astype(np.float32)
    with torch.no_grad():
        images = generator(torch.from_numpy(example)).numpy()
    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        model_type="generator", params={k: v for k, v in run.data.params.items()
                                                                        if k in ("method", "s", "q", "ratio")})
    try:
        with tempfile.TemporaryDirectory(prefix="ganlab-model-") as tmp:
            path = Path(tmp) / MODEL_NAME
            mlflow.pytorch.save_model(
                generator, str(path), signature=infer_signature(example, images), input_example=example,
                serialization_format="pt2", mlflow_model=Model(run_id=run_id, model_id=logged.model_id),
                # the pt2 graph needs torch alone; inferring requirements would import and probe ganlab
                pip_requirements=[f"torch>={torch.__version__.split('+')[0].rsplit('.', 1)[0]}"])
            client.log_model_artifacts(logged.model_id, str(path))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])  # the run's Models column
    return logged.model_id


def _registered_version(client, registered_model: str, run_id: str, model_id: str) -> str:
    """A new version of ``registered_model`` (made if missing) whose source is the LoggedModel."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(registered_model, description="ganlab: a pruned DCGAN generator; "
                                       "predict(noise of shape (N, 100, 1, 1), float32) -> images in [-1, 1]")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(registered_model, source=f"models:/{model_id}", run_id=run_id,
                                          model_id=model_id)
    return str(version.version)
