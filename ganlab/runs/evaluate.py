"""``ganlab evaluate`` as a function: score a model's generator and log one MLflow run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ganlab.config import MAX_SAMPLES, MIN_EVAL_SAMPLES, check_range
from ganlab.gan.data import to_model_range
from ganlab.gan.images import to_pil_grid
from ganlab.gan.models import evaluation_noise, generate
from ganlab.metrics.distribution import Evaluator, inception_fid
from ganlab.runs.source import state_from_source
from ganlab.tracking.store import RunContext, RunResult, ganlab_run, source_tags


def evaluate_run(source: str, ctx: RunContext | None = None, *, samples: int = 1000, device: str = "auto",
                 inception: bool = False, evaluator: Evaluator | None = None) -> RunResult:
    """Log fcd/kid/coverage/class_kl (and optionally Inception FID) of the model of ``source``."""
    check_range("samples", samples, low=MIN_EVAL_SAMPLES, high=MAX_SAMPLES, integer=True)
    ctx = ctx or RunContext.here()
    uri, data_dir, progress = ctx.uri, ctx.data_dir, ctx.progress
    with tempfile.TemporaryDirectory(prefix="ganlab-eval-") as tmp:
        state = state_from_source(source, Path(tmp), device, uri, with_optimizers=False)
        cfg = state.config
        evaluator = evaluator or Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=data_dir,
                                                       progress=progress)
        fake = generate(state.generator, evaluation_noise(samples, cfg.nz, cfg.seed).to(state.device)).cpu()
        metrics = evaluator.evaluate_images(fake)
        if inception:
            metrics["inception_fid"] = inception_fid(to_model_range(evaluator.real_images), fake)
        metrics["classifier_test_accuracy"] = evaluator.test_accuracy
        params = {"samples": samples, "dataset": cfg.dataset, "image_size": cfg.image_size}
        with ganlab_run("evaluate", experiment=ctx.experiment, uri=uri, params=params,
                        tags={**source_tags(source), **ctx.tags}, parent_run_id=ctx.parent_run_id) as logger:
            logger.log_metrics(metrics)
            logger.log_image(to_pil_grid(fake[:64]), "samples/generated.png")
            return RunResult(logger.run_id, metrics)
