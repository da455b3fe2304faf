"""ganlab's MLflow contract in one place: tag and artifact names, each metric's direction, label and penalty, and
the one query for a sweep's child runs. No torch and no mlflow import here: the core, sweeps and analysis all
read it (docs/mlflow.md is the same contract in words).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- tags
KIND = "ganlab.kind"  # train | prune | evaluate | compress | sweep
STATUS = "ganlab.status"  # ok | collapsed | diverged
SOURCE_RUN = "ganlab.source_run_id"  # the run a prune/evaluate/compress run read its model from
PARENT_RUN = "mlflow.parentRunId"  # a trial's sweep
TRIAL_ID = "ganlab.trial_id"
GRID_POINT = "ganlab.grid_point"
REPEAT_OF = "ganlab.repeat_of"
BEST_RUN = "ganlab.best_run_id"
STOPPED_EARLY = "ganlab.stopped_early"
FINETUNE_IMAGES = "ganlab.finetune_images"

# --- artifacts
CHECKPOINT = "checkpoints/last.pt"  # every run's model


def rewind_checkpoint(epoch: int) -> str:
    """The weights after epoch ``epoch`` kept for lottery-ticket rewinding (0: the initial weights)."""
    return f"checkpoints/rewind_epoch_{epoch:03d}.pt"


def epoch_samples(epoch: int) -> str:
    return f"samples/epoch_{epoch:03d}.png"


def sparsity_table(net: str, ext: str = "csv") -> str:
    return f"sparsity/{net}.{ext}"


BEFORE_AFTER = "samples/before_after.png"
STRIP_DENSE = "samples/strip_dense.png"  # 8 images of the dense generator, the same noise as:
STRIP_PRUNED = "samples/strip_pruned.png"


# --- metrics
@dataclass(frozen=True)
class Metric:
    higher_is_better: bool  # as torchmetrics says it
    label: str  # an axis label
    penalty: float | None = None  # what a sweep's trial that never produced it reports (objectives only)


METRICS: dict[str, Metric] = {
    "fcd": Metric(False, "FCD (Fréchet distance, classifier features)", 1e9),
    "kid": Metric(False, "KID", 1e9),
    "coverage": Metric(True, "classes covered (of 10)", 0.0),
    "class_kl": Metric(False, "class KL from uniform", math.log(10)),
    "ssim_mean": Metric(True, "SSIM vs dense (mean)"),
    "msssim_mean": Metric(True, "MS-SSIM vs dense (mean)"),
    "uqi_mean": Metric(True, "UQI vs dense (mean)"),
}
LOWER_IS_BETTER = {name: not m.higher_is_better for name, m in METRICS.items()}
LABELS = {name: m.label for name, m in METRICS.items()}
PENALTY = {name: m.penalty for name, m in METRICS.items() if m.penalty is not None}  # a training sweep's objectives
OBJECTIVES = {name: "max" if METRICS[name].higher_is_better else "min" for name in PENALTY}
DRAW_METRICS = ("fcd", "dense_fcd", "coverage", "dense_coverage")  # logged per evaluation draw as <name>_draw


# --- queries
def child_filter(parent_run_id: str, where: str | None = None) -> str:
    """The MLflow filter string of a sweep's child runs (its trials), and ``where`` besides."""
    return f"tags.`{PARENT_RUN}` = '{parent_run_id}'" + (f" and {where}" if where else "")


def child_runs(client, experiment_id: str, parent_run_id: str, where: str | None = None, max_results: int = 10000):
    """The child runs of sweep ``parent_run_id`` (MlflowClient.search_runs), with the filter ``where``."""
    return client.search_runs([experiment_id], child_filter(parent_run_id, where), max_results=max_results)
