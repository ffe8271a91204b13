"""Starting a training run from another run's checkpoint: its weights, Adam state and step.

``train.init_from`` continues a world model on other data (the model-based loop); the Noether
phase's ``noether.init_from`` meta-trains from a baseline, so that Noether and the more-steps
control share the same E₁ model and optimiser state.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import torch

from noether_control.models.checkpoint import (
    load_state_checked,
    model_config_from,
    read_checkpoint,
)
from noether_control.models.svg import RUN_TIME_FIELDS, SVGWorldModel


def extend_optimizer_state(
    baseline: dict[str, Any], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """A baseline optimizer state (model parameters only) extended to ``optimizer``'s groups.

    ``optimizer``'s first group must hold the model parameters in the baseline's order, later
    groups (g_φ, inner lr) start without state. Load the result with ``load_state_dict``.
    """
    own = optimizer.state_dict()
    if len(baseline["param_groups"]) != 1 or len(baseline["param_groups"][0]["params"]) != len(
        own["param_groups"][0]["params"]
    ):
        raise ValueError(
            "init_from: expected a baseline optimizer with one group of "
            f"{len(own['param_groups'][0]['params'])} model parameters, got "
            f"{[len(group['params']) for group in baseline['param_groups']]}"
        )
    return {"state": baseline["state"],
            "param_groups": baseline["param_groups"] + own["param_groups"][1:]}


def _architecture(model_config: dict[str, Any]) -> dict[str, Any]:
    """A model config without the fields a continued run may change (``RUN_TIME_FIELDS``)."""
    return {key: value for key, value in model_config.items() if key not in RUN_TIME_FIELDS}


def init_from_baseline(
    path: str | os.PathLike[str], model: SVGWorldModel, optimizer: torch.optim.Optimizer,
    setting: str = "noether.init_from",
) -> int:
    """Start a run from a baseline checkpoint: its weights, Adam moments and step.

    ``optimizer``'s first group must hold ``model``'s parameters (later groups, if any: g_φ).
    Raises ``ValueError`` naming ``setting`` when the checkpoint's architecture differs from
    ``model``'s; the run-time fields (``model.feedback``, ``model.reward_output``) may differ.
    Returns the checkpoint's step, where training continues.
    """
    payload = read_checkpoint(path, "cpu")
    source = f"{setting} {str(path)!r}"
    stored_config = asdict(model_config_from(payload["model_config"], source))
    own, stored = (_architecture(config) for config in (model.config_dict(), stored_config))
    if stored != own:
        raise ValueError(f"{source}: expected the architecture of this run {own}, got {stored}")
    load_state_checked(model, payload["model"], source)
    if payload.get("optimizer") is not None:
        optimizer.load_state_dict(extend_optimizer_state(payload["optimizer"], optimizer))
    return int(payload["step"])
