"""What a prune run does between the cut and the scores: prune (once, iteratively or gradually), rewind (lottery
tickets), fine-tune with the recovery hooks the PruneConfig names — or train a generator sparse from scratch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ganlab.gan.data import TensorBatcher
from ganlab.gan.loop import Hook, TrainingState, create_state, train_gan
from ganlab.metrics.distribution import Evaluator
from ganlab.pruning.magnitude import PruneConfig, prune_model
from ganlab.pruning.recovery import (
    AdversarialWeight,
    CosineDecay,
    Distillation,
    GradualPruning,
    HoldDiscriminator,
    layer_fractions,
)
from ganlab.runs.tracking_hooks import Evaluation, StepLogging
from ganlab.runs.train import sparse_hooks
from ganlab.tracking.store import RunLogger


def targets(state: TrainingState, target: str) -> dict[str, nn.Module]:
    """The networks ``target`` (generator, discriminator, both) names, by name."""
    nets = {"generator": state.generator, "discriminator": state.discriminator}
    return nets if target == "both" else {target: nets[target]}


def rewind(state: TrainingState, ckpt: dict) -> None:
    """Both networks back to the checkpoint's weights, buffers included; pruning masks kept (weight_orig is
    the weight the mask multiplies)."""
    for name in ("generator", "discriminator"):
        net, src = getattr(state, name), ckpt[name]
        current = net.state_dict()
        net.load_state_dict({k: v if k.endswith("_mask") else src[k.removesuffix("_orig")]
                             for k, v in current.items()})


@dataclass
class Recovery:
    """A pruned state's recovery, gathered once by prune_run: the recipe (``pcfg``), the images (``batcher``,
    None without fine-tuning), the dense generator (distillation's teacher), the run it logs to."""

    state: TrainingState
    pcfg: PruneConfig
    batcher: TensorBatcher | None
    logger: RunLogger | None
    teacher: nn.Module
    evaluator: Evaluator | None
    progress: bool = True
    on_pass: Callable[[int, dict[str, float]], None] | None = None  # after each pass, its FCD (with a run)

    def prune_and_finetune(self, rewound_to: dict | None = None) -> None:
        """Prune to the amount (in ``iterative_steps`` steps, or gradually with AGP) and fine-tune after each step;
        with ``rewound_to`` (a checkpoint), the surviving weights restart from it before each retraining."""
        state, pcfg = self.state, self.pcfg
        nets = targets(state, pcfg.target)
        gradual = pcfg.schedule == "agp"
        finals = {name: layer_fractions(net, pcfg.method, pcfg.amount) for name, net in nets.items()} \
            if gradual else {}
        for step in range(1, pcfg.iterative_steps + 1):
            # iterative magnitude pruning: reach amount * step / steps, fine-tune, repeat (agp: pruned while tuning)
            if not gradual:
                for net in nets.values():
                    prune_model(net, pcfg.method, pcfg.amount * step / pcfg.iterative_steps)
            if rewound_to is not None:  # lottery ticket: the surviving weights restart from epoch E, then retrain
                rewind(state, rewound_to)
            if pcfg.finetune_epochs:
                self._finetune(fresh_optimizers=pcfg.optimizer_state == "reset" or step > 1, finals=finals)

    def _finetune(self, fresh_optimizers: bool, finals: dict) -> None:
        state, pcfg = self.state, self.pcfg
        if fresh_optimizers:
            state.make_optimizers()  # over weight_orig: the masks hold pruned weights at zero
        # "keep": the source's Adams go on; pruning re-registered the same Parameters as weight_orig
        for opt, scale in ((state.opt_g, pcfg.lr_scale), (state.opt_d, pcfg.lr_scale * pcfg.d_lr_scale)):
            for group in opt.param_groups:
                group["lr"] *= scale
        end = state.epoch + pcfg.finetune_epochs
        for _ in train_gan(state, self.batcher, end, hooks=self.hooks(finals, end), progress=self.progress):
            pass

    def hooks(self, finals: dict, end: int) -> list[Hook]:
        """What fine-tuning adds to the training loop: the pruning schedule, distillation, D's warm-up, the
        adversarial weight, the learning-rate decay, then (with a run) the logging of its steps and of its FCD
        after every epoch (finetune_fcd: how quality evolves with the images)."""
        state, pcfg, steps = self.state, self.pcfg, len(self.batcher)
        hooks: list[Hook] = []
        if pcfg.schedule == "agp":
            hooks.append(GradualPruning(targets(state, pcfg.target), finals, pcfg.prune_steps, pcfg.agp_every(steps)))
        if pcfg.distill_out or pcfg.distill_feat:
            hooks.append(Distillation(self.teacher, pcfg.distill_out, pcfg.distill_feat))
        if pcfg.hold_d_steps:
            hooks.append(HoldDiscriminator(pcfg.hold_d_steps))
        if pcfg.adv_weight != 1.0:
            hooks.append(AdversarialWeight(pcfg.adv_weight))
        if pcfg.lr_schedule == "cosine":
            hooks.append(CosineDecay(pcfg.finetune_epochs * steps))
        if self.logger is not None:
            evaluation = Evaluation(self.evaluator, 1, pcfg.samples, state.config.seed, end, prefix="finetune_",
                                    logger=self.logger)
            hooks += [StepLogging(self.logger, epoch_prefix="finetune_"), evaluation]
            if self.on_pass is not None:
                hooks.append(_PassReport(evaluation, self.on_pass, end - pcfg.finetune_epochs))
        return hooks

    def train_sparse(self) -> TrainingState:
        """Method sparse: a generator trained sparse from its first step (dynamic mask), with the source's config
        and as many generator steps as the source trained (whole epochs of the batcher — the source's own images —
        rounded up); the dense source is the reference it is scored against."""
        source, pcfg, batcher = self.state, self.pcfg, self.batcher
        cfg = dataclasses.replace(source.config, sparsity=pcfg.sparsity, mask_update=pcfg.mask_update,
                                  density=pcfg.density)
        state = create_state(cfg, source.device)
        epochs = max(1, -(-source.step // len(batcher)))
        hooks = [*sparse_hooks(state, cfg, len(batcher), epochs=epochs)]
        if self.logger is not None:
            hooks.append(StepLogging(self.logger, epoch_prefix="sparse_train_"))
            self.logger.log_params({"sparse_epochs": epochs, "sparse_steps": epochs * len(batcher)})
        for _ in train_gan(state, batcher, epochs, hooks=hooks, progress=self.progress):
            pass
        return state


class _PassReport(Hook):
    """Hands each fine-tuning pass's scores (what Evaluation just measured) to the caller's ``on_pass``."""

    name = "pass_report"

    def __init__(self, evaluation: Evaluation, on_pass: Callable[[int, dict[str, float]], None], start: int):
        self.evaluation, self.on_pass, self.start = evaluation, on_pass, start

    def after_epoch(self, state: TrainingState, report) -> None:
        if self.evaluation.latest:
            self.on_pass(report.epoch - self.start, dict(self.evaluation.latest))
