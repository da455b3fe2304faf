"""``ganlab prune`` as a function (the pruning sweep's trials call it too).

A prune run: load a trained checkpoint -> prune G, D or both -> optionally fine-tune with the masks
held (the shared training loop), iteratively if asked -> fold the masks in -> re-estimate the
generator's BatchNorm statistics (unless --no-bn-recalibrate) -> log the sparsity
tables, UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage/class_kl,
dense and sparse sizes, a before/after grid and the pruned checkpoint.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from ganlab.channel_pruning import LATENCY_BATCH, costs
from ganlab.checkpoint import load_checkpoint, make_checkpoint, rewind_artifact, save_atomic
from ganlab.data import ImageSet, TensorBatcher, load_images
from ganlab.distribution_quality import Evaluator
from ganlab.errors import ConfigError, RunNotFoundError
from ganlab.images import titled_row, to_pil_grid
from ganlab.models import evaluation_noise, generate
from ganlab.pairwise_quality import quality_metrics
from ganlab.prune import (
    AMOUNT_KEYS,
    PruneConfig,
    dense_size_bytes,
    make_permanent,
    prune_model,
    recalibrate_batchnorm,
    sparse_size_bytes,
    sparsity_table,
    total_sparsity,
)
from ganlab.tracking import RunLogger, RunResult, download_artifact, ganlab_run, source_tags
from ganlab.train import TrainingState, state_from_source, train_gan


def prune_run(source: str, pcfg: PruneConfig, *, experiment: str | None = None, uri: str | None = None,
              parent_run_id: str | None = None, evaluator: Evaluator | None = None,
              train_set: ImageSet | None = None, data_dir: str | None = None, device: str = "auto",
              progress: bool = True, tags: dict | None = None, run_name: str | None = None) -> RunResult:
    """Prune the model of ``source`` (run id or checkpoint path) as ``pcfg`` says; returns the run and its metrics.

    ``train_set`` (the source's training images) is only read when fine-tuning; a sweep loads it
    once for all its trials, the CLI lets this function load it from ``data_dir``.
    """
    pcfg.validate()
    with tempfile.TemporaryDirectory(prefix="ganlab-prune-") as tmp:
        workdir = Path(tmp)
        state = state_from_source(source, workdir, device, uri, with_optimizers=False)
        cfg = state.config
        if pcfg.finetune_epochs and train_set is None:
            train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=data_dir,
                                    subset_seed=cfg.seed)
        evaluator = evaluator or Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=data_dir,
                                                       progress=progress)
        rewind = _rewind_weights(source, pcfg.rewind_epoch, state, workdir, uri) \
            if pcfg.rewind_epoch is not None else None
        dense_g, dense_d = copy.deepcopy(state.generator).eval(), copy.deepcopy(state.discriminator).eval()
        params = {**pcfg.to_params(), "dataset": cfg.dataset, "image_size": cfg.image_size}
        all_tags = {**source_tags(source), "dataset": cfg.dataset, **(tags or {})}
        name = run_name or f"prune-{pcfg.method}-{pcfg.amount:g}"
        with ganlab_run("prune", experiment=experiment, uri=uri, params=params, tags=all_tags,
                        parent_run_id=parent_run_id, run_name=name) as logger:
            if pcfg.finetune_epochs:
                logger.log_dataset(**train_set.describe(), context="finetune")
            _prune_and_finetune(state, pcfg, train_set, logger, progress, rewind)
            make_permanent(state.generator)
            make_permanent(state.discriminator)
            if pcfg.bn_recalibrate and pcfg.target != "discriminator":
                recalibrate_batchnorm(state.generator, cfg.seed, cfg.batch_size)
            metrics = _log_results(state, {"generator": dense_g, "discriminator": dense_d}, pcfg, evaluator,
                                   logger, workdir)
            return RunResult(logger.run_id, metrics)


def _targets(state: TrainingState, target: str) -> dict[str, nn.Module]:
    nets = {"generator": state.generator, "discriminator": state.discriminator}
    return nets if target == "both" else {target: nets[target]}


def _rewind_weights(source: str, epoch: int, state: TrainingState, workdir: Path, uri: str | None) -> dict:
    """The source run's epoch-``epoch`` checkpoint (``train --rewind-epoch``); ConfigError, before any run
    is created, when the run did not train that long or did not keep those weights."""
    trained, kept = state.epoch, state.config.rewind_epoch
    if epoch > trained:
        raise ConfigError(f"rewind_epoch={epoch} is beyond the source's {trained} trained epoch(s)")
    local = Path(source)
    try:
        if local.exists():  # a checkpoint file: the rewind file lies beside it
            path = local.with_name(Path(rewind_artifact(epoch)).name)
            if not path.is_file():
                raise RunNotFoundError(str(path))
        else:
            path = download_artifact(source, rewind_artifact(epoch), workdir / "rewind", uri)
    except RunNotFoundError:
        have = f"it kept epoch {kept}" if kept is not None else "it kept none"
        raise ConfigError(f"rewind_epoch={epoch}: the source has no weights of epoch {epoch} ({have}); train it with "
                          f"--rewind-epoch {epoch}") from None
    return load_checkpoint(path)


def _rewind(state: TrainingState, ckpt: dict) -> None:
    """Both networks back to the checkpoint's weights, buffers included; pruning masks kept (weight_orig is
    the weight the mask multiplies)."""
    for name in ("generator", "discriminator"):
        net, src = getattr(state, name), ckpt[name]
        current = net.state_dict()
        net.load_state_dict({k: v if k.endswith("_mask") else src[k.removesuffix("_orig")]
                             for k, v in current.items()})


def _prune_and_finetune(state: TrainingState, pcfg: PruneConfig, train_set: ImageSet | None, logger: RunLogger,
                        progress: bool, rewind: dict | None = None) -> None:
    nets = _targets(state, pcfg.target).values()
    batcher = (TensorBatcher(train_set.images, state.config.batch_size, state.device, state.config.seed)
               if pcfg.finetune_epochs else None)
    for step in range(1, pcfg.iterative_steps + 1):
        # iterative magnitude pruning: reach amount * step / steps, fine-tune, repeat
        amount = pcfg.amount * step / pcfg.iterative_steps
        for net in nets:
            prune_model(net, pcfg.method, amount)
        if rewind is not None:  # lottery ticket: the surviving weights restart from epoch E, then retrain
            _rewind(state, rewind)
        if pcfg.finetune_epochs:
            state.make_optimizers()  # over weight_orig: the masks hold pruned weights at zero
            for report in train_gan(state, batcher, state.epoch + pcfg.finetune_epochs, progress=progress):
                logger.log_steps(report.steps)
                logger.log_metrics({"finetune_" + k: v for k, v in report.metrics.items()}, step=report.epoch)


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
                 logger: RunLogger, workdir: Path) -> dict[str, float]:
    g, d = state.generator, state.discriminator
    pruned = {"generator": g, "discriminator": d}
    targets = list(_targets(state, pcfg.target))
    metrics: dict[str, float] = {
        "sparsity_generator": total_sparsity(g, dense=(dense["generator"],)),
        "sparsity_discriminator": total_sparsity(d, dense=(dense["discriminator"],)),
        "sparsity": total_sparsity(*(pruned[t] for t in targets), dense=tuple(dense[t] for t in targets)),
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
            logger.log_text(table.to_csv(index=False), f"sparsity/{name}.csv")
            logger.log_text(table.to_markdown(index=False), f"sparsity/{name}.md")
    noise = evaluation_noise(pcfg.samples, g.nz, state.config.seed).to(state.device)
    before, after = generate(dense["generator"], noise).cpu(), generate(g, noise).cpu()
    metrics.update(quality_metrics(before, after))
    metrics.update(evaluator.evaluate_images(after))
    metrics.update({f"dense_{k}": v for k, v in evaluator.evaluate_images(before).items()})
    logger.log_metrics(metrics, step=0)
    label = f"{pcfg.method} {AMOUNT_KEYS[pcfg.method]}={pcfg.amount:g}"
    logger.log_image(titled_row([("dense generator", to_pil_grid(before[:64])),
                                 (f"pruned ({label}, sparsity {metrics['sparsity_generator']:.3f})",
                                  to_pil_grid(after[:64]))]), "samples/before_after.png")
    # one row each, the same 8 noise vectors: analysis stacks them into "different degrees of pruning"
    logger.log_image(to_pil_grid(before[:8], nrow=8), "samples/strip_dense.png")
    logger.log_image(to_pil_grid(after[:8], nrow=8), "samples/strip_pruned.png")
    path = save_atomic(make_checkpoint(state, pruned=True), workdir / "last.pt")
    logger.log_file(path, "checkpoints")
    return metrics
