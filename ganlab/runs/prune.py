"""``ganlab prune`` as a function (the pruning sweep's trials call it too).

A prune run: load a trained checkpoint -> prune G, D or both -> optionally fine-tune with the masks
held (the shared training loop), iteratively if asked -> fold the masks in -> re-estimate the
generator's BatchNorm statistics (unless --no-bn-recalibrate) -> log the sparsity
tables, UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage/class_kl,
dense and sparse sizes, a before/after grid and the pruned checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from ganlab.errors import ConfigError, RunNotFoundError
from ganlab.gan.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.gan.data import ImageSet, TensorBatcher, load_images
from ganlab.gan.images import titled_row, to_pil_grid
from ganlab.gan.loop import Hook, TrainingState, create_state, train_gan
from ganlab.gan.models import evaluation_noise, generate
from ganlab.metrics.distribution import Evaluator
from ganlab.metrics.pairwise import quality_metrics
from ganlab.pruning.channel import LATENCY_BATCH, costs
from ganlab.pruning.magnitude import (
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
from ganlab.pruning.recovery import (
    AdversarialWeight,
    CosineDecay,
    Distillation,
    GradualPruning,
    HoldDiscriminator,
    layer_fractions,
)
from ganlab.runs.source import opened_source
from ganlab.runs.tracking_hooks import Evaluation, StepLogging
from ganlab.runs.train import sparse_hooks
from ganlab.tracking import schema
from ganlab.tracking.store import RunContext, RunLogger, RunResult, download_artifact, ganlab_run


def prune_run(source: str, pcfg: PruneConfig, ctx: RunContext | None = None, *, evaluator: Evaluator | None = None,
              train_set: ImageSet | None = None, device: str = "auto", run_name: str | None = None) -> RunResult:
    """Prune the model of ``source`` (run id or checkpoint path) as ``pcfg`` says; returns the run and its metrics.

    ``train_set`` (the source's training images) is only read when fine-tuning; a sweep loads it
    once for all its trials, the CLI lets this function load it from ``data_dir``.
    """
    ctx = ctx or RunContext.here()
    progress = ctx.progress
    with opened_source(source, ctx, device=device, evaluator=evaluator, what="prune",
                       with_optimizers=pcfg.optimizer_state == "keep") as src:
        state, cfg, workdir = src.state, src.state.config, src.workdir
        trains = pcfg.finetune_epochs or pcfg.method == "sparse"
        if trains and train_set is None:
            train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=ctx.data_dir,
                                    subset_seed=cfg.seed)
        batcher = TensorBatcher(train_set.images, cfg.batch_size, state.device, cfg.seed) if trains else None
        if pcfg.finetune_epochs:
            pcfg.check_budget(len(batcher))  # bad input before any run exists
        evaluator = src.evaluator
        rewind = _rewind_weights(source, pcfg.rewind_epoch, state, workdir, ctx.uri) \
            if pcfg.rewind_epoch is not None else None
        dense_g, dense_d = copy.deepcopy(state.generator).eval(), copy.deepcopy(state.discriminator).eval()
        params = {**pcfg.to_params(), "dataset": cfg.dataset, "image_size": cfg.image_size}
        tags = {"dataset": cfg.dataset, **src.tags}
        with ganlab_run("prune", ctx, params=params, tags=tags, run_name=run_name or run_label(pcfg, source)) as logger:
            if trains:
                logger.log_dataset(**train_set.describe(), context="finetune")
            if pcfg.method == "sparse":
                state = _train_sparse(state, pcfg, batcher, logger, progress)
            else:
                _prune_and_finetune(state, pcfg, batcher, logger, progress, rewind, dense_g, evaluator)
            make_permanent(state.generator)
            make_permanent(state.discriminator)
            if pcfg.bn_recalibrate and pcfg.target != "discriminator":
                # the dense reference is scored the same way: its statistics re-estimated on the same noise
                recalibrate_batchnorm(state.generator, cfg.seed, cfg.batch_size)
                recalibrate_batchnorm(dense_g, cfg.seed, cfg.batch_size)
            metrics = _log_results(state, {"generator": dense_g, "discriminator": dense_d}, pcfg, evaluator,
                                   logger, workdir)
            return RunResult(logger.run_id, metrics)


def run_label(pcfg: PruneConfig, source: str) -> str:
    """A run name that tells trials apart in the runs table: ``q=80 ft1 distill λ=100 · src 5f73``."""
    if pcfg.control:
        what = "dense control"
    else:
        what = f"{AMOUNT_KEYS[pcfg.method]}={pcfg.amount:g}" + (" channel" if pcfg.method == "channel" else "")
        what += f" {pcfg.mask_update}" if pcfg.method == "sparse" else ""
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
    src = Path(source).stem[:8] if Path(source).suffix else source[:4]
    return f"{what} · src {src}"


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


def _rewind(state: TrainingState, ckpt: dict) -> None:
    """Both networks back to the checkpoint's weights, buffers included; pruning masks kept (weight_orig is
    the weight the mask multiplies)."""
    for name in ("generator", "discriminator"):
        net, src = getattr(state, name), ckpt[name]
        current = net.state_dict()
        net.load_state_dict({k: v if k.endswith("_mask") else src[k.removesuffix("_orig")]
                             for k, v in current.items()})


def _prune_and_finetune(state: TrainingState, pcfg: PruneConfig, batcher: TensorBatcher | None, logger: RunLogger,
                        progress: bool, rewind: dict | None, teacher: nn.Module, evaluator: Evaluator) -> None:
    nets = _targets(state, pcfg.target)
    gradual = pcfg.schedule == "agp"
    finals = {name: layer_fractions(net, pcfg.method, pcfg.amount) for name, net in nets.items()} if gradual else {}
    for step in range(1, pcfg.iterative_steps + 1):
        # iterative magnitude pruning: reach amount * step / steps, fine-tune, repeat (agp: pruned while tuning)
        if not gradual:
            for net in nets.values():
                prune_model(net, pcfg.method, pcfg.amount * step / pcfg.iterative_steps)
        if rewind is not None:  # lottery ticket: the surviving weights restart from epoch E, then retrain
            _rewind(state, rewind)
        if pcfg.finetune_epochs:
            if pcfg.optimizer_state == "reset" or step > 1:
                state.make_optimizers()  # over weight_orig: the masks hold pruned weights at zero
            # "keep": the source's Adams go on; pruning re-registered the same Parameters as weight_orig
            for opt, scale in ((state.opt_g, pcfg.lr_scale), (state.opt_d, pcfg.lr_scale * pcfg.d_lr_scale)):
                for group in opt.param_groups:
                    group["lr"] *= scale
            end = state.epoch + pcfg.finetune_epochs
            for _ in train_gan(state, batcher, end, hooks=recovery_hooks(state, pcfg, batcher, logger, teacher,
                                                                         finals, evaluator, end),
                               progress=progress):
                pass


def recovery_hooks(state: TrainingState, pcfg: PruneConfig, batcher: TensorBatcher, logger: RunLogger,
                   teacher: nn.Module, finals: dict, evaluator: Evaluator, end: int) -> list[Hook]:
    """What fine-tuning adds to the training loop: the pruning schedule, distillation, D's warm-up, then the
    logging of its steps and of its FCD after every epoch (finetune_fcd: how quality evolves with the images)."""
    hooks: list[Hook] = []
    if pcfg.schedule == "agp":
        hooks.append(GradualPruning(_targets(state, pcfg.target), finals, pcfg.prune_steps,
                                    pcfg.agp_every(len(batcher))))
    if pcfg.distill_out or pcfg.distill_feat:
        hooks.append(Distillation(teacher, pcfg.distill_out, pcfg.distill_feat))
    if pcfg.hold_d_steps:
        hooks.append(HoldDiscriminator(pcfg.hold_d_steps))
    if pcfg.adv_weight != 1.0:
        hooks.append(AdversarialWeight(pcfg.adv_weight))
    if pcfg.lr_schedule == "cosine":
        hooks.append(CosineDecay(pcfg.finetune_epochs * len(batcher)))
    seed = state.config.seed
    return [*hooks, StepLogging(logger, epoch_prefix="finetune_"),
            Evaluation(evaluator, 1, pcfg.samples, seed, end, prefix="finetune_", logger=logger)]


def _train_sparse(source: TrainingState, pcfg: PruneConfig, batcher: TensorBatcher, logger: RunLogger,
                  progress: bool) -> TrainingState:
    """Method sparse: a generator trained sparse from its first step (dynamic mask), with the source's config
    and as many generator steps as the source trained (whole epochs of ``batcher``, rounded up); the dense source
    is the reference it is scored against."""
    cfg = dataclasses.replace(source.config, sparsity=pcfg.sparsity, mask_update=pcfg.mask_update,
                              density=pcfg.density)
    state = create_state(cfg, source.device)
    epochs = max(1, -(-source.step // len(batcher)))
    hooks = [*sparse_hooks(state, cfg, len(batcher), epochs=epochs), StepLogging(logger, epoch_prefix="sparse_train_")]
    logger.log_params({"sparse_epochs": epochs, "sparse_steps": epochs * len(batcher)})
    for _ in train_gan(state, batcher, epochs, hooks=hooks, progress=progress):
        pass
    return state


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
    return metrics
