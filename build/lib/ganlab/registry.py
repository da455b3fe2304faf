"""A generator as an MLflow Model, registered under an alias.

Logged with ``mlflow.pytorch.log_model`` in MLflow's ``pt2`` format (``torch.export``: a traced
graph, so loading it runs no pickled code), with a signature (noise ``(N, nz, 1, 1)`` float32 in,
images ``(N, nc, H, W)`` in [-1, 1] out) and an input example, then registered in the Model
Registry with an alias, so ``mlflow.pyfunc.load_model("models:/NAME@best").predict(noise)`` gives
images anywhere MLflow and torch are installed, without ganlab.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ganlab.tracking import mlflow_client

MODEL_NAME = "generator"  # the model's name inside its run (artifact path of the logged model)


def register_generator(source_run_id: str, *, registered_model: str, uri: str, alias: str = "best",
                       log_to_run_id: str | None = None) -> tuple[str, str]:
    """Log the generator of ``source_run_id`` (its checkpoint) as an MLflow Model in run ``log_to_run_id``
    (default: the source run), register it as ``registered_model`` and point ``alias`` at that version.

    Returns (model URI ``models:/NAME@ALIAS``, registered version).
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    from ganlab.models import evaluation_noise
    from ganlab.train import state_from_source

    with tempfile.TemporaryDirectory(prefix="ganlab-register-") as tmp:
        state = state_from_source(source_run_id, Path(tmp), "cpu", uri, with_optimizers=False)
    generator = state.generator.eval()
    example = evaluation_noise(2, generator.nz, state.config.seed).numpy().astype(np.float32)
    with torch.no_grad():
        images = generator(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, images)  # batch dimension free (-1)
    run_id = log_to_run_id or source_run_id
    client = mlflow_client(uri)  # this store only: mlflow's global tracking URI is left alone
    with tempfile.TemporaryDirectory(prefix="ganlab-model-") as tmp:
        path = Path(tmp) / MODEL_NAME
        mlflow.pytorch.save_model(
            generator, str(path), signature=signature, input_example=example, serialization_format="pt2",
            # the pt2 graph needs torch alone; inferring requirements would import and probe ganlab
            pip_requirements=[f"torch>={torch.__version__.split('+')[0].rsplit('.', 1)[0]}"])
        client.log_artifacts(run_id, str(path), MODEL_NAME)
    try:
        client.create_registered_model(registered_model, description="ganlab: a pruned DCGAN generator; "
                                       "predict(noise of shape (N, 100, 1, 1), float32) -> images in [-1, 1]")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_NAME}"
    version = client.create_model_version(registered_model, source=source, run_id=run_id)
    client.set_registered_model_alias(registered_model, alias, version.version)
    return f"models:/{registered_model}@{alias}", str(version.version)
