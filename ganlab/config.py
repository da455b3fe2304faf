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

import yaml

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
DENSITIES = ("uniform", "erk")
AMOUNT_KEYS = {"sensitivity": "s", "percentage": "q", "channel": "ratio", "sparse": "sparsity"}
METHODS = tuple(AMOUNT_KEYS)

# The scoring classifier's feature size; FCD's covariance of those features needs more samples than
# dimensions to be full rank, so every evaluation scores at least MIN_EVAL_SAMPLES images.
CLASSIFIER_FEATURES = 128
MIN_EVAL_SAMPLES = CLASSIFIER_FEATURES + 1
MAX_SAMPLES = 200_000  # images one evaluation scores (20x the seed's 10,000; bounded so a typo is not an OOM)
# The largest net ganlab builds: 10x the seed's widest (64 px, ngf 64: 3.6M parameters in G). Every width a
# config, a checkpoint or a compressed file's header declares is checked against it before anything is allocated.
MAX_NET_PARAMS = 100_000_000
MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take it


def default_widths(width: int, image_size: int, *, generator: bool) -> list[int]:
    """Hidden channel counts of the seed's nets, in forward order: G (ngf*8, *4, *2, ngf), D (ndf .. ndf*8).

    At 32 px the widest block is dropped. Channel pruning makes other widths; checkpoints store them.
    """
    if image_size not in (32, 64):
        raise ValueError(f"image_size must be 32 or 64, got {image_size}")
    multiples = [8, 4, 2, 1] if generator else [1, 2, 4, 8]
    if image_size == 32:
        multiples = multiples[1:] if generator else multiples[:-1]
    return [width * m for m in multiples]


def net_params(widths: list[int], *, nc: int, nz: int | None = None) -> int:
    """Parameters of a DCGAN with these hidden widths: 4x4 convolutions between the channels in order (noise
    ``nz`` -> widths -> image ``nc`` for a generator; image -> widths -> one logit for a discriminator, nz None)
    and a BatchNorm (2 per channel) after each hidden one but a discriminator's first. Plain integer arithmetic:
    nothing is allocated."""
    channels = [nz, *widths, nc] if nz is not None else [nc, *widths, 1]
    normed = widths if nz is not None else widths[1:]
    return sum(16 * a * b for a, b in zip(channels, channels[1:])) + 2 * sum(normed)


def check_architecture(what: str, widths: Any, *, nc: int, nz: int | None = None, hidden: int | None = None) -> None:
    """ConfigError (one line) unless ``widths`` are positive integers (``hidden`` of them, if given) of a net
    of at most MAX_NET_PARAMS parameters."""
    if not (isinstance(widths, list) and widths and all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                        for c in widths)):
        raise ConfigError(f"{what}: layer widths must be a list of positive integers, got {str(widths)[:80]}")
    if hidden is not None and len(widths) != hidden:
        raise ConfigError(f"{what} does not match its config: {len(widths)} hidden layers, its image size has "
                          f"{hidden}")
    if nz is not None and not (isinstance(nz, int) and nz > 0):
        raise ConfigError(f"{what}: nz must be a positive integer, got {str(nz)[:40]}")
    n = net_params(widths, nc=nc, nz=nz)
    if n > MAX_NET_PARAMS:
        shown = f"nz {nz}, " if nz is not None else ""
        raise ConfigError(f"{what}: {shown}widths {str(widths)[:60]} make {n:,} parameters; ganlab builds nets of "
                          f"at most {MAX_NET_PARAMS:,} (the seed's generator has 3.6 million)")


def setting(default: Any, help: str, *, choices: tuple | None = None, required: bool = False,
            group: str | None = None) -> Any:
    """A config field that also describes its command-line flag (see ``add_config_arguments``); ``group`` names
    the settings that belong together (``fields_in``: the lists, checks and docs derived from it)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "required": required,
                                                        "group": group})


def fields_in(cls, group: str) -> tuple[str, ...]:
    """The names of ``cls``'s settings in ``group``, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("group") == group)


@dataclass
class TrainConfig:
    """Everything that determines a training run; logged whole as MLflow params, one flag per field."""

    dataset: str = setting("fashion-mnist", "dataset to train on", choices=tuple(DATASET_DEFAULTS))
    image_size: int = setting(64, "image side in pixels: 64 is the seed's nets, 32 drops one block, "
                              "practical on a CPU", choices=IMAGE_SIZES)
    nz: int = setting(100, "latent (noise) size")
    ngf: int = setting(64, "generator width")
    ndf: int = setting(64, "discriminator width")
    epochs: int | None = setting(None, "epochs to train (default: the dataset's, 15 Fashion-MNIST, 30 CIFAR-10)",
                                 group="resume")
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
    eval_every: int = setting(0, "log fcd/kid/coverage/class_kl every K epochs, 0 for never", group="resume")
    rewind_epoch: int | None = setting(None, "also keep the weights after epoch E (0: the initial weights) as "
                                       "checkpoints/rewind_epoch_E.pt, for lottery-ticket rewinding "
                                       "(ganlab prune --rewind-epoch E)")
    patience: int = setting(0, "stop once fcd has not improved for N evaluations in a row: train until FCD stops "
                            "improving, --epochs being the cap; needs --eval-every, and 0 never stops",
                            group="resume")
    eval_samples: int = setting(1000, f"generated images per evaluation, at least {CLASSIFIER_FEATURES + 1}",
                                group="resume")
    device: str = setting("auto", "where to train; auto picks cuda, then mps, then cpu", choices=DEVICES,
                          group="resume")
    amp: bool | None = setting(None, "bf16 autocast for the forward passes (default: on for CUDA, off elsewhere; "
                               "it runs on the CPU too)", group="resume")
    channels_last: bool | None = setting(None, "channels-last memory format for models and batches (default: on "
                                         "for CUDA, off elsewhere)", group="resume")
    compile: bool = setting(False, "torch.compile the forward passes: seconds to minutes of compiling first, "
                            "pays on long GPU runs", group="resume")
    sparsity: float = setting(0.0, "sparse-to-sparse training (STU-GAN's route): the generator's conv layers keep "
                              "this fraction of zeros from the first step, with a dynamic mask; 0 trains dense")
    mask_update: str = setting("set", "how a sparse run's mask changes every --update-every steps: drop the "
                               "smallest |w| and regrow as many at random (set) or where |gradient| is largest "
                               "(rigl); needs --sparsity", choices=MASK_UPDATES)
    update_every: int = setting(100, "generator steps between mask updates of a sparse run; the fraction dropped "
                                "decays from 0.3 to 0 over the first 75% of training")
    sparse_d: bool = setting(False, "with --sparsity: train the discriminator sparse too")
    density: str = setting("uniform", "how a sparse run spreads its zeros over the layers: the same density in "
                           "every layer (uniform) or Erdos-Renyi-Kernel (erk): density proportional to the sum of a "
                           "layer's dimensions over their product, as in Evci et al.'s best RigL results",
                           choices=DENSITIES)

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
        check_range("eval_samples", self.eval_samples, low=MIN_EVAL_SAMPLES, high=MAX_SAMPLES, integer=True)
        check_architecture("generator", default_widths(self.ngf, self.image_size, generator=True),
                           nc=self.nc, nz=self.nz)
        check_architecture("discriminator", default_widths(self.ndf, self.image_size, generator=False), nc=self.nc)
        for name in ("lr_d", "lr_g"):
            check_range(name, getattr(self, name), low=0.0, ends="(]")
        for name in ("beta1", "beta2", "label_smoothing"):
            check_range(name, getattr(self, name), low=0.0, high=1.0, ends="[)")
        check_range("eval_every", self.eval_every, low=0, integer=True)
        check_range("sparsity", self.sparsity, low=0.0, high=1.0, ends="[)")
        check_choice("mask_update", self.mask_update, MASK_UPDATES)
        check_choice("density", self.density, DENSITIES)
        check_range("update_every", self.update_every, low=1, integer=True)
        check_range("patience", self.patience, low=0, integer=True)
        if self.rewind_epoch is not None:
            check_range("rewind_epoch", self.rewind_epoch, low=0, high=self.epochs, ends="[)", integer=True)
        if self.patience and not self.eval_every:
            raise ConfigError("patience needs eval_every >= 1: it counts evaluations without an fcd improvement")
        check_range("seed", self.seed, low=0, high=MAX_SEED, integer=True)
        if self.limit is not None:
            check_range("limit", self.limit, low=1, integer=True)
        for name in ("amp", "channels_last", "compile", "sparse_d"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name not in ("compile", "sparse_d"))):
                raise ConfigError(f"{name} must be true or false, got {brief(value)}")

    @classmethod
    def from_params(cls, params: dict[str, str]) -> TrainConfig:
        """The config a train run logged (``to_params``, MLflow keeps strings) read back: a pruning sweep reads
        its sources' configs from their params instead of downloading whole checkpoints."""
        return config_from_dict(cls, field_values(cls, params), where="run params").resolved()

    def to_params(self) -> dict[str, Any]:
        """Flat dict for MLflow params (None shown as 'none' so the UI column is filled)."""
        params = {k: ("none" if v is None else v) for k, v in dataclasses.asdict(self).items()}
        params["nc"] = self.nc
        return params


def field_values(cls, params: dict[str, str]) -> dict[str, Any]:
    """A config dataclass's fields from MLflow's string params (what its ``to_params`` logged): each converted to
    its field's type ("none" is None, "True"/"False" a bool); params that are not fields are left out."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in params:
            continue
        raw, kinds = str(params[f.name]), [a for a in typing.get_args(hints[f.name]) if a is not type(None)] \
            or [hints[f.name]]
        if raw == "none":
            values[f.name] = None
        elif kinds[0] is bool:
            values[f.name] = raw == "True"
        else:
            values[f.name] = kinds[0](raw)
    return values


# what ``ganlab train --resume`` may change (the settings in group "resume"); every other setting is the checkpoint's
RESUMABLE = fields_in(TrainConfig, "resume")


def flags(names: tuple[str, ...]) -> str:
    """``--a``, ``--b`` and ``--c``: settings' command-line flags, for a sentence of help."""
    shown = [f"--{name.replace('_', '-')}" for name in names]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def resumed_config(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """``saved`` (a checkpoint's config) with the RESUMABLE settings in ``given``; ConfigError on a conflict."""
    for name, value in given.items():
        if name not in RESUMABLE and value != getattr(saved, name):
            raise ConfigError(f"{name}={brief(value)} conflicts with the checkpoint's "
                              f"{name}={brief(getattr(saved, name))}: "
                              f"a resumed run keeps its config (only {', '.join(RESUMABLE)} may change)")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE}).resolved()


def config_from_dict(cls, values: dict[str, Any], *, where: str = "config"):
    """Build dataclass ``cls`` from ``values``; an unknown key raises ConfigError naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {brief(unknown[0])}; valid keys are {', '.join(sorted(known))}"
        )
    return cls(**values)


def brief(value: Any) -> str:
    """A value as error messages show it: its repr, bounded (reprlib) however large or deep the value is, so that
    a hostile input is never rendered whole."""
    import reprlib

    shown = reprlib.Repr()
    shown.maxlevel, shown.maxdict, shown.maxlist, shown.maxtuple, shown.maxset = 3, 4, 4, 4, 4
    shown.maxstring = shown.maxother = 40
    return shown.repr(value)


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases: a spec never needs ``*anchor`` references, and a few lines of them
    expand exponentially (a "billion laughs" file grew past 3 GB)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: an alias (*{str(event.anchor)[:20]}); "
                                 "ganlab's files take no anchors or aliases, write the values out")
        return super().compose_node(parent, index)


MAX_YAML_BYTES = 1 << 20


def read_yaml(path: Any, what: str) -> Any:
    """The YAML document in file ``path`` (``what`` names it in messages); ConfigError (one line) if it is
    missing, larger than 1 MiB, not UTF-8, not YAML, or uses aliases. Safe: tags like ``!!python/`` are refused."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is {path.stat().st_size:,} bytes; ganlab reads files up to 1 MiB")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") \
            from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(f"{what} {path} is not valid YAML: {first[:200]}") from None


def check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{name}={brief(value)} is not valid; choose one of: {shown}")


def check_range(name: str, value: Any, *, low: float | None = None, high: float | None = None, ends: str = "[]",
                integer: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a finite number inside the interval ``low``..``high``, whose ``ends``
    say, as a mathematician writes them, which bounds are open: "[]" closed, "(]" above low, "[)" below high."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ConfigError(f"{name}={brief(value)} is not valid; it must be {kind}")
    left, right = ends
    lo_bad = low is not None and (value <= low if left == "(" else value < low)
    hi_bad = high is not None and (value >= high if right == ")" else value > high)
    if lo_bad or hi_bad:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"{name}={brief(value)} is out of range; it must be in {left}{lo}, {hi}{right}")


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
