"""The one GAN training loop. The CLI, fine-tuning after pruning and Ray Tune trials all call it.

``train_gan`` is a generator: it yields an ``EpochReport`` after each epoch and leaves logging,
checkpointing and early stopping to its caller, so a Tune trainable wraps it without a copy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ganlab.config import TrainConfig
from ganlab.device import pick_device
from ganlab.gan.checkpoint import load_state_dict_checked
from ganlab.gan.data import TensorBatcher
from ganlab.gan.models import TRAINING_NOISE_OFFSET, Discriminator, Generator, build_models, fixed_noise

STEP_METRICS = ("loss_d", "loss_g", "d_x", "d_g_z")
FINITE_CHECK_EVERY = 25  # steps between checks for a non-finite loss (each check syncs the GPU)


class Hook:
    """A side task of the training loop, with its own state (detectron2's ``HookBase`` is the model).

    ``train_gan`` runs the GAN updates and nothing else; everything a particular run adds — a distillation
    term, a pruning schedule, a dynamic sparse mask, evaluation and the plateau rule, logging, checkpoints,
    Tune reports — is a ``Hook`` in the list it is given. The loop calls, in order:

    - ``before_train(state)`` once, after any saved hook state has been loaded;
    - per step: ``before_step(state)``; ``hold_discriminator(state)`` (any True: D is not updated this step);
      ``adversarial_weight(state)`` (their product scales G's adversarial term; 0: D is neither run nor
      updated); ``generator_loss(state, noise, fake)`` (terms added to G's loss); ``after_step(state)`` after both
      optimizers stepped (G's gradients are still there);
    - ``after_epoch(state, report)`` after each epoch, in list order: hooks add to ``report.metrics`` and may
      set ``report.stop`` (a ``StopReason``) to end training after this epoch;
    - ``after_train(state)`` once, when the loop ends for any reason but an exception.

    A hook's ``state_dict`` is saved in the checkpoint under its ``name`` and handed back to
    ``load_state_dict`` on resume, so a resumed run continues a schedule, a mask or a patience count exactly.
    Override what you need.
    """

    name = "hook"

    def before_train(self, state: TrainingState) -> None:
        pass

    def before_step(self, state: TrainingState) -> None:
        pass

    def hold_discriminator(self, state: TrainingState) -> bool:
        return False

    def adversarial_weight(self, state: TrainingState) -> float:
        """A factor on G's adversarial term (the loop multiplies every hook's); at 0, D is not run at all."""
        return 1.0

    def generator_loss(self, state: TrainingState, noise: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        return None

    def after_step(self, state: TrainingState) -> None:
        pass

    def after_epoch(self, state: TrainingState, report: EpochReport) -> None:
        pass

    def after_train(self, state: TrainingState) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        pass


def for_device(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """``cfg`` with amp and channels_last decided where left to the default: on for CUDA, off elsewhere."""
    cuda = device.type == "cuda"
    return dataclasses.replace(cfg, amp=cuda if cfg.amp is None else cfg.amp,
                               channels_last=cuda if cfg.channels_last is None else cfg.channels_last)


@dataclass
class TrainingState:
    """Models, optimizers and RNG of a run: everything a checkpoint holds."""

    config: TrainConfig
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer | None
    opt_d: torch.optim.Optimizer | None
    noise_rng: torch.Generator
    fixed_noise: torch.Tensor
    device: torch.device
    epoch: int = 0  # epochs completed
    step: int = 0  # generator updates completed: the x axis of per-step metrics
    hooks: list[Hook] = field(default_factory=list)  # the running loop's hooks: a checkpoint saves their state
    hook_states: dict[str, dict] = field(default_factory=dict)  # saved hook state a resumed loop hands back

    def make_optimizers(self) -> None:
        """(Re)build both Adams over the current parameters (after pruning they are weight_orig)."""
        cfg = self.config
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))


def create_state(cfg: TrainConfig, device: torch.device | None = None) -> TrainingState:
    """Fresh models and optimizers for ``cfg``; on CPU the same seed gives the same weights."""
    device = device or pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    g, d = build_models(cfg)
    noise_rng = torch.Generator(device=device).manual_seed(cfg.seed + TRAINING_NOISE_OFFSET)
    state = TrainingState(cfg, g.to(device), d.to(device), None, None, noise_rng,
                          fixed_noise(cfg.nz, cfg.seed).to(device), device)
    state.make_optimizers()
    return state


def restore_state(ckpt: dict, device: torch.device | None = None, *, with_optimizers: bool = True) -> TrainingState:
    """Rebuild a TrainingState from a checked checkpoint dict (see ganlab.gan.checkpoint.load_checkpoint)."""
    cfg: TrainConfig = ckpt["config"]
    device = device or pick_device(cfg.device)
    g, d = build_models(cfg, ckpt.get("widths"))
    load_state_dict_checked(g, ckpt["generator"], "checkpoint generator")
    load_state_dict_checked(d, ckpt["discriminator"], "checkpoint discriminator")
    noise_rng = torch.Generator(device=device)
    state = TrainingState(cfg, g.to(device), d.to(device), None, None, noise_rng,
                          fixed_noise(cfg.nz, cfg.seed).to(device), device, ckpt["epoch"], ckpt["step"],
                          hook_states=dict(ckpt.get("hooks") or {}))
    state.make_optimizers()
    if with_optimizers and ckpt.get("opt_g") is not None:
        state.opt_g.load_state_dict(ckpt["opt_g"])
        state.opt_d.load_state_dict(ckpt["opt_d"])
    try:  # a CUDA generator's state does not fit a CPU generator and vice versa
        noise_rng.set_state(ckpt["noise_rng"])
    except (RuntimeError, TypeError, KeyError):
        noise_rng.manual_seed(cfg.seed + TRAINING_NOISE_OFFSET + state.epoch)
    if ckpt.get("torch_rng") is not None:
        torch.set_rng_state(ckpt["torch_rng"])
    return state


@dataclass(frozen=True)
class StopReason:
    """Why training ends after this epoch: a ``kind`` a hook can test (PLATEAU, CALLER, or a health status) and
    the sentence a person reads (``str(reason)``)."""

    kind: str
    message: str

    PLATEAU: ClassVar[str] = "plateau"  # the evaluation's FCD stopped improving (early stopping)
    CALLER: ClassVar[str] = "caller"  # the caller asked (e.g. a sweep's trial was told to stop)

    def __str__(self) -> str:
        return self.message


@dataclass
class EpochReport:
    epoch: int  # 1-based number of the epoch just finished
    metrics: dict[str, float]  # epoch means of STEP_METRICS, images_per_sec
    steps: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    nonfinite: bool = False  # a loss became NaN/inf; the epoch was cut short
    stop: StopReason | None = None  # set by a hook: why training ends after this epoch
    status: str = "ok"  # set by the health hook: ok | collapsed | diverged


def train_gan(state: TrainingState, batcher: TensorBatcher, epochs: int, *, hooks: list[Hook] | tuple = (),
              progress: bool = True) -> Iterator[EpochReport]:
    """Train ``state`` from its current epoch up to ``epochs`` (total), yielding after each epoch.

    The loop only updates D and G; ``hooks`` (see ``Hook``) do everything else, in list order, and their
    saved state (``state.hook_states``, from a checkpoint) is handed back before the first step. Training ends
    after an epoch whose report a hook gave a ``stop`` reason, or whose losses went non-finite.
    Pruned networks train here too (fine-tuning): torch's prune hooks keep masked weights at zero.
    """
    state.hooks = list(hooks)
    for hook in state.hooks:
        if hook.name in state.hook_states:
            hook.load_state_dict(state.hook_states[hook.name])
        hook.before_train(state)
    try:
        yield from _epochs(state, batcher, epochs, progress)
    finally:
        for hook in state.hooks:
            hook.after_train(state)
        state.hook_states = {h.name: h.state_dict() for h in state.hooks}


def _epochs(state: TrainingState, batcher: TensorBatcher, epochs: int, progress: bool) -> Iterator[EpochReport]:
    hooks = state.hooks
    cfg, dev = state.config, state.device
    cfg = for_device(cfg, dev)  # a checkpoint from before these settings: decide them here
    g, d = state.generator, state.discriminator
    g.train()
    d.train()
    fmt = torch.channels_last if cfg.channels_last else torch.preserve_format
    if cfg.channels_last:
        g.to(memory_format=torch.channels_last)
        d.to(memory_format=torch.channels_last)
    # The loss is computed on D's logits (BCEWithLogits: stable in bf16 and without BCELoss's log clamp);
    # the Sigmoid stays in the model for inference and checkpoints.
    g_forward, d_logits = (torch.compile(g), torch.compile(d.logits)) if cfg.compile else (g, d.logits)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(cfg.amp))
    bce = nn.BCEWithLogitsLoss()
    real_target = 1.0 - cfg.label_smoothing
    for epoch in range(state.epoch + 1, epochs + 1):
        rows: list[torch.Tensor] = []
        n_images, nonfinite = 0, False
        t0 = time.perf_counter()
        bar = tqdm(total=len(batcher), desc=f"epoch {epoch}/{epochs}", disable=None if progress else True,
                   leave=False, dynamic_ncols=True)
        for i, real in enumerate(batcher.epoch(epoch)):
            b = real.shape[0]
            real = real.contiguous(memory_format=fmt)
            for hook in hooks:
                hook.before_step(state)
            adv = math.prod(hook.adversarial_weight(state) for hook in hooks)
            update_d = adv > 0 and not any(hook.hold_discriminator(state) for hook in hooks)
            if adv == 0:  # distillation alone: D takes no part (its weights and BN statistics stay as they are)
                noise = torch.randn(b, cfg.nz, 1, 1, device=dev, generator=state.noise_rng)
                with autocast:
                    fake = g_forward(noise)
                loss_d = logit_real = logit_fake = torch.full((1,), math.nan, device=dev)
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            for _ in range(cfg.d_steps if adv > 0 else 0):
                d.zero_grad(set_to_none=True)
                noise = torch.randn(b, cfg.nz, 1, 1, device=dev, generator=state.noise_rng)
                with autocast:
                    logit_real = d_logits(real).float()
                    fake = g_forward(noise)
                    logit_fake = d_logits(fake.detach()).float()
                loss_real = bce(logit_real, torch.full_like(logit_real, real_target))
                loss_fake = bce(logit_fake, torch.zeros_like(logit_fake))
                loss_d = loss_real + loss_fake
                if update_d:
                    loss_d.backward()
                    state.opt_d.step()
            # (2) Update G: maximize log(D(G(z))) (the non-saturating loss), plus the hooks' terms
            g.zero_grad(set_to_none=True)
            if adv > 0:
                with autocast:
                    logit_g = d_logits(fake).float()
                loss_g = adv * bce(logit_g, torch.ones_like(logit_g))
            else:
                loss_g = torch.zeros((), device=dev)
            for hook in hooks:
                extra = hook.generator_loss(state, noise, fake)
                if extra is not None:
                    loss_g = loss_g + extra
            loss_g.backward()
            state.opt_g.step()
            state.step += 1
            for hook in hooks:
                hook.after_step(state)
            # (3) Bookkeeping: losses stay on the device; one sync every FINITE_CHECK_EVERY steps
            n_images += b
            d_x, d_g_z = torch.sigmoid(logit_real.detach()).mean(), torch.sigmoid(logit_fake.detach()).mean()
            rows.append(torch.stack([loss_d.detach().reshape(()), loss_g.detach(), d_x, d_g_z]))
            if (i + 1) % FINITE_CHECK_EVERY == 0 or i + 1 == len(batcher):
                recent = torch.stack(rows[-FINITE_CHECK_EVERY:]).cpu()
                if not torch.isfinite(recent if adv > 0 else recent[:, 1]).all():  # D's columns: NaN when not run
                    nonfinite = True
                    break
                if progress:
                    bar.set_postfix(loss_d=f"{recent[-1, 0]:.3f}", loss_g=f"{recent[-1, 1]:.3f}")
            bar.update(1)
        bar.close()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        table = torch.stack(rows).cpu().double() if rows else torch.zeros(0, len(STEP_METRICS))
        first_step = state.step - len(rows) + 1
        steps = [(first_step + k, dict(zip(STEP_METRICS, map(float, row)))) for k, row in enumerate(table)]
        means = {name: float(table[:, j].mean()) if len(table) else math.nan for j, name in enumerate(STEP_METRICS)}
        means["images_per_sec"] = n_images / elapsed if elapsed > 0 else math.nan
        state.epoch = epoch
        report = EpochReport(epoch, means, steps, nonfinite)
        for hook in hooks:
            hook.after_epoch(state, report)
        yield report
        if nonfinite or report.stop is not None:
            return
