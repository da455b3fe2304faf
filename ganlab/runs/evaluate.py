"""``ganlab evaluate`` as a function: score a model's generator and log one MLflow run."""

from __future__ import annotations

from ganlab.config import MAX_SAMPLES, MIN_EVAL_SAMPLES, check_range
from ganlab.gan.data import to_model_range
from ganlab.gan.images import to_pil_grid
from ganlab.gan.models import evaluation_noise, generate
from ganlab.metrics.distribution import Evaluator, inception_fid
from ganlab.runs.source import opened_source
from ganlab.tracking import schema
from ganlab.tracking.store import RunContext, RunResult, ganlab_run


def evaluate_run(source: str, ctx: RunContext | None = None, *, samples: int = 1000, device: str = "auto",
                 inception: bool = False, evaluator: Evaluator | None = None) -> RunResult:
    """Log fcd/kid/coverage/class_kl (and optionally Inception FID) of the model of ``source``."""
    check_range("samples", samples, low=MIN_EVAL_SAMPLES, high=MAX_SAMPLES, integer=True)
    ctx = ctx or RunContext.here()
    with opened_source(source, ctx, device=device, evaluator=evaluator, what="eval") as src:
        state, cfg, evaluator = src.state, src.state.config, src.evaluator
        fake = generate(state.generator, evaluation_noise(samples, cfg.nz, cfg.seed).to(state.device)).cpu()
        metrics = evaluator.evaluate_images(fake)
        if inception:
            metrics["inception_fid"] = inception_fid(to_model_range(evaluator.real_images), fake)
        metrics["classifier_test_accuracy"] = evaluator.test_accuracy
        params = {"samples": samples, "dataset": cfg.dataset, "image_size": cfg.image_size}
        with ganlab_run("evaluate", ctx, params=params, tags=src.tags) as logger:
            logger.log_metrics(metrics)
            logger.log_image(to_pil_grid(fake[:64]), schema.GENERATED)
            return RunResult(logger.run_id, metrics)
