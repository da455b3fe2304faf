"""``PruneConfig``: what ``ganlab prune`` (and a pruning sweep's grid point) does, with its validation. No torch
here: the CLI builds its flags from it without importing torch (``--help`` stays fast)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ganlab.config import (
    AMOUNT_KEYS,
    DENSITIES,
    MASK_UPDATES,
    MAX_SAMPLES,
    METHODS,
    MIN_EVAL_SAMPLES,
    brief,
    check_choice,
    check_range,
    field_values,
    fields_in,
    setting,
)
from ganlab.errors import ConfigError

TARGETS = ("generator", "discriminator", "both")
SCHEDULES = ("oneshot", "agp")
OPTIMIZER_STATES = ("reset", "keep")
LR_SCHEDULES = ("constant", "cosine")
MIN_EVAL_DRAWS = 2
MAX_EVAL_DRAWS = 100  # each draw scores --samples images twice; 100 already narrows the interval as far as it goes


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
                               choices=MASK_UPDATES, group="sparse")
    density: str = setting("uniform", "with --method sparse: the same density in every layer (uniform) or "
                           "Erdos-Renyi-Kernel layer densities with erk", choices=DENSITIES, group="sparse")
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
                                 "(distillation from the dense generator); 0: adversarial loss alone", group="finetune")
    distill_feat: float = setting(0.0, "fine-tuning adds distill_feat * the L1 distance of every hidden block's "
                                  "activations to the dense generator's; not for channel pruning", group="finetune")
    schedule: str = setting("oneshot", "oneshot: prune, then fine-tune; agp: prune gradually during fine-tuning "
                            "along Zhu & Gupta's cubic schedule, --prune-steps cuts --prune-every steps apart",
                            choices=SCHEDULES, group="finetune")
    prune_steps: int = setting(5, "with --schedule agp: how many pruning cuts")
    prune_every: int | None = setting(None, "with --schedule agp: fine-tuning steps between cuts (default: the "
                                      "cuts spread over the first 75% of the fine-tuning)")
    lr_scale: float = setting(1.0, "fine-tuning learning rates = the training ones times this", group="finetune")
    optimizer_state: str = setting("reset", "fine-tuning starts with fresh Adam moments with reset, the source's "
                                   "with keep", choices=OPTIMIZER_STATES, group="finetune")
    adv_weight: float = setting(1.0, "weight of the adversarial term in the generator's fine-tuning loss; 0: "
                                "distillation alone, and the discriminator is then neither run nor updated",
                                group="finetune")
    d_lr_scale: float = setting(1.0, "the discriminator's fine-tuning learning rate = lr_d * lr_scale * this, "
                                "to slow D alone", group="finetune")
    lr_schedule: str = setting("constant", "fine-tuning learning rates: constant, or cosine decay to 0 over the "
                               "fine-tuning steps, torch's CosineAnnealingLR", choices=LR_SCHEDULES,
                               group="finetune")
    hold_d_steps: int = setting(0, "the discriminator is held (not updated) for the first N fine-tuning steps",
                                group="finetune")
    control: bool = setting(False, "a dense control: prune nothing (the amount must be 0), fine-tune exactly as "
                            "the other points, so a pruned point is compared with the same extra training")
    eval_draws: int = setting(5, f"evaluation-noise draws: each scores --samples images of the pruned and the "
                              f"dense generator on the same noise (paired); {MIN_EVAL_DRAWS} to {MAX_EVAL_DRAWS}")

    def __post_init__(self) -> None:
        self.validate()  # a PruneConfig is valid from birth: no caller checks it again

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
            check_range("q", self.q, low=0.0, high=100.0, ends="[)")
        elif self.method == "sparse":
            check_range("sparsity", self.sparsity, low=0.0, high=1.0, ends="[)")
        else:
            check_range("ratio", self.ratio, low=0.0, high=1.0, ends="[)")
        check_range("finetune_epochs", self.finetune_epochs, low=0, integer=True)
        check_range("iterative_steps", self.iterative_steps, low=1, integer=True)
        check_range("samples", self.samples, low=MIN_EVAL_SAMPLES, high=MAX_SAMPLES, integer=True)
        for name in ("bn_recalibrate", "control"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {brief(getattr(self, name))}")
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
        check_range("lr_scale", self.lr_scale, low=0.0, ends="(]")
        check_choice("optimizer_state", self.optimizer_state, OPTIMIZER_STATES)
        check_range("hold_d_steps", self.hold_d_steps, low=0, integer=True)
        check_range("eval_draws", self.eval_draws, low=MIN_EVAL_DRAWS, high=MAX_EVAL_DRAWS, integer=True)
        check_choice("mask_update", self.mask_update, MASK_UPDATES)
        check_choice("density", self.density, DENSITIES)
        check_range("adv_weight", self.adv_weight, low=0.0)
        check_range("d_lr_scale", self.d_lr_scale, low=0.0, ends="(]")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        tuned = self.finetune_epochs > 0
        changed = [name for name in FINETUNE if getattr(self, name) != FINETUNE_DEFAULTS[name]]
        if not tuned and changed:
            raise ConfigError(f"{', '.join(changed)}: fine-tuning settings ({', '.join(FINETUNE)}) need "
                              "finetune_epochs >= 1")
        if self.adv_weight == 0 and not (self.distill_out or self.distill_feat):
            raise ConfigError("adv_weight 0 leaves the generator no loss: give distill_out or distill_feat")
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
        if self.method != "sparse" and self.density != "uniform":
            raise ConfigError("density is how a generator trained sparse (method sparse) spreads its zeros")
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
        if self.adv_weight != 1.0:
            parts.append(f"adv x{self.adv_weight:g}")
        if self.d_lr_scale != 1.0:
            parts.append(f"D lr x{self.d_lr_scale:g}")
        if self.lr_schedule != "constant":
            parts.append(self.lr_schedule)
        if self.rewind_epoch is not None:
            parts.append("rewound")
        return " + ".join(parts)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> PruneConfig:
        """The config a prune run logged (``to_params``; MLflow keeps strings) read back, validated as a new one:
        ``PruneConfig.from_params({k: str(v) for k, v in c.to_params().items()}) == c``."""
        values = {**params, **({"prune_every": "none"} if params.get("prune_every") == "auto" else {})}
        return cls(**field_values(cls, values))

    def to_params(self) -> dict:
        params = {"method": self.method, "target": self.target, "finetune_epochs": self.finetune_epochs,
                  "iterative_steps": self.iterative_steps, "samples": self.samples,
                  "bn_recalibrate": self.bn_recalibrate, AMOUNT_KEYS[self.method]: self.amount,
                  "rewind_epoch": "none" if self.rewind_epoch is None else self.rewind_epoch,
                  "eval_draws": self.eval_draws, "control": self.control, "recovery": self.recovery}
        if self.finetune_epochs:
            params.update({name: getattr(self, name) for name in FINETUNE})
            if self.schedule == "agp":
                params.update(prune_steps=self.prune_steps, prune_every=self.prune_every or "auto")
        if self.method == "sparse":
            params.update({name: getattr(self, name) for name in fields_in(PruneConfig, "sparse")})
        return params


FINETUNE = fields_in(PruneConfig, "finetune")  # every fine-tuning setting: checks, params, run names, controls
FINETUNE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PruneConfig) if f.name in FINETUNE}
