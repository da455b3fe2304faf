"""Configuration dataclasses, one per concern, with the seed's defaults and validation.

The seed trained CIFAR-10 for 30 epochs (lr_d 2e-4, lr_g 3e-4) and Fashion-MNIST for 15 epochs
(lr_d 1e-4, lr_g 3e-4), both with Adam(0.5, 0.999) and batch 128. Fields left as ``None`` take
those per-dataset defaults when the config is resolved.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from ganlab.errors import ConfigError

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 15, "lr_d": 1e-4, "lr_g": 3e-4},
    "cifar10": {"epochs": 30, "lr_d": 2e-4, "lr_g": 3e-4},
}
DATASET_CHANNELS = {"fashion-mnist": 1, "cifar10": 3}
IMAGE_SIZES = (32, 64)
MASK_UPDATES = ("set", "rigl")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Pruning methods and the amount each takes (here, torch-free, so analysis can read them too)
AMOUNT_KEYS = {"sensitivity": "s", "percentage": "q", "channel": "ratio", "sparse": "sparsity"}
METHODS = tuple(AMOUNT_KEYS)

# The scoring classifier's feature size; FCD's covariance of those features needs more samples than
# dimensions to be full rank, so every evaluation scores at least MIN_EVAL_SAMPLES images.
CLASSIFIER_FEATURES = 128
MIN_EVAL_SAMPLES = CLASSIFIER_FEATURES + 1


def setting(default: Any, help: str, *, choices: tuple | None = None, required: bool = False) -> Any:
    """A config field that also describes its command-line flag (see ``add_config_arguments``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "required": required})


@dataclass
class TrainConfig:
    """Everything that determines a training run; logged whole as MLflow params, one flag per field."""

    dataset: str = setting("fashion-mnist", "dataset to train on", choices=tuple(DATASET_DEFAULTS))
    image_size: int = setting(64, "image side in pixels: 64 is the seed's nets, 32 drops one block, "
                              "practical on a CPU", choices=IMAGE_SIZES)
    nz: int = setting(100, "latent (noise) size")
    ngf: int = setting(64, "generator width")
    ndf: int = setting(64, "discriminator width")
    epochs: int | None = setting(None, "epochs to train (default: the dataset's, 15 Fashion-MNIST, 30 CIFAR-10)")
    batch_size: int = setting(128, "images per step")
    lr_d: float | None = setting(None, "discriminator learning rate (default: the dataset's, 1e-4 "
                                 "Fashion-MNIST, 2e-4 CIFAR-10)")
    lr_g: float | None = setting(None, "generator learning rate (default: the dataset's, 3e-4)")
    beta1: float = setting(0.5, "Adam beta1")
    beta2: float = setting(0.999, "Adam beta2")
    d_steps: int = setting(1, "discriminator updates per generator update")
    label_smoothing: float = setting(0.0, "one-sided label smoothing: the real label is 1 - this")
    seed: int = setting(0, "seeds the weights, the noise, the batch order and the --limit subset")
    limit: int | None = setting(None, "train on a fixed random subset of N images (default: the whole train split)")
    eval_every: int = setting(0, "log fcd/kid/coverage/class_kl every K epochs, 0 for never")
    rewind_epoch: int | None = setting(None, "also keep the weights after epoch E (0: the initial weights) as "
                                       "checkpoints/rewind_epoch_E.pt, for lottery-ticket rewinding "
                                       "(ganlab prune --rewind-epoch E)")
    patience: int = setting(0, "stop once fcd has not improved for N evaluations in a row: train until FCD stops "
                            "improving, --epochs being the cap; needs --eval-every, and 0 never stops")
    eval_samples: int = setting(1000, f"generated images per evaluation, at least {CLASSIFIER_FEATURES + 1}")
    device: str = setting("auto", "where to train; auto picks cuda, then mps, then cpu", choices=DEVICES)
    amp: bool | None = setting(None, "bf16 autocast for the forward passes (default: on for CUDA, off elsewhere; "
                               "it runs on the CPU too)")
    channels_last: bool | None = setting(None, "channels-last memory format for models and batches (default: on "
                                         "for CUDA, off elsewhere)")
    compile: bool = setting(False, "torch.compile the forward passes: seconds to minutes of compiling first, "
                            "pays on long GPU runs")
    sparsity: float = setting(0.0, "sparse-to-sparse training (STU-GAN's route): the generator's conv layers keep "
                              "this fraction of zeros from the first step, with a dynamic mask; 0 trains dense")
    mask_update: str = setting("set", "how a sparse run's mask changes every --update-every steps: drop the "
                               "smallest |w| and regrow as many at random (set) or where |gradient| is largest "
                               "(rigl); needs --sparsity", choices=MASK_UPDATES)
    update_every: int = setting(100, "generator steps between mask updates of a sparse run; the fraction dropped "
                                "decays from 0.3 to 0 over the first 75% of training")
    sparse_d: bool = setting(False, "with --sparsity: train the discriminator sparse too")

    @property
    def nc(self) -> int:
        return DATASET_CHANNELS[self.dataset]

    def resolved(self) -> TrainConfig:
        """Return a copy with per-dataset defaults filled in; raises ConfigError on a bad value."""
        check_choice("dataset", self.dataset, tuple(DATASET_DEFAULTS))
        defaults = DATASET_DEFAULTS[self.dataset]
        cfg = dataclasses.replace(
            self, **{k: v for k, v in defaults.items() if getattr(self, k) is None}
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        check_choice("dataset", self.dataset, tuple(DATASET_DEFAULTS))
        check_choice("image_size", self.image_size, IMAGE_SIZES)
        check_choice("device", self.device, DEVICES)
        for name in ("nz", "ngf", "ndf", "epochs", "batch_size", "d_steps"):
            check_range(name, getattr(self, name), low=1, integer=True)
        check_range("eval_samples", self.eval_samples, low=MIN_EVAL_SAMPLES, integer=True)
        for name in ("lr_d", "lr_g"):
            check_range(name, getattr(self, name), low=0.0, low_open=True)
        for name in ("beta1", "beta2", "label_smoothing"):
            check_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        check_range("eval_every", self.eval_every, low=0, integer=True)
        check_range("sparsity", self.sparsity, low=0.0, high=1.0, high_open=True)
        check_choice("mask_update", self.mask_update, MASK_UPDATES)
        check_range("update_every", self.update_every, low=1, integer=True)
        check_range("patience", self.patience, low=0, integer=True)
        if self.rewind_epoch is not None:
            check_range("rewind_epoch", self.rewind_epoch, low=0, high=self.epochs, high_open=True, integer=True)
        if self.patience and not self.eval_every:
            raise ConfigError("patience needs eval_every >= 1: it counts evaluations without an fcd improvement")
        check_range("seed", self.seed, low=0, integer=True)
        if self.limit is not None:
            check_range("limit", self.limit, low=1, integer=True)
        for name in ("amp", "channels_last", "compile", "sparse_d"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name not in ("compile", "sparse_d"))):
                raise ConfigError(f"{name} must be true or false, got {value!r}")

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrainConfig:
        """The config a train run logged (``to_params``, MLflow keeps strings) read back: a pruning sweep reads
        its sources' configs from their params instead of downloading whole checkpoints."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in params:
                continue
            raw, kinds = params[f.name], [a for a in typing.get_args(hints[f.name]) if a is not type(None)] \
                or [hints[f.name]]
            if raw == "none":
                values[f.name] = None
            elif kinds[0] is bool:
                values[f.name] = raw == "True"
            else:
                values[f.name] = kinds[0](raw)
        return config_from_dict(cls, values, where="run params").resolved()

    def to_params(self) -> dict[str, Any]:
        """Flat dict for MLflow params (None shown as 'none' so the UI column is filled)."""
        params = {k: ("none" if v is None else v) for k, v in dataclasses.asdict(self).items()}
        params["nc"] = self.nc
        return params


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


# what ``ganlab train --resume`` may change; every other setting is the checkpoint's
RESUMABLE = ("epochs", "device", "eval_every", "eval_samples", "patience", "amp", "channels_last", "compile")


def resumed_config(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """``saved`` (a checkpoint's config) with the RESUMABLE settings in ``given``; ConfigError on a conflict."""
    for name, value in given.items():
        if name not in RESUMABLE and value != getattr(saved, name):
            raise ConfigError(f"{name}={value!r} conflicts with the checkpoint's {name}={getattr(saved, name)!r}: "
                              f"a resumed run keeps its config (only {', '.join(RESUMABLE)} may change)")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE}).resolved()


def config_from_dict(cls, values: dict[str, Any], *, where: str = "config"):
    """Build dataclass ``cls`` from ``values``; an unknown key raises ConfigError naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(known))}"
        )
    return cls(**values)


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {shown}")


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a finite number inside the stated interval."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is not valid; it must be {kind}")
    lo_bad = low is not None and (value <= low if low_open else value < low)
    hi_bad = high is not None and (value >= high if high_open else value > high)
    if lo_bad or hi_bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{name}={value!r} is out of range; it must be in {left}{lo}, {hi}{right}")


def add_config_arguments(parser, cls) -> None:
    """One ``--flag`` per field of dataclass ``cls`` (made with ``setting``), type and help from the field.

    Every flag defaults to None, so ``given_values`` tells which ones the user set; values are
    validated by the dataclass, not by argparse, so a bad one gets the same message everywhere.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if args else kind
        help_text = meta["help"]
        if f.default is not None and not meta.get("required"):
            shown = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
            help_text += f" (default: {shown})"
        choices = meta.get("choices")
        metavar = "{" + ",".join(str(c) for c in choices) + "}" if choices else None
        if kind is bool:  # --flag / --no-flag, None when neither is given
            flag = f.name.replace("_", "-")
            group = parser.add_mutually_exclusive_group()
            group.add_argument(f"--{flag}", dest=f.name, action="store_const", const=True, default=None,
                               help=help_text.replace("%", "%%"))
            group.add_argument(f"--no-{flag}", dest=f.name, action="store_const", const=False, default=None,
                               help=f"the opposite of --{flag}")
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                            required=meta.get("required", False), metavar=metavar,
                            help=help_text.replace("%", "%%"))


def given_values(args, cls) -> dict[str, Any]:
    """The fields of ``cls`` the user set on the command line (see ``add_config_arguments``)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
