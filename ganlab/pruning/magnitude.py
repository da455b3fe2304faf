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

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from ganlab.config import AMOUNT_KEYS, METHODS, check_choice, check_range  # noqa: F401 - read from here too
from ganlab.errors import ConfigError
from ganlab.gan.models import prunable_layers
from ganlab.pruning.config import TARGETS, PruneConfig  # noqa: F401 - read from here too


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
    check_range("q", q, low=0.0, high=100.0, ends="[)")
    for _, layer in prunable_layers(model):
        prune_layer_to(layer, q / 100.0)
    return model


def prune_layer_to(layer: nn.Module, fraction: float) -> None:
    """Mask the ``fraction`` smallest |w| of ``layer`` in total (torch's l1_unstructured); weights masked already
    stay masked and count toward it (iterative pruning and AGP only grow the mask)."""
    n = layer.weight.numel()
    already = n - int(_mask_of(layer).sum()) if prune.is_pruned(layer) else 0
    # an int amount counts entries among those still unpruned: reach round(fraction * n) in total. torch's
    # l1_unstructured .view()s the weight: a channels-last one (CUDA training's default) is scored on a copy
    amount = max(0, round(fraction * n) - already)
    weight = layer.weight.detach()
    scores = None if weight.is_contiguous() else weight.abs().contiguous()
    prune.l1_unstructured(layer, "weight", amount=amount, importance_scores=scores)


def sensitivity_fraction(layer: nn.Module, s: float) -> float:
    """The share of ``layer``'s weights that sensitivity pruning at ``s`` would mask (SensitivityPruning's rule)."""
    w = layer.weight.detach()
    return 1.0 - float(SensitivityPruning(s).compute_mask(w, torch.ones_like(w)).mean())


def prune_model(model: nn.Module, method: str, amount: float) -> nn.Module:
    """Prune ``model`` in place by ``method`` (channel pruning: see ganlab.pruning.channel)."""
    check_choice("method", method, METHODS)
    if method == "sparse":
        raise ConfigError("method sparse trains a sparse generator from scratch; it prunes nothing")
    if method == "channel":
        from ganlab.pruning.channel import channel_prune

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
