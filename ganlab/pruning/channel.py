"""Channel (structured) pruning with Torch-Pruning, and what a pruned generator costs to run.

``channel_prune`` removes the fraction ``ratio`` of every hidden layer's channels: those whose
coupled parameters (the filter, its BatchNorm channel, the next layer's input slice) have the
smallest L1 norm (Torch-Pruning's MagnitudeImportance(p=1)). Torch-Pruning's dependency graph
shrinks BatchNorm and the next layer with each conv, so the net is physically smaller; the last
layer keeps its output channels, so the output shape does not change.

``costs`` measures parameters, MACs of one forward pass (torch's FlopCounterMode) and the median
latency of generating a batch on this machine.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ganlab.config import check_range
from ganlab.gan.models import Generator, prunable_layers

LATENCY_BATCH = 64  # images per timed batch
LATENCY_REPEATS = 10  # timed batches, after LATENCY_WARMUP untimed ones; the median is reported
LATENCY_WARMUP = 3


def example_input(model: nn.Module) -> torch.Tensor:
    """One input of the right shape for ``model`` (noise for G, an image for D), on its device."""
    device = next(model.parameters()).device
    if isinstance(model, Generator):
        return torch.zeros(1, model.nz, 1, 1, device=device)
    first = prunable_layers(model)[0][1]
    return torch.zeros(1, first.in_channels, model.image_size, model.image_size, device=device)


def channel_prune(model: nn.Module, ratio: float) -> nn.Module:
    """Remove ``ratio`` of each hidden layer's channels from ``model`` in place; ConfigError unless 0 <= ratio < 1."""
    import torch_pruning as tp

    check_range("ratio", ratio, low=0.0, high=1.0, ends="[)")
    if ratio == 0:
        return model
    was_training = model.training
    model.eval()  # Torch-Pruning traces one forward pass; eval mode keeps BatchNorm statistics untouched
    pruner = tp.pruner.MetaPruner(model, example_input(model), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[prunable_layers(model)[-1][1]])
    pruner.step()
    model.train(was_training)
    return model


@torch.no_grad()
def generator_latency_ms(generator: Generator, batch: int = LATENCY_BATCH, repeats: int = LATENCY_REPEATS,
                         warmup: int = LATENCY_WARMUP) -> float:
    """Median wall time (ms) of generating ``batch`` images in eval mode, after ``warmup`` untimed batches."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    noise = torch.randn(batch, generator.nz, 1, 1, device=device, generator=torch.Generator(device).manual_seed(0))
    times = []
    try:
        for i in range(warmup + repeats):
            start = time.perf_counter()
            generator(noise)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        generator.train(was_training)
    return statistics.median(times)


def macs(model: nn.Module) -> float:
    """Multiply-accumulates of one forward pass on one input (torch's FlopCounterMode: FLOPs / 2).

    torch counts a transposed convolution over its input positions (C_in x C_out x k^2 x H_in x W_in),
    which is what it computes; Torch-Pruning's counter uses the output positions and reports stride^2
    (4x) too many for the generator's upsampling layers.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input(model))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2


def costs(generator: Generator) -> dict[str, float]:
    """params, macs (of one image) and latency_ms (of a LATENCY_BATCH batch) of ``generator``."""
    params = sum(p.numel() for p in generator.parameters())
    return {"params": float(params), "macs": macs(generator), "latency_ms": generator_latency_ms(generator)}
