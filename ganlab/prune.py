"""Sensitivity and percentage pruning on torch.nn.utils.prune masks, sparsity tables, sizes.

- Sensitivity pruning (Han et al.): in each conv / transposed-conv layer, zero the weights with
  |w| < s * sigma, sigma the (population) standard deviation of that layer's weights. For
  Gaussian-like weights the pruned fraction is erf(s / sqrt(2)).
- Percentage pruning: in each layer, zero the q % of weights with the smallest |w|
  (torch's l1_unstructured), i.e. round(q/100 * n) of them.

Pruning reparametrises ``weight`` as ``weight_orig * weight_mask`` (torch's forward pre-hook), so
training with the masks in place keeps pruned weights at exactly zero. ``make_permanent`` folds
the masks in before a model is saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from ganlab.config import AMOUNT_KEYS, MASK_UPDATES, METHODS, MIN_EVAL_SAMPLES, check_choice, check_range, setting
from ganlab.errors import ConfigError
from ganlab.models import prunable_layers

TARGETS = ("generator", "discriminator", "both")
SCHEDULES = ("oneshot", "agp")
OPTIMIZER_STATES = ("reset", "keep")
MIN_EVAL_DRAWS = 2


@dataclass
class PruneConfig:
    """What ``ganlab prune`` does; logged as the prune run's params."""

    method: str = setting("sensitivity", "sensitivity: zero |w| < s*sigma per layer; percentage: zero the q% "
                          "smallest |w| per layer; channel: remove the fraction ratio of each hidden layer's "
                          "channels (smallest L1 norm), a physically smaller net; sparse: no pruning of the source "
                          "but a generator trained sparse from scratch (dynamic mask, --mask-update) for as many "
                          "epochs as the source trained, scored against it", choices=METHODS, required=True)
    s: float | None = setting(None, "with --method sensitivity: prune |w| < s * std of each layer (s >= 0)")
    q: float | None = setting(None, "with --method percentage: prune the q% smallest |w| of each layer "
                              "(0 <= q < 100)")
    ratio: float | None = setting(None, "with --method channel: fraction of each hidden layer's channels removed "
                                  "(0 <= ratio < 1)")
    sparsity: float | None = setting(None, "with --method sparse: the sparse-trained generator's sparsity "
                                     "(0 <= sparsity < 1)")
    mask_update: str = setting("rigl", "with --method sparse: regrow at random with set, by |gradient| with rigl",
                               choices=MASK_UPDATES)
    target: str = setting("generator", "which network(s) to prune", choices=TARGETS)
    finetune_epochs: int = setting(0, "GAN training epochs after pruning, with the masks held")
    iterative_steps: int = setting(1, "iterative magnitude pruning: reach the target in K prune + fine-tune steps")
    rewind_epoch: int | None = setting(None, "lottery-ticket rewinding: after each pruning step reset the surviving "
                                       "weights (both networks) to the source run's epoch-E weights (kept by "
                                       "`ganlab train --rewind-epoch E`) and retrain for --finetune-epochs")
    samples: int = setting(1000, f"generated images per quality comparison, the same noise for dense and pruned; "
                           f"at least {MIN_EVAL_SAMPLES}")
    bn_recalibrate: bool = setting(True, "re-estimate the BatchNorm running statistics of the pruned generator "
                                   "AND of the dense one it is compared with on the same fresh noise before "
                                   "scoring: adaptive BN, forward passes only, no gradient step")
    # recovery: how fine-tuning wins back what pruning cost (README "Recovery methods")
    distill_out: float = setting(0.0, "fine-tuning adds distill_out * |G(z) - G_dense(z)|_1 on the same noise "
                                 "(distillation from the dense generator); 0: adversarial loss alone")
    distill_feat: float = setting(0.0, "fine-tuning adds distill_feat * the L1 distance of every hidden block's "
                                  "activations to the dense generator's; not for channel pruning")
    schedule: str = setting("oneshot", "oneshot: prune, then fine-tune; agp: prune gradually during fine-tuning "
                            "along Zhu & Gupta's cubic schedule, --prune-steps cuts --prune-every steps apart",
                            choices=SCHEDULES)
    prune_steps: int = setting(5, "with --schedule agp: how many pruning cuts")
    prune_every: int | None = setting(None, "with --schedule agp: fine-tuning steps between cuts (default: the "
                                      "cuts spread over the first 75% of the fine-tuning)")
    lr_scale: float = setting(1.0, "fine-tuning learning rates = the training ones times this")
    optimizer_state: str = setting("reset", "fine-tuning starts with fresh Adam moments with reset, the source's "
                                   "with keep", choices=OPTIMIZER_STATES)
    hold_d_steps: int = setting(0, "the discriminator is held (not updated) for the first N fine-tuning steps")
    control: bool = setting(False, "a dense control: prune nothing (the amount must be 0), fine-tune exactly as "
                            "the other points, so a pruned point is compared with the same extra training")
    eval_draws: int = setting(5, f"evaluation-noise draws: each scores --samples images of the pruned and the "
                              f"dense generator on the same noise (paired); at least {MIN_EVAL_DRAWS}")

    def validate(self) -> PruneConfig:
        check_choice("method", self.method, METHODS)
        check_choice("target", self.target, TARGETS)
        given = [k for k in AMOUNT_KEYS.values() if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of s (sensitivity), q (percentage), ratio (channel pruning) or "
                              "sparsity (sparse)")
        key = AMOUNT_KEYS[self.method]
        if given[0] != key:
            raise ConfigError(f"method={self.method} takes {key}, not {given[0]}")
        if self.method == "sensitivity":
            check_range("s", self.s, low=0.0)
        elif self.method == "percentage":
            check_range("q", self.q, low=0.0, high=100.0, high_open=True)
        elif self.method == "sparse":
            check_range("sparsity", self.sparsity, low=0.0, high=1.0, high_open=True)
        else:
            check_range("ratio", self.ratio, low=0.0, high=1.0, high_open=True)
        check_range("finetune_epochs", self.finetune_epochs, low=0, integer=True)
        check_range("iterative_steps", self.iterative_steps, low=1, integer=True)
        check_range("samples", self.samples, low=MIN_EVAL_SAMPLES, integer=True)
        for name in ("bn_recalibrate", "control"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self._validate_recovery()
        if self.iterative_steps > 1 and self.finetune_epochs == 0:
            raise ConfigError("iterative_steps > 1 needs finetune_epochs >= 1 (fine-tuning between steps)")
        if self.rewind_epoch is not None:
            check_range("rewind_epoch", self.rewind_epoch, low=0, integer=True)
            if self.finetune_epochs == 0 or self.method == "channel":
                raise ConfigError("rewind_epoch needs finetune_epochs >= 1 (retraining after each rewind) and "
                                  "sensitivity or percentage pruning")
        if self.iterative_steps > 1 and self.method == "channel":
            raise ConfigError("iterative_steps > 1 is for sensitivity and percentage pruning, not channel")
        return self

    def _validate_recovery(self) -> None:
        check_range("distill_out", self.distill_out, low=0.0)
        check_range("distill_feat", self.distill_feat, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("prune_steps", self.prune_steps, low=1, integer=True)
        if self.prune_every is not None:
            check_range("prune_every", self.prune_every, low=1, integer=True)
        check_range("lr_scale", self.lr_scale, low=0.0, low_open=True)
        check_choice("optimizer_state", self.optimizer_state, OPTIMIZER_STATES)
        check_range("hold_d_steps", self.hold_d_steps, low=0, integer=True)
        check_range("eval_draws", self.eval_draws, low=MIN_EVAL_DRAWS, integer=True)
        check_choice("mask_update", self.mask_update, MASK_UPDATES)
        tuned = self.finetune_epochs > 0
        if not tuned and (self.distill_out or self.distill_feat or self.schedule != "oneshot" or self.hold_d_steps
                          or self.lr_scale != 1.0 or self.optimizer_state != "reset"):
            raise ConfigError("distill_out, distill_feat, schedule agp, lr_scale, optimizer_state and hold_d_steps "
                              "are fine-tuning settings: give finetune_epochs >= 1")
        if self.control and not tuned:
            raise ConfigError("control needs finetune_epochs >= 1: a dense control gets the fine-tuning the pruned "
                              "points get (without fine-tuning the dense model itself is the reference)")
        if self.control and (self.amount != 0 or self.method == "sparse"):
            raise ConfigError(f"control prunes nothing: give {AMOUNT_KEYS[self.method]}=0 with control "
                              f"(got {self.amount:g}), and not method sparse")
        if self.distill_feat and self.method == "channel":
            raise ConfigError("distill_feat matches hidden activations, and a channel-pruned generator has other "
                              "widths than the dense teacher (no 1x1 adapters here): use distill_out for channel")
        if self.schedule == "agp" and self.method not in ("sensitivity", "percentage"):
            raise ConfigError("schedule agp prunes magnitudes gradually: it is for sensitivity and percentage")
        if self.schedule == "agp" and (self.iterative_steps > 1 or self.rewind_epoch is not None):
            raise ConfigError("schedule agp is its own gradual schedule: not with iterative_steps or rewind_epoch")
        if self.method == "sparse" and (tuned or self.target != "generator"):
            raise ConfigError("method sparse trains a sparse generator from scratch: no finetune_epochs, "
                              "target generator")

    def check_budget(self, steps_per_epoch: int) -> None:
        """An AGP schedule must end within the fine-tuning: ConfigError (before any run) when its cuts need more
        steps than finetune_epochs * steps_per_epoch."""
        if self.schedule != "agp":
            return
        budget = self.finetune_epochs * steps_per_epoch
        every = self.agp_every(steps_per_epoch)
        if every < 1 or (self.prune_steps - 1) * every >= budget:
            raise ConfigError(f"schedule agp: {self.prune_steps} cuts {every} steps apart need "
                              f"{(self.prune_steps - 1) * every + 1} fine-tuning steps; the budget is {budget} "
                              f"({self.finetune_epochs} epoch(s) of {steps_per_epoch}): fewer --prune-steps or a "
                              "smaller --prune-every")

    def agp_every(self, steps_per_epoch: int) -> int:
        if self.prune_every is not None:
            return self.prune_every
        return int(0.75 * self.finetune_epochs * steps_per_epoch) // max(self.prune_steps - 1, 1)

    @property
    def amount(self) -> float:
        return float(getattr(self, AMOUNT_KEYS[self.method]))

    @property
    def recovery(self) -> str:
        """The recovery method in words (the report's colour): none, ft, distill, agp, ..."""
        if self.method == "sparse":
            return f"sparse training ({self.mask_update})"
        if not self.finetune_epochs:
            return "none"
        parts = ["agp" if self.schedule == "agp" else "ft"]
        if self.distill_out or self.distill_feat:
            parts.append("distill")
        if self.lr_scale != 1.0:
            parts.append(f"lr x{self.lr_scale:g}")
        if self.optimizer_state == "keep":
            parts.append("adam kept")
        if self.hold_d_steps:
            parts.append("D held")
        if self.rewind_epoch is not None:
            parts.append("rewound")
        return " + ".join(parts)

    def to_params(self) -> dict:
        params = {"method": self.method, "target": self.target, "finetune_epochs": self.finetune_epochs,
                  "iterative_steps": self.iterative_steps, "samples": self.samples,
                  "bn_recalibrate": self.bn_recalibrate, AMOUNT_KEYS[self.method]: self.amount,
                  "rewind_epoch": "none" if self.rewind_epoch is None else self.rewind_epoch,
                  "eval_draws": self.eval_draws, "control": self.control, "recovery": self.recovery}
        if self.finetune_epochs:
            params.update(distill_out=self.distill_out, distill_feat=self.distill_feat, schedule=self.schedule,
                          lr_scale=self.lr_scale, optimizer_state=self.optimizer_state,
                          hold_d_steps=self.hold_d_steps)
            if self.schedule == "agp":
                params.update(prune_steps=self.prune_steps, prune_every=self.prune_every or "auto")
        if self.method == "sparse":
            params["mask_update"] = self.mask_update
        return params


class SensitivityPruning(prune.BasePruningMethod):
    """Unstructured pruning of the entries with |w| < s * std(w) (std over the unpruned entries)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, s: float):
        self.s = s

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        mask = default_mask.clone(memory_format=torch.contiguous_format)
        live = t[default_mask.bool()] if default_mask.shape == t.shape else t
        threshold = self.s * live.float().std(correction=0)
        mask[t.abs() < threshold] = 0
        return mask

    @classmethod
    def apply(cls, module, name, s):  # noqa: D102 - torch's classmethod protocol
        return super().apply(module, name, s=s)


def sensitivity_prune(model: nn.Module, s: float) -> nn.Module:
    """Mask |w| < s*sigma in every conv layer of ``model`` (in place); raises ConfigError for s < 0."""
    check_range("s", s, low=0.0)
    for _, layer in prunable_layers(model):
        SensitivityPruning.apply(layer, "weight", s=s)
    return model


def percentage_prune(model: nn.Module, q: float) -> nn.Module:
    """Mask the q % smallest |w| of every conv layer of ``model`` (in place); q in [0, 100)."""
    check_range("q", q, low=0.0, high=100.0, high_open=True)
    for _, layer in prunable_layers(model):
        n = layer.weight.numel()
        already = n - int(_mask_of(layer).sum()) if prune.is_pruned(layer) else 0
        # an int amount counts entries among those still unpruned: reach round(q% of n) in total
        prune.l1_unstructured(layer, "weight", amount=max(0, round(q / 100.0 * n) - already))
    return model


def prune_model(model: nn.Module, method: str, amount: float) -> nn.Module:
    """Prune ``model`` in place by ``method`` (channel pruning: see ganlab.channel_pruning)."""
    check_choice("method", method, METHODS)
    if method == "sparse":
        raise ConfigError("method sparse trains a sparse generator from scratch; it prunes nothing")
    if method == "channel":
        from ganlab.channel_pruning import channel_prune

        return channel_prune(model, amount)
    return sensitivity_prune(model, amount) if method == "sensitivity" else percentage_prune(model, amount)


def _mask_of(layer: nn.Module) -> torch.Tensor:
    return getattr(layer, "weight_mask", torch.ones_like(layer.weight))


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (torch.nn.utils.prune.remove): a plain state_dict again."""
    for _, layer in prunable_layers(model):
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
    return model


def sparsity_table(model: nn.Module, dense: nn.Module | None = None) -> pd.DataFrame:
    """The seed's table: one row per conv layer (id, type, parameters, non-zero, sparsity) + total.

    With ``dense`` (the net before channel pruning), parameters are the dense layer's, so removed
    channels count as pruned weights.
    """
    rows = []
    reference = prunable_layers(dense if dense is not None else model)
    for (index, layer), (_, ref) in zip(prunable_layers(model), reference):
        nonzero = int(torch.count_nonzero(layer.weight.detach()))
        n = ref.weight.numel()
        rows.append({"layer": index, "type": type(layer).__name__, "parameters": n,
                     "nonzero": nonzero, "sparsity": 1.0 - nonzero / n})
    total_params = sum(r["parameters"] for r in rows)
    total_nonzero = sum(r["nonzero"] for r in rows)
    rows.append({"layer": "total", "type": "", "parameters": total_params, "nonzero": total_nonzero,
                 "sparsity": 1.0 - total_nonzero / total_params})
    return pd.DataFrame(rows)


def total_sparsity(*models: nn.Module, dense: tuple[nn.Module, ...] | None = None) -> float:
    """Fraction of the conv weights of ``models`` that are zero — or, with ``dense`` (the same nets
    before channel pruning), the fraction of the dense nets' conv weights that are zero or removed."""
    n = sum(layer.weight.numel() for model in (dense or models) for _, layer in prunable_layers(model))
    nonzero = sum(int(torch.count_nonzero(layer.weight.detach())) for model in models
                  for _, layer in prunable_layers(model))
    return 1.0 - nonzero / n


def dense_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers stored densely."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def sparse_size_bytes(model: nn.Module, index_bits: int = 8) -> int:
    """Bytes with conv weights stored sparsely as Deep Compression counts them.

    Each non-zero costs its value plus an ``index_bits`` relative index (the gap since the last
    stored entry); a gap wider than 2**index_bits - 1 costs a filler zero entry. Other
    parameters and buffers (BatchNorm) stay dense.
    """
    total = 0
    conv_keys = set()
    for index, layer in prunable_layers(model):
        conv_keys |= {f"main.{index}.weight", f"main.{index}.weight_orig", f"main.{index}.weight_mask"}
        w = layer.weight.detach().flatten()
        positions = torch.nonzero(w).flatten()
        if positions.numel() == 0:
            continue
        gaps = torch.diff(positions, prepend=positions.new_tensor([-1]))
        fillers = int(((gaps - 1) // 2 ** index_bits).sum())
        total += ((positions.numel() + fillers) * (w.element_size() * 8 + index_bits) + 7) // 8
    total += sum(t.numel() * t.element_size() for k, t in model.state_dict().items() if k not in conv_keys)
    return int(total)


BN_RECALIBRATION_BATCHES = 20  # batches of fresh noise that re-estimate the running statistics
BN_RECALIBRATION_OFFSET = 15485863  # noise seed offset: neither the training nor the evaluation noise


@torch.no_grad()
def recalibrate_batchnorm(generator: nn.Module, seed: int, batch_size: int = 128,
                          batches: int = BN_RECALIBRATION_BATCHES) -> nn.Module:
    """Adaptive BN: reset the generator's BatchNorm running statistics and re-estimate them (a cumulative
    average) from ``batches`` forward passes on fresh noise, with no gradient step (torch's
    ``swa_utils.update_bn``). Pruning changes every layer's activations; the dense network's running
    statistics no longer describe them, so an un-recalibrated pruned generator is scored unfairly.
    """
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed + BN_RECALIBRATION_OFFSET)
    noise = [torch.randn(batch_size, generator.nz, 1, 1, generator=rng) for _ in range(batches)]
    was_training = generator.training
    torch.optim.swa_utils.update_bn(noise, generator, device=device)
    generator.train(was_training)
    return generator
