"""World-model checkpoints: state dicts, the resolved config and the package version.

A checkpoint is a plain dict saved with :func:`torch.save` and loaded with
``torch.load(weights_only=True)`` — never a pickled object, so loading runs no code and a
checkpoint survives refactors of the classes. Layout::

    {"format": "noether-control/svg-world-model", "format_version": 1,
     "package_version": str, "model_config": SVGConfig as dict, "model": state dict,
     "optimizer": state dict | None, "step": int, "config": resolved run config (dict),
     "rng": {"torch": ByteTensor, "numpy": dict, "python": tuple, "cuda": [ByteTensor]}, ...}
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from noether_control import __version__
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.runtime import atomic_torch_save

FORMAT = "noether-control/svg-world-model"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: SVGWorldModel,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: dict[str, Any],
    rng: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``path`` and return it.

    ``model`` may be wrapped (DDP): the unwrapped module's state dict is stored. ``config`` is
    the resolved run config as a plain dict (it must hold the data settings, e.g.
    ``config["data"]["path"]``, so evaluation can find the test split). ``rng`` holds the RNG
    states to restore on resume; ``extra`` any further plain data (metrics, best loss).
    """
    module = getattr(model, "module", model)
    if not isinstance(module, SVGWorldModel):
        raise TypeError(f"model: expected an SVGWorldModel, got {type(module).__name__}")
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a plain dict (resolved), got {type(config).__name__}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model_config": module.config_dict(),
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "config": config,
        "rng": rng,
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint's dict, raising ``ValueError`` for a missing, corrupt or foreign file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"checkpoint: expected a file, got {str(file)!r} (no such file)")
    try:
        payload = torch.load(file, map_location=device, weights_only=True)
    # torch's legacy (non-zip) reader fails on foreign bytes with whatever its parser hits
    # (IndexError, KeyError, ...), so every failure to read is a bad file here.
    except Exception as error:
        raise ValueError(
            f"checkpoint {str(file)!r} is corrupt or not a torch file ({_load_failure(error)}); "
            "expected a file written by `noether-control train`"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"checkpoint {str(file)!r}: expected format {FORMAT!r}, got {found!r}"
        )
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(file)!r}: expected format_version {FORMAT_VERSION}, got "
            f"{payload.get('format_version')!r} (written by noether-control "
            f"{payload.get('package_version')!r}, this is {__version__})"
        )
    return payload


def _load_failure(error: Exception) -> str:
    """The cause in torch's load error, in one short line.

    ``weights_only`` loading wraps the cause in a paragraph that suggests loading with
    ``weights_only=False`` (running the file's code): only the unpickler's own words are kept.
    """
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = lines[0] if lines else type(error).__name__
    return cause if len(cause) <= 160 else cause[:157] + "..."


# Fields SVGConfig gained after checkpoints were written without them, each with the value that
# builds those checkpoints' models as they were trained: such a checkpoint still loads.
LATER_FIELDS: dict[str, Any] = {"reward_input": "hidden", "reward_output": "reward"}


def model_config_from(stored: dict[str, Any], source: str = "checkpoint") -> SVGConfig:
    """Build an :class:`SVGConfig` from a stored dict, naming unknown or missing fields (fields
    added since the checkpoint was written take their earlier behaviour, ``LATER_FIELDS``)."""
    stored = LATER_FIELDS | stored
    known = {field.name for field in fields(SVGConfig)}
    unknown = sorted(set(stored) - known)
    missing = sorted(known - set(stored))
    if unknown or missing:
        raise ValueError(
            f"{source}: model config does not match this version's SVGConfig "
            f"(unknown fields {unknown}, missing fields {missing})"
        )
    return SVGConfig(**stored)


def load_state_checked(model: SVGWorldModel, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with an error naming every missing/extra/resized tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    resized = [
        f"{name}: expected {tuple(own[name].shape)}, got {tuple(state[name].shape)}"
        for name in sorted(set(own) & set(state))
        if own[name].shape != state[name].shape
    ]
    if missing or unexpected or resized:
        raise ValueError(
            f"{source}: weights do not fit the model built from its config; "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {resized[:5]}"
        )
    model.load_state_dict(state)


def load_world_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[SVGWorldModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint, in eval mode on ``device``, and its resolved config.

    Returns ``(model, config)``; ``config`` is the run's resolved config dict (``config["data"]``
    holds ``path``, ``n_past``, ``n_future``…). Raises ``ValueError`` for a corrupt file, a file
    of another format, or weights that do not fit the stored model config.
    """
    payload = read_checkpoint(path, device)
    return model_from_payload(payload, path, device), payload["config"]


def model_from_payload(
    payload: dict[str, Any], path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> SVGWorldModel:
    """The world model of a checkpoint dict read from ``path`` (:func:`read_checkpoint`), in
    eval mode on ``device``; ``ValueError`` naming ``path`` when the weights do not fit."""
    source = f"checkpoint {str(path)!r}"
    model = SVGWorldModel(model_config_from(payload["model_config"], source))
    load_state_checked(model, payload["model"], source)
    return model.to(device).eval()
