"""``ganlab prune`` and ``ganlab evaluate`` as functions (the pruning sweep's trials call them too).

A prune run: load a trained checkpoint -> prune G, D or both -> optionally fine-tune with the masks
held (the shared training loop), iteratively if asked -> fold the masks in -> log the sparsity
tables, UQI/SSIM/MS-SSIM of dense vs pruned images on the same noise, fcd/kid/coverage/class_kl,
dense and sparse sizes, a before/after grid and the pruned checkpoint.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from ganlab.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from ganlab.data import TensorBatcher, load_images
from ganlab.evaluation import Evaluator, inception_fid
from ganlab.images import titled_row, to_pil_grid
from ganlab.models import generate
from ganlab.pipeline import resolve_checkpoint
from ganlab.prune import (PruneConfig, dense_size_bytes, make_permanent, prune_model, sparse_size_bytes,
                          sparsity_table, total_sparsity)
from ganlab.quality import quality_metrics
from ganlab.tracking import RunLogger, ganlab_run
from ganlab.train import pick_device, restore_state, train_gan


def _load(source: str, workdir: Path, device: str = "auto"):
    ckpt = load_checkpoint(resolve_checkpoint(source, workdir))
    return restore_state(ckpt, pick_device(device), with_optimizers=False)


def _source_tags(source: str) -> dict[str, str]:
    return {"ganlab.source_run_id": source} if not Path(source).exists() else {"ganlab.source_checkpoint": str(source)}


def prune_run(source: str, pcfg: PruneConfig, *, experiment: str | None = None, parent_run_id: str | None = None,
              evaluator: Evaluator | None = None, data_dir: str | None = None, device: str = "auto",
              progress: bool = True, tags: dict | None = None, run_name: str | None = None) -> str:
    """Prune the model of ``source`` (run id or checkpoint path) as ``pcfg`` says; returns the run id."""
    pcfg.validate()
    with tempfile.TemporaryDirectory(prefix="ganlab-prune-") as tmp:
        workdir = Path(tmp)
        state = _load(source, workdir, device)
        cfg = state.config
        train_set = load_images(cfg.dataset, cfg.image_size, limit=cfg.limit, data_dir=data_dir,
                                subset_seed=cfg.seed) if pcfg.finetune_epochs else None
        evaluator = evaluator or Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=data_dir,
                                                       progress=progress)
        dense_g = copy.deepcopy(state.generator).eval()
        params = {**pcfg.to_params(), "dataset": cfg.dataset, "image_size": cfg.image_size}
        all_tags = {**_source_tags(source), "dataset": cfg.dataset, **(tags or {})}
        name = run_name or f"prune-{pcfg.method}-{pcfg.amount:g}"
        with ganlab_run("prune", experiment=experiment, params=params, tags=all_tags,
                        parent_run_id=parent_run_id, run_name=name) as logger:
            _prune_and_finetune(state, pcfg, train_set, logger, progress)
            make_permanent(state.generator)
            make_permanent(state.discriminator)
            _log_results(state, dense_g, pcfg, evaluator, logger, workdir)
            return logger.run_id


def _prune_and_finetune(state, pcfg: PruneConfig, train_set, logger: RunLogger, progress: bool) -> None:
    nets = {"generator": [state.generator], "discriminator": [state.discriminator],
            "both": [state.generator, state.discriminator]}[pcfg.target]
    batcher = (TensorBatcher(train_set.images, state.config.batch_size, state.device, state.config.seed)
               if train_set is not None else None)
    for step in range(1, pcfg.iterative_steps + 1):
        # iterative magnitude pruning: reach amount * step / steps, fine-tune, repeat
        amount = pcfg.amount * step / pcfg.iterative_steps
        for net in nets:
            prune_model(net, pcfg.method, amount)
        if pcfg.finetune_epochs:
            state.make_optimizers()  # over weight_orig: the masks hold pruned weights at zero
            for report in train_gan(state, batcher, state.epoch + pcfg.finetune_epochs, progress=progress):
                logger.log_steps(report.steps)
                logger.log_metrics({"finetune_" + k: v for k, v in report.metrics.items()}, step=report.epoch)


def _log_results(state, dense_g, pcfg: PruneConfig, evaluator: Evaluator, logger: RunLogger, workdir: Path) -> None:
    g, d = state.generator, state.discriminator
    metrics: dict[str, float] = {
        "sparsity_generator": total_sparsity(g),
        "sparsity_discriminator": total_sparsity(d),
        "sparsity": total_sparsity(*{"generator": [g], "discriminator": [d], "both": [g, d]}[pcfg.target]),
        "size_dense_bytes": dense_size_bytes(dense_g),
        "size_sparse_bytes": sparse_size_bytes(g),
    }
    for name, net in (("generator", g), ("discriminator", d)):
        if name == "generator" or pcfg.target != "generator":
            table = sparsity_table(net)
            logger.log_text(table.to_csv(index=False), f"sparsity/{name}.csv")
            logger.log_text(table.to_markdown(index=False), f"sparsity/{name}.md")
    noise = torch.randn(pcfg.samples, g.nz, 1, 1, generator=torch.Generator().manual_seed(state.config.seed + 104729))
    noise = noise.to(state.device)
    before, after = generate(dense_g, noise).cpu(), generate(g, noise).cpu()
    metrics.update(quality_metrics(before, after))
    metrics.update(evaluator.evaluate_images(after))
    metrics.update({f"dense_{k}": v for k, v in evaluator.evaluate_images(before).items()})
    logger.log_metrics(metrics, step=0)
    label = f"{pcfg.method} {'s' if pcfg.method == 'sensitivity' else 'q'}={pcfg.amount:g}"
    logger.log_image(titled_row([("dense generator", to_pil_grid(before[:64])),
                                 (f"pruned ({label}, sparsity {metrics['sparsity_generator']:.3f})",
                                  to_pil_grid(after[:64]))]), "samples/before_after.png")
    # one row each, the same 8 noise vectors: analysis stacks them into "different degrees of pruning"
    logger.log_image(to_pil_grid(before[:8], nrow=8), "samples/strip_dense.png")
    logger.log_image(to_pil_grid(after[:8], nrow=8), "samples/strip_pruned.png")
    path = save_atomic(make_checkpoint(state, pruned=True), workdir / "last.pt")
    logger.log_file(path, "checkpoints")


def evaluate_run(source: str, *, samples: int = 1000, experiment: str | None = None, data_dir: str | None = None,
                 device: str = "auto", inception: bool = False, progress: bool = True,
                 evaluator: Evaluator | None = None) -> str:
    """Log fcd/kid/coverage/class_kl (and optionally Inception FID) of a model; returns the run id."""
    from ganlab.config import check_range

    check_range("samples", samples, low=2, integer=True)
    with tempfile.TemporaryDirectory(prefix="ganlab-eval-") as tmp:
        state = _load(source, Path(tmp), device)
        cfg = state.config
        evaluator = evaluator or Evaluator.for_dataset(cfg.dataset, cfg.image_size, data_dir=data_dir,
                                                       progress=progress)
        noise = torch.randn(samples, cfg.nz, 1, 1, generator=torch.Generator().manual_seed(cfg.seed + 104729))
        fake = generate(state.generator, noise.to(state.device)).cpu()
        metrics = evaluator.evaluate_images(fake)
        if inception:
            from ganlab.data import to_model_range

            metrics["inception_fid"] = inception_fid(to_model_range(evaluator.real_images), fake)
        metrics["classifier_test_accuracy"] = evaluator.test_accuracy
        with ganlab_run("evaluate", experiment=experiment, params={"samples": samples, "dataset": cfg.dataset,
                        "image_size": cfg.image_size}, tags=_source_tags(source)) as logger:
            logger.log_metrics(metrics)
            logger.log_image(to_pil_grid(fake[:64]), "samples/generated.png")
            return logger.run_id
