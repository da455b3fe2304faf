"""ganlab's MLflow contract in one place: tag and artifact names, each metric's direction, label and penalty, and
the one query for a sweep's child runs. No torch and no mlflow import here: the core, sweeps and analysis all
read it (docs/mlflow.md is the same contract in words).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- tags: every key a ganlab run carries (tests/test_schema.py fails on any of these written anywhere else)
KIND = "ganlab.kind"  # train | prune | evaluate | compress | sweep
STATUS = "ganlab.status"  # ok | collapsed | diverged
SOURCE_RUN = "ganlab.source_run_id"  # the run(s) a prune/evaluate/compress run or a sweep read its model from
SOURCE_CHECKPOINT = "ganlab.source_checkpoint"  # ... or the checkpoint file
PARENT_RUN = "mlflow.parentRunId"  # a trial's sweep (MLflow's own key)
TRIAL_ID = "ganlab.trial_id"  # the Tune trial that wrote a child run
NODE_ID = "ganlab.node_id"  # the Ray node it ran on
GPU_MEMORY_SHARE = "ganlab.gpu_memory_share"  # the fraction of a GPU's memory a trial was given
GRID_POINT = "ganlab.grid_point"  # "<point>/<source>" of a grid's trial ("<point>@<amount>/<source>": a frontier's)
REPEAT_OF = "ganlab.repeat_of"  # a repeat's best trial
REPEAT_RUN_IDS = "ganlab.repeat_run_ids"  # on a sweep: its repeats
BEST_RUN = "ganlab.best_run_id"  # on a sweep: its best trial
BEST_VERDICT = "ganlab.best_verdict"  # on a pruning sweep: the registered point's verdict
BEST_POINT = "ganlab.best_point"  # ... and its grid point
REGISTERED_MODEL = "ganlab.registered_model"  # ... and its Model Registry URI
REGISTERED_VERSION = "ganlab.registered_version"  # ... and its version
STOPPED_EARLY = "ganlab.stopped_early"  # why training ended before its epoch cap
RESUMED_FROM = "ganlab.resumed_from"  # ganlab train --resume: the run or file
RESUMED_EPOCH = "ganlab.resumed_epoch"  # ... and the epoch it continued from
FINETUNE_IMAGES = "ganlab.finetune_images"  # on a sweep: the fine-tuning images its trials shared
VERSION = "ganlab.version"  # the ganlab that wrote the run
FAILURE = "ganlab.failure"  # why a run ended FAILED, when its model could not be scored (ganlab.errors.ModelFailure)
TAGS = (KIND, STATUS, SOURCE_RUN, SOURCE_CHECKPOINT, PARENT_RUN, TRIAL_ID, NODE_ID, GPU_MEMORY_SHARE, GRID_POINT,
        REPEAT_OF, REPEAT_RUN_IDS, BEST_RUN, BEST_VERDICT, BEST_POINT, REGISTERED_MODEL, REGISTERED_VERSION,
        STOPPED_EARLY, RESUMED_FROM, RESUMED_EPOCH, FINETUNE_IMAGES, VERSION, FAILURE)


def column(tag: str) -> str:
    """The column a tag becomes in analysis's flat frames: ``ganlab.status`` -> ``ganlab_status``."""
    return "parent_run_id" if tag == PARENT_RUN else tag.replace(".", "_")


def tag_filter(tag: str, value: str) -> str:
    """The MLflow filter clause ``tags.`<tag>` = '<value>'``."""
    return f"tags.`{tag}` = '{value}'"


# --- artifacts: every file a ganlab run logs
CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints
CHECKPOINT = f"{CHECKPOINTS}/last.pt"  # every run's model
COMPRESSED = "model/generator.glz"  # ganlab compress: the Deep-Compression file
SAMPLES = "samples"  # the folder of a run's images: every picture below, and each training epoch's
GENERATED = "samples/generated.png"  # ganlab evaluate: 64 images
DECOMPRESSED = "samples/decompressed.png"  # ganlab compress: 64 images of the decompressed generator
BEFORE_AFTER = "samples/before_after.png"  # ganlab prune: 64 images of the dense and the pruned generator
STRIP_DENSE = "samples/strip_dense.png"  # 8 images of the dense generator (the report's strips)
STRIP_PRUNED = "samples/strip_pruned.png"  # ... and of the pruned one, on the same noise
SPEC = "spec.yaml"  # on a sweep: its spec, as ganlab sweep resume reads it back
BEST_CONFIG = "best_config.json"  # on a training sweep: its best trial's settings
VERDICTS = "verdicts.csv"  # on a pruning sweep: one row per grid point
TRIALS_CHART = "trials_sparsity_vs_fcd_ratio.png"  # ... and its trials' sparsity against FCD ratio
FRONTIERS = "frontiers.json"  # on a frontier search: each family's frontier, bracket, status and judged steps
RECIPE_IMPORTANCE = "recipe_importance.json"  # on a recipe search: how much each searched setting mattered
ANALYSIS = "analysis"  # the folder ganlab analyze logs its report into, on the sweep's run
ARTIFACTS = (CHECKPOINT, COMPRESSED, GENERATED, DECOMPRESSED, BEFORE_AFTER, STRIP_DENSE, STRIP_PRUNED, SPEC,
             BEST_CONFIG, VERDICTS, TRIALS_CHART, FRONTIERS, RECIPE_IMPORTANCE)


def rewind_checkpoint(epoch: int) -> str:
    """The weights after epoch ``epoch`` kept for lottery-ticket rewinding (0: the initial weights)."""
    return f"{CHECKPOINTS}/rewind_epoch_{epoch:03d}.pt"


def epoch_samples(epoch: int) -> str:
    return f"samples/epoch_{epoch:03d}.png"


def sparsity_table(net: str, ext: str = "csv") -> str:
    return f"sparsity/{net}.{ext}"


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
# logged per evaluation draw as <name>_draw (fcd_inf: FCD∞, the figure the verdict reads when a run has it)
DRAW_METRICS = ("fcd", "dense_fcd", "fcd_inf", "dense_fcd_inf", "coverage", "dense_coverage")


# --- queries
def child_filter(parent_run_id: str, where: str | None = None) -> str:
    """The MLflow filter string of a sweep's child runs (its trials), and ``where`` besides."""
    return tag_filter(PARENT_RUN, parent_run_id) + (f" and {where}" if where else "")


PAGE_SIZE = 1000  # runs per search request: what an MLflow server answers at most


def all_runs(client, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None) -> list:
    """Every run the search matches, page after page (MlflowClient.search_runs' page tokens): a sweep of 10,000
    trials has 10,000 children, and a single request returns at most one page of them."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=PAGE_SIZE, order_by=order_by,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token or not len(page):
            return runs


def child_runs(client, experiment_id: str, parent_run_id: str, where: str | None = None) -> list:
    """Every child run of sweep ``parent_run_id`` (all pages), with the filter ``where``."""
    return all_runs(client, [experiment_id], child_filter(parent_run_id, where))


# --- the MLflow UI's view of a ganlab experiment
# MLflow 3's runs page restores a "shared view" from the experiment tag ``mlflow.sharedViewState.<key>`` when its URL
# carries ``?viewStateShareKey=<key>`` (the UI's own Share button writes the same tag). ganlab writes one per
# experiment and its links open it: the comparison's columns and charts instead of MLflow's empty defaults.
SHARED_VIEW_KEY = "ganlab-comparison"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARED_VIEW_KEY}"
VIEW_PARAMS = ("method", "s", "q", "ratio", "recovery", "finetune_epochs", "distill_out", "schedule",
               "lr_d", "lr_g", "dataset")
VIEW_METRICS = ("sparsity_generator", "fcd", "fcd_ratio", "dense_fcd", "coverage", "size_sparse_bytes_generator")
VIEW_TAGS = (KIND, SOURCE_RUN, STATUS)


def comparison_view() -> dict:
    """The runs page state of ganlab's shared view (MLflow's ExperimentPage search facets + UI state): the
    parameters and metrics that compare trials as columns, runs ordered by FCD, and charts of sparsity against
    FCD, FCD ratio against sparsity, and the parallel coordinates of the grid's knobs against both."""
    columns = ([f"attributes.`{name}`" for name in ("Source", "Models")] + [f"params.`{p}`" for p in VIEW_PARAMS]
               + [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"tags.`{t}`" for t in VIEW_TAGS])
    section = "ganlab-comparison"

    def scatter(uuid: str, x: str, y: str) -> dict:
        return {"uuid": uuid, "type": "SCATTER", "runsCountToCompare": 100, "metricSectionId": section,
                "deleted": False, "isGenerated": False,
                "xaxis": {"key": x, "type": "METRIC"}, "yaxis": {"key": y, "type": "METRIC"}}

    charts = [scatter("ganlab-sparsity-fcd", "sparsity_generator", "fcd"),
              scatter("ganlab-sparsity-ratio", "sparsity_generator", "fcd_ratio"),
              {"uuid": "ganlab-parallel", "type": "PARALLEL", "runsCountToCompare": 100, "metricSectionId": section,
               "deleted": False, "isGenerated": False, "selectedParams": ["method", "recovery", "finetune_epochs"],
               "selectedMetrics": ["sparsity_generator", "fcd_ratio"]}]
    return {"orderByKey": "metrics.`fcd`", "orderByAsc": True, "searchFilter": "", "startTime": "ALL",
            "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": columns, "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": False,
            "compareRunCharts": charts,
            "compareRunSections": [{"uuid": section, "name": "ganlab: sparsity against image quality",
                                    "display": True, "isReordered": False, "deleted": False, "isGenerated": False}]}


def comparison_view_tag() -> str:
    """The value of the experiment tag that holds ganlab's shared view, as MLflow's UI writes it: the state's
    JSON, zlib-deflated and base64-encoded behind ``deflate;`` (its Share button's format; tags hold 8,000
    characters at most on some stores)."""
    import base64
    import json
    import zlib

    return "deflate;" + base64.b64encode(zlib.compress(json.dumps(comparison_view()).encode())).decode()


# --- this contract as docs/mlflow.md shows it
DOC_BEGIN, DOC_END = "<!-- schema: begin (python -m ganlab.tracking.schema) -->", "<!-- schema: end -->"


def names_table() -> str:
    """A markdown table of every tag and artifact name with the comment beside its definition here: the section
    of docs/mlflow.md between DOC_BEGIN and DOC_END is this text (a test keeps them equal)."""
    import ast
    from pathlib import Path

    source = Path(__file__).read_text()
    comments = {}
    for line in source.splitlines():
        name, _, rest = line.partition(" = ")
        if name.isidentifier() and name.isupper() and "#" in rest:
            comments[name] = rest.split("#", 1)[1].strip()
    rows = ["| kind | constant | name | what |", "| --- | --- | --- | --- |"]
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            value = globals().get(name)
            kind = "tag" if value in TAGS else "artifact" if value in ARTIFACTS or name == "CHECKPOINTS" else None
            if kind:
                what = comments.get(name, "").replace("|", "\\|")
                rows.append(f"| {kind} | `{name}` | `{value}` | {what} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(DOC_BEGIN, names_table(), DOC_END, sep="\n")
