"""Checkpoints: plain dicts of tensors and numbers, written atomically, read with weights_only=True.

A checkpoint holds G, D, both optimizers, the config, the epoch and the RNG states, so
``ganlab train --resume`` continues exactly where a run stopped. Loading never unpickles code:
a checkpoint from elsewhere cannot run anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ganlab.config import TrainConfig, check_architecture, config_from_dict, default_widths
from ganlab.errors import CheckpointError, ConfigError
from ganlab.files import write_atomic

FORMAT_KEY = "ganlab_checkpoint"
FORMAT_VERSION = 1


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save ``obj`` to ``path`` through ``write_atomic``."""
    return write_atomic(lambda f: torch.save(obj, f), path)


def make_checkpoint(state, *, pruned: bool = False) -> dict[str, Any]:
    """The checkpoint dict of a ganlab.gan.loop.TrainingState."""
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "config": dataclasses.asdict(state.config),
        "epoch": state.epoch,
        "step": state.step,
        "pruned": pruned,
        # channel-pruned nets have other widths than the config's: the checkpoint says which
        "widths": {"generator": state.generator.widths, "discriminator": state.discriminator.widths},
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "opt_g": state.opt_g.state_dict() if state.opt_g is not None else None,
        "opt_d": state.opt_d.state_dict() if state.opt_d is not None else None,
        "noise_rng": state.noise_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        # each training hook's own state (a plateau count, a pruning schedule, a sparse mask): see ganlab.gan.loop.Hook
        "hooks": {h.name: h.state_dict() for h in getattr(state, "hooks", ())},
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a ganlab checkpoint; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read safely: {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get(FORMAT_KEY) != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} is not a ganlab checkpoint (format {FORMAT_VERSION})")
    missing = [k for k in ("config", "epoch", "step", "generator", "discriminator") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no {missing[0]!r} entry: it is incomplete or not ganlab's")
    widths = ckpt.get("widths")
    if widths is not None and not isinstance(widths, dict):
        raise CheckpointError(f"checkpoint {path} has bad layer widths: {str(widths)[:80]}")
    try:
        ckpt["config"] = config_from_dict(TrainConfig, ckpt["config"], where=f"checkpoint {path}").resolved()
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a bad config: {exc}") from None
    cfg = ckpt["config"]
    for net, generator in (("generator", True), ("discriminator", False)):
        if widths is not None and net in widths:  # the config's layer count, bounded before any net is built
            try:
                check_architecture(f"checkpoint {path}: its {net}", widths[net], nc=cfg.nc,
                                   nz=cfg.nz if generator else None,
                                   hidden=len(default_widths(1, cfg.image_size, generator=generator)))
            except ConfigError as exc:
                raise CheckpointError(str(exc)) from None
    return ckpt


def load_state_dict_checked(module: torch.nn.Module, state_dict: dict, what: str) -> None:
    """load_state_dict(strict=True), turning a key/shape mismatch into a one-line CheckpointError."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:200]
        raise CheckpointError(f"{what} does not match the model: {detail}") from None
