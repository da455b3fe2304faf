"""Configuration dataclasses, one per concern, with the seed's defaults and validation.

The seed trained CIFAR-10 for 30 epochs (lr_d 2e-4, lr_g 3e-4) and Fashion-MNIST for 15 epochs
(lr_d 1e-4, lr_g 3e-4), both with Adam(0.5, 0.999) and batch 128. Fields left as ``None`` take
those per-dataset defaults when the config is resolved.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ganlab.errors import ConfigError

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 15, "lr_d": 1e-4, "lr_g": 3e-4},
    "cifar10": {"epochs": 30, "lr_d": 2e-4, "lr_g": 3e-4},
}
DATASET_CHANNELS = {"fashion-mnist": 1, "cifar10": 3}
IMAGE_SIZES = (32, 64)
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    """Everything that determines a training run; logged whole as MLflow params."""

    dataset: str = "fashion-mnist"
    image_size: int = 64
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    epochs: int | None = None
    batch_size: int = 128
    lr_d: float | None = None
    lr_g: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    d_steps: int = 1  # discriminator updates per generator update
    label_smoothing: float = 0.0  # real label = 1 - label_smoothing (one-sided smoothing)
    seed: int = 0
    limit: int | None = None  # train on a fixed random subset of this many images
    eval_every: int = 0  # evaluate fcd/kid/coverage every K epochs (0: never)
    eval_samples: int = 1000
    device: str = "auto"

    @property
    def nc(self) -> int:
        return DATASET_CHANNELS[self.dataset]

    def resolved(self) -> "TrainConfig":
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
        for name in ("nz", "ngf", "ndf", "epochs", "batch_size", "d_steps", "eval_samples"):
            check_range(name, getattr(self, name), low=1, integer=True)
        for name in ("lr_d", "lr_g"):
            check_range(name, getattr(self, name), low=0.0, low_open=True)
        for name in ("beta1", "beta2", "label_smoothing"):
            check_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        check_range("eval_every", self.eval_every, low=0, integer=True)
        check_range("seed", self.seed, low=0, integer=True)
        if self.limit is not None:
            check_range("limit", self.limit, low=1, integer=True)

    def to_params(self) -> dict[str, Any]:
        """Flat dict for MLflow params (None shown as 'none' so the UI column is filled)."""
        params = {k: ("none" if v is None else v) for k, v in dataclasses.asdict(self).items()}
        params["nc"] = self.nc
        return params


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
