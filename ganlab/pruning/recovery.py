"""The recovery hooks: what a pruned generator is trained with after pruning (pure torch, no MLflow).

Distillation from the dense generator (GAN Compression, CAGC), gradual pruning (AGP), dynamic sparse masks
(SET, RigL) and holding the discriminator. Each is a ``ganlab.gan.loop.Hook``: the loop's contract (which
method runs when, how a hook's state is saved and resumed) is written there. The hooks that log to MLflow live
in ``ganlab.runs.tracking_hooks``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ganlab.gan.loop import Hook, TrainingState
from ganlab.gan.models import SPARSE_MASK_OFFSET, prunable_layers
from ganlab.pruning.magnitude import prune_layer_to, sensitivity_fraction

# ---------------------------------------------------------------------------------------------- distillation

class Distillation(Hook):
    """Distil the (pruned) generator towards a frozen copy of the dense one on the same noise (GAN Compression,
    CAGC): ``lambda_out * |G(z) - G_dense(z)|_1`` and, with ``lambda_feat``, the mean L1 distance of every hidden
    block's activations (after its ReLU) — which needs the student's widths to be the teacher's."""

    name = "distillation"

    def __init__(self, teacher: nn.Module, lambda_out: float, lambda_feat: float = 0.0):
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.lambda_out, self.lambda_feat = float(lambda_out), float(lambda_feat)
        self._student_acts: list[torch.Tensor] = []
        self._handles: list = []

    @staticmethod
    def _relus(g: nn.Module) -> list[nn.Module]:
        return [m for m in g.modules() if isinstance(m, nn.ReLU)]

    def before_train(self, state: TrainingState) -> None:
        self.teacher.to(state.device)
        if self.lambda_feat:
            if list(state.generator.widths) != list(self.teacher.widths):
                from ganlab.errors import ConfigError

                raise ConfigError("feature distillation needs the student's layer widths to be the teacher's; a "
                                  "channel-pruned generator has other widths (use distill_out only)")
            self._handles = [m.register_forward_hook(lambda _m, _i, out: self._student_acts.append(out))
                             for m in self._relus(state.generator)]

    def before_step(self, state: TrainingState) -> None:
        self._student_acts.clear()

    def generator_loss(self, state: TrainingState, noise: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        teacher_acts: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: teacher_acts.append(out))
                   for m in self._relus(self.teacher)] if self.lambda_feat else []
        try:
            with torch.no_grad():
                target = self.teacher(noise)
        finally:
            for h in handles:
                h.remove()
        loss = self.lambda_out * (fake.float() - target.float()).abs().mean()
        if self.lambda_feat:
            student = self._student_acts[-len(teacher_acts):]  # the last forward of G (d_steps may make several)
            feat = sum((s.float() - t.float()).abs().mean() for s, t in zip(student, teacher_acts))
            loss = loss + self.lambda_feat * feat / max(len(teacher_acts), 1)
        return loss

    def after_train(self, state: TrainingState) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# --------------------------------------------------------------------------------- gradual pruning (AGP)

def agp_sparsity(step: int, final: float, steps: int, every: int, start: int = 0) -> float:
    """Zhu & Gupta's cubic schedule with ``steps`` cuts ``every`` steps apart, the first at ``start``:
    s = s_f (1 - (1 - k / n)^3) once k cuts are made (s_i = 0), held between cuts and after the last, which
    falls at start + (n - 1) * every."""
    k = min((step - start) // every + 1, steps)
    return final * (1.0 - (1.0 - k / steps) ** 3)


class GradualPruning(Hook):
    """AGP over the fine-tuning steps: each layer of each net reaches its own final fraction (percentage: q %;
    sensitivity: the share of its dense weights with |w| < s*sigma) along the cubic schedule, pruning the
    smallest magnitudes every ``every`` steps, ``steps`` times, from the first step of fine-tuning."""

    name = "agp"

    def __init__(self, nets: dict[str, nn.Module], finals: dict[str, list[float]], steps: int, every: int):
        self.nets, self.finals, self.steps, self.every = nets, finals, int(steps), int(every)
        self.start: int | None = None  # the state's step when fine-tuning began
        self.applied = -1  # pruning steps applied

    def before_train(self, state: TrainingState) -> None:
        if self.start is None:
            self.start = state.step
        self._apply(state)

    def after_step(self, state: TrainingState) -> None:
        self._apply(state)

    def _apply(self, state: TrainingState) -> None:
        k = min((state.step - self.start) // self.every + 1, self.steps)  # cuts at t0, t0 + dt, ...
        if k <= self.applied:
            return
        self.applied = k
        for name, net in self.nets.items():
            for (_, layer), final in zip(prunable_layers(net), self.finals[name]):
                prune_layer_to(layer, agp_sparsity(state.step, final, self.steps, self.every, self.start))

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "applied": self.applied}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.start, self.applied = saved["start"], saved["applied"]


def layer_fractions(net: nn.Module, method: str, amount: float) -> list[float]:
    """Per conv layer, the share of weights one-shot ``method`` pruning at ``amount`` would remove."""
    return [amount / 100.0 if method == "percentage" else sensitivity_fraction(layer, amount)
            for _, layer in prunable_layers(net)]


# ---------------------------------------------------------------------------- sparse-to-sparse training

@dataclass(eq=False)
class SparseMasks(Hook):
    """Train a net sparse from the first step with a dynamic mask (SET / RigL, as STU-GAN does for GANs).

    Every layer keeps exactly round(sparsity * n) zeros. Every ``every`` steps a fraction of each layer's live
    weights (``drop`` at the start, decaying to 0 along a cosine over ``total_steps``) is dropped — the smallest
    magnitudes — and as many are regrown among the dead ones: at random (``set``) or where |gradient| is largest
    (``rigl``); grown weights start at 0 and their Adam moments are cleared. The masks are applied after every
    optimizer step (weights, and Adam's moments, held at zero) so the gradient of a dead weight stays visible
    to RigL. Initial masks are random, with the same density in every layer or, with ``density="erk"``, the
    Erdos-Renyi-Kernel densities (``erk_densities``) that keep the same total."""

    name = "sparse"

    nets: dict[str, nn.Module]
    sparsity: float
    rule: str  # set | rigl
    every: int  # steps between mask updates
    total_steps: int  # the drop fraction decays to 0 over these
    seed: int
    drop: float = 0.3
    density: str = "uniform"  # uniform | erk
    rng: torch.Generator = field(init=False, repr=False)
    masks: dict[str, list[torch.Tensor]] | None = field(default=None, init=False, repr=False)
    updates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.sparsity, self.every, self.drop = float(self.sparsity), int(self.every), float(self.drop)
        self.total_steps = max(int(self.total_steps), 1)
        self.rng = torch.Generator().manual_seed(self.seed + SPARSE_MASK_OFFSET)

    def _layers(self) -> list[tuple[str, int, nn.Module]]:
        return [(name, i, layer) for name, net in self.nets.items()
                for i, (_, layer) in enumerate(prunable_layers(net))]

    def before_train(self, state: TrainingState) -> None:
        if self.masks is None:
            self.masks = {name: [] for name in self.nets}
            layers = self._layers()
            if self.density == "erk":
                kept = erk_densities([tuple(layer.weight.shape) for _, _, layer in layers], self.sparsity)
            else:
                kept = [1 - self.sparsity] * len(layers)
            for (name, _, layer), density in zip(layers, kept):
                n = layer.weight.numel()
                mask = torch.ones(n)
                mask[torch.randperm(n, generator=self.rng)[:round((1 - density) * n)]] = 0
                self.masks[name].append(mask.view_as(layer.weight).to(layer.weight.device))
        self._apply(state)

    def drop_fraction(self, step: int) -> float:
        return self.drop / 2 * (1 + math.cos(math.pi * min(step / self.total_steps, 1.0)))

    def after_step(self, state: TrainingState) -> None:
        if state.step % self.every == 0 and state.step < self.total_steps:
            self._update(self.drop_fraction(state.step))
        self._apply(state)

    @torch.no_grad()
    def _update(self, fraction: float) -> None:
        for name, i, layer in self._layers():
            mask, w = self.masks[name][i].flatten(), layer.weight.detach().flatten()
            live, dead = mask.nonzero().flatten(), (mask == 0).nonzero().flatten()
            k = min(int(fraction * len(live)), len(dead))
            if k == 0:
                continue
            drop = live[w[live].abs().argsort()[:k]]
            if self.rule == "rigl" and layer.weight.grad is not None:
                score = layer.weight.grad.detach().flatten()[dead].abs()
                grow = dead[score.argsort(descending=True)[:k]]
            else:
                grow = dead[torch.randperm(len(dead), generator=self.rng)[:k].to(dead.device)]
            mask[drop] = 0
            mask[grow] = 1
            grown = torch.zeros_like(mask, dtype=torch.bool)
            grown[grow] = True
            layer.weight.masked_fill_(grown.view(layer.weight.shape), 0.0)  # grown weights start at zero (RigL)
        self.updates += 1

    @torch.no_grad()
    def _apply(self, state: TrainingState) -> None:
        optims = [o for o in (state.opt_g, state.opt_d) if o is not None]
        for name, i, layer in self._layers():
            mask = self.masks[name][i]
            layer.weight.mul_(mask)
            for opt in optims:
                for moment in opt.state.get(layer.weight, {}).values():
                    if torch.is_tensor(moment) and moment.shape == mask.shape:
                        moment.mul_(mask)

    def densities(self) -> dict[str, list[float]]:
        return {name: [float(m.mean()) for m in masks] for name, masks in (self.masks or {}).items()}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {k: [m.cpu() for m in v] for k, v in (self.masks or {}).items()},
                "rng": self.rng.get_state(), "updates": self.updates}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.masks = {k: list(v) for k, v in saved["masks"].items()}
        self.rng.set_state(saved["rng"])
        self.updates = saved["updates"]


# ------------------------------------------------------------------------------ discriminator warm-up

class HoldDiscriminator(Hook):
    """D is not updated for the first ``steps`` steps of this loop (G catches up with a fixed critic)."""

    name = "hold_discriminator"

    def __init__(self, steps: int):
        self.steps, self.start = int(steps), None

    def before_train(self, state: TrainingState) -> None:
        if self.start is None:
            self.start = state.step

    def hold_discriminator(self, state: TrainingState) -> bool:
        return state.step - self.start < self.steps

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.start = saved["start"]


# ------------------------------------------------------------------------------ the recipe's other knobs

class AdversarialWeight(Hook):
    """Scale G's adversarial term by ``weight``; 0 leaves the hooks' terms alone (distillation only, D idle)."""

    name = "adversarial_weight"

    def __init__(self, weight: float):
        self.weight = float(weight)

    def adversarial_weight(self, state: TrainingState) -> float:
        return self.weight


class CosineDecay(Hook):
    """Both learning rates decay from their value at the start to 0 along a cosine over ``steps`` optimizer
    steps (torch's CosineAnnealingLR, one scheduler per optimizer)."""

    name = "cosine_decay"

    def __init__(self, steps: int):
        self.steps = max(int(steps), 1)
        self.schedulers: list = []
        self._saved: list | None = None

    def before_train(self, state: TrainingState) -> None:
        self.schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
                           for opt in (state.opt_g, state.opt_d) if opt is not None]
        for scheduler, saved in zip(self.schedulers, self._saved or []):
            scheduler.load_state_dict(saved)

    def after_step(self, state: TrainingState) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self._saved = saved["schedulers"]


def erk_densities(shapes: list[tuple[int, ...]], sparsity: float) -> list[float]:
    """Erdos-Renyi-Kernel layer densities (Evci et al. 2020, RigL): density_l = eps * sum(shape_l) / prod(shape_l),
    eps chosen so the layers together keep (1 - sparsity) of their weights; a layer the rule would make denser than
    1 is kept dense and eps solved again over the others."""
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        budget = (1 - sparsity) * sum(sizes) - sum(sizes[i] for i in dense)
        free = [i for i in range(len(shapes)) if i not in dense]
        eps = budget / sum(raw[i] * sizes[i] for i in free)
        over = {i for i in free if eps * raw[i] > 1}
        if not over:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense |= over
