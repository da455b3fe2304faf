"""``ganlab prune`` as a function (the pruning sweep's trials call it too).

A prune run: load a trained checkpoint -> prune G, D or both -> optionally fine-tune with the masks
held (the shared training loop), iteratively if asked -> fold the masks in -> re-estimate the
generator's BatchNorm statistics (unless --no-bn-recalibrate) -> log the sparsity
tables, UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage/class_kl,
dense and sparse sizes, a before/after grid and the pruned checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganlab.errors import ConfigError, RunNotFoundError
from ganlab.gan.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.gan.data import ImageSet, TensorBatcher, load_images
from ganlab.gan.images import titled_row, to_pil_grid
from ganlab.gan.loop import TrainingState
from ganlab.gan.models import evaluation_noise, generate
from ganlab.metrics.distribution import Evaluator
from ganlab.metrics.pairwise import quality_metrics
from ganlab.pruning.channel import LATENCY_BATCH, costs
from ganlab.pruning.magnitude import (
    AMOUNT_KEYS,
    PruneConfig,
    dense_size_bytes,
    make_permanent,
    recalibrate_batchnorm,
    sparse_size_bytes,
    sparsity_table,
    total_sparsity,
)
from ganlab.runs.finetune import Recovery, targets
from ganlab.runs.source import opened_source
from ganlab.tracking import schema
from ganlab.tracking.store import RunContext, RunLogger, RunResult, download_artifact, ganlab_run


@dataclass(frozen=True)
class PruneInputs:
    """What a caller that runs many prune runs (a sweep) hands each one, and how it follows them: the scoring
    classifier (default: the dataset's), the images fine-tuning reads (default: the source's own, loaded from
    ``ctx.data_dir``), the device, and ``on_pass(pass, scores)`` after each fine-tuning pass (a Tune report: ASHA
    stops a hopeless recipe on its per-pass FCD)."""

    evaluator: Evaluator | None = None
    train_set: ImageSet | None = None
    device: str = "auto"
    on_pass: Callable[[int, dict[str, float]], None] | None = None


def prune_run(source: str, pcfg: PruneConfig, ctx: RunContext | None = None,
              inputs: PruneInputs = PruneInputs()) -> RunResult:
    """Prune the model of ``source`` (run id or checkpoint path) as ``pcfg`` says; returns the run and its metrics.

    The images are only read when fine-tuning or training sparse; sparse training always trains on the images the
    dense source trained on (its --limit subset, or the whole split). The run is named ``ctx.run_name``, else by
    ``run_label``.
    """
    ctx = ctx or RunContext.here()
    with opened_source(source, ctx, device=inputs.device, evaluator=inputs.evaluator, what="prune",
                       with_optimizers=pcfg.optimizer_state == "keep") as src:
        state, cfg = src.state, src.state.config
        images = _images(pcfg, cfg, inputs.train_set, ctx.data_dir)
        batcher = TensorBatcher(images.images, cfg.batch_size, state.device, cfg.seed) if images is not None else None
        if pcfg.finetune_epochs:
            pcfg.check_budget(len(batcher))  # bad input before any run exists
        rewound_to = _rewind_weights(source, pcfg.rewind_epoch, state, src.workdir, ctx.uri) \
            if pcfg.rewind_epoch is not None else None
        dense_g, dense_d = copy.deepcopy(state.generator).eval(), copy.deepcopy(state.discriminator).eval()
        params = {**pcfg.to_params(), "dataset": cfg.dataset, "image_size": cfg.image_size}
        with ganlab_run("prune", ctx, params=params, tags={"dataset": cfg.dataset, **src.tags},
                        run_name=run_label(pcfg, source)) as logger:
            if images is not None:
                logger.log_dataset(**images.describe(), context="sparse_train" if pcfg.method == "sparse"
                                   else "finetune")
            recovery = Recovery(state, pcfg, batcher, logger, dense_g, src.evaluator, ctx.progress, inputs.on_pass)
            if pcfg.method == "sparse":
                state = recovery.train_sparse()
            else:
                recovery.prune_and_finetune(rewound_to)
            make_permanent(state.generator)
            make_permanent(state.discriminator)
            if pcfg.bn_recalibrate and pcfg.target != "discriminator":
                # the dense reference is scored the same way: its statistics re-estimated on the same noise
                recalibrate_batchnorm(state.generator, cfg.seed, cfg.batch_size)
                recalibrate_batchnorm(dense_g, cfg.seed, cfg.batch_size)
            metrics, draws = _log_results(state, {"generator": dense_g, "discriminator": dense_d}, pcfg,
                                          src.evaluator, logger, src.workdir)
            return RunResult(logger.run_id, metrics, {k: [float(v) for v in draws[k]] for k in draws})


def _images(pcfg: PruneConfig, cfg, train_set: ImageSet | None, data_dir: str | None) -> ImageSet | None:
    """The images a prune run trains on: none without training; fine-tuning reads ``train_set`` when given; sparse
    training reads the dense source's own (loaded here unless ``train_set`` is exactly them)."""
    if not (pcfg.finetune_epochs or pcfg.method == "sparse"):
        return None
    if train_set is not None and (pcfg.method != "sparse" or _the_source_images(train_set, cfg)):
        return train_set
    return load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=data_dir, subset_seed=cfg.seed)


def _the_source_images(images: ImageSet, cfg) -> bool:
    """Whether ``images`` are the ones a source trained with ``cfg`` saw (the same --limit subset, or the split)."""
    if cfg.limit is None:
        return images.subset_seed is None
    return len(images) == cfg.limit and images.subset_seed == cfg.seed


def run_label(pcfg: PruneConfig, source: str) -> str:
    """A run name that tells trials apart in the runs table: ``q=80 ft1 distill λ=100 · src 5f73``."""
    if pcfg.control:
        what = "dense control" + recipe_label(pcfg)
    else:
        what = f"{AMOUNT_KEYS[pcfg.method]}={pcfg.amount:g}" + (" channel" if pcfg.method == "channel" else "")
        what += recipe_label(pcfg)
    src = Path(source).stem[:8] if Path(source).suffix else source[:4]
    return f"{what} · src {src}"


def recipe_label(pcfg: PruneConfig) -> str:
    """Everything of a run's name but its amount and source: `` ft1 distill λ=100 cosine`` (a frontier's family)."""
    what = f" {pcfg.mask_update}" if pcfg.method == "sparse" else ""
    what += " erk" if pcfg.density == "erk" else ""
    if pcfg.finetune_epochs:
        what += f" ft{pcfg.finetune_epochs}"
        what += " agp" if pcfg.schedule == "agp" else ""
        what += f" distill λ={pcfg.distill_out:g}" if pcfg.distill_out else ""
        what += f" feat λ={pcfg.distill_feat:g}" if pcfg.distill_feat else ""
        what += f" lr×{pcfg.lr_scale:g}" if pcfg.lr_scale != 1.0 else ""
        what += f" adv×{pcfg.adv_weight:g}" if pcfg.adv_weight != 1.0 else ""
        what += f" D lr×{pcfg.d_lr_scale:g}" if pcfg.d_lr_scale != 1.0 else ""
        what += " cosine" if pcfg.lr_schedule == "cosine" else ""
        what += f" rewind{pcfg.rewind_epoch}" if pcfg.rewind_epoch is not None else ""
        what += f" x{pcfg.iterative_steps}" if pcfg.iterative_steps > 1 else ""
    what += " both" if pcfg.target == "both" else " D" if pcfg.target == "discriminator" else ""
    return what


def _rewind_weights(source: str, epoch: int, state: TrainingState, workdir: Path, uri: str | None) -> dict:
    """The source run's epoch-``epoch`` checkpoint (``train --rewind-epoch``); ConfigError, before any run
    is created, when the run did not train that long or did not keep those weights."""
    trained, kept = state.epoch, state.config.rewind_epoch
    if epoch > trained:
        raise ConfigError(f"rewind_epoch={epoch} is beyond the source's {trained} trained epoch(s)")
    local = Path(source)
    try:
        if local.exists():  # a checkpoint file: the rewind file lies beside it
            path = local.with_name(Path(schema.rewind_checkpoint(epoch)).name)
            if not path.is_file():
                raise RunNotFoundError(str(path))
        else:
            path = download_artifact(source, schema.rewind_checkpoint(epoch), workdir / "rewind", uri)
    except RunNotFoundError:
        have = f"it kept epoch {kept}" if kept is not None else "it kept none"
        raise ConfigError(f"rewind_epoch={epoch}: the source has no weights of epoch {epoch} ({have}); train it with "
                          f"--rewind-epoch {epoch}") from None
    return load_checkpoint(path)


def paired_draws(dense: nn.Module, pruned: nn.Module, evaluator: Evaluator, samples: int, draws: int, seed: int):
    """Both generators scored on the same ``draws`` evaluation-noise draws (paired): the first draw's images
    (dense, pruned) and a table, one row per draw, of fcd/kid/coverage/class_kl and their dense_ twins."""
    import pandas as pd

    device = next(pruned.parameters()).device
    rows, first = [], None
    for k in range(draws):
        noise = evaluation_noise(samples, pruned.nz, seed, draw=k).to(device)
        before, after = generate(dense, noise).cpu(), generate(pruned, noise).cpu()
        first = first or (before, after)
        rows.append({**evaluator.evaluate_images(after),
                     **{f"dense_{name}": v for name, v in evaluator.evaluate_images(before).items()}})
    return first[0], first[1], pd.DataFrame(rows)


def size_metrics(dense: dict[str, nn.Module], pruned: dict[str, nn.Module], target: str,
                 method: str = "percentage") -> dict[str, float]:
    """Dense and pruned bytes of each network, and of the pruned target (both networks for 'both').

    Unstructured pruning is counted in Deep Compression's sparse format; a channel-pruned net is
    stored densely, only smaller.
    """
    metrics: dict[str, float] = {}
    stored = dense_size_bytes if method == "channel" else sparse_size_bytes
    for name in dense:
        metrics[f"size_dense_bytes_{name}"] = dense_size_bytes(dense[name])
        metrics[f"size_sparse_bytes_{name}"] = stored(pruned[name])
    names = list(dense) if target == "both" else [target]
    metrics["size_dense_bytes"] = sum(metrics[f"size_dense_bytes_{n}"] for n in names)
    metrics["size_sparse_bytes"] = sum(metrics[f"size_sparse_bytes_{n}"] for n in names)
    return metrics


def _log_results(state: TrainingState, dense: dict[str, nn.Module], pcfg: PruneConfig, evaluator: Evaluator,
                 logger: RunLogger, workdir: Path):
    """Score and log the pruned networks; returns (metrics, the per-draw table)."""
    g, d = state.generator, state.discriminator
    pruned = {"generator": g, "discriminator": d}
    names = list(targets(state, pcfg.target))
    metrics: dict[str, float] = {
        "sparsity_generator": total_sparsity(g, dense=(dense["generator"],)),
        "sparsity_discriminator": total_sparsity(d, dense=(dense["discriminator"],)),
        "sparsity": total_sparsity(*(pruned[t] for t in names), dense=tuple(dense[t] for t in names)),
        **size_metrics(dense, pruned, pcfg.target, pcfg.method),
    }
    # what the pruned generator costs to run, beside the dense one (latency: this machine, these threads)
    metrics.update({f"{k}_generator": v for k, v in costs(g).items()})
    metrics.update({f"dense_{k}_generator": v for k, v in costs(dense["generator"]).items()})
    logger.log_params({"latency_batch": LATENCY_BATCH, "latency_threads": torch.get_num_threads(),
                       "widths_generator": ",".join(map(str, g.widths))})
    for name, net in pruned.items():
        if name == "generator" or pcfg.target != "generator":
            table = sparsity_table(net, dense[name])
            logger.log_text(table.to_csv(index=False), schema.sparsity_table(name))
            logger.log_text(table.to_markdown(index=False), schema.sparsity_table(name, "md"))
    before, after, draws = paired_draws(dense["generator"], g, evaluator, pcfg.samples, pcfg.eval_draws,
                                        state.config.seed)
    metrics.update(quality_metrics(before, after))
    metrics.update(draws.mean().to_dict())  # fcd, dense_fcd, ...: the means over the draws
    metrics["fcd_ratio"] = metrics["fcd"] / metrics["dense_fcd"]
    metrics["coverage_lost"] = float((draws["coverage"] < draws["dense_coverage"]).any())
    logger.log_metrics(metrics, step=0)
    for k, row in draws.iterrows():  # per draw, step = draw: analysis pairs pruned and dense (or control) draws
        logger.log_metrics({f"{name}_draw": float(v) for name, v in row.items()}, step=int(k))
    label = f"{pcfg.method} {AMOUNT_KEYS[pcfg.method]}={pcfg.amount:g}"
    logger.log_image(titled_row([("dense generator", to_pil_grid(before[:64])),
                                 (f"pruned ({label}, sparsity {metrics['sparsity_generator']:.3f})",
                                  to_pil_grid(after[:64]))]), schema.BEFORE_AFTER)
    # one row each, the same 8 noise vectors: analysis stacks them into "different degrees of pruning"
    logger.log_image(to_pil_grid(before[:8], nrow=8), schema.STRIP_DENSE)
    logger.log_image(to_pil_grid(after[:8], nrow=8), schema.STRIP_PRUNED)
    path = save_atomic(make_checkpoint(state, pruned=True), workdir / "last.pt")
    logger.log_file(path, schema.CHECKPOINTS)
    return metrics, draws
