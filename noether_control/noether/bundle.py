"""A trained world model as ``noether-control train`` saved it: the model, its g_φ (Noether
checkpoints) and the run's config, read from one checkpoint file in one read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from noether_control.models.checkpoint import model_from_payload, read_checkpoint
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.meta import NoetherModule, load_noether


@dataclass
class TrainedBundle:
    """What a checkpoint holds, ready to use (every module in eval mode on one device)."""

    model: SVGWorldModel
    noether: NoetherModule | None
    """g_φ and the inner learning rate of a Noether checkpoint; ``None`` for a baseline."""
    config: dict[str, Any]
    """The resolved config of the run that trained it (``config["data"]`` says on what)."""
    step: int
    path: Path


def load_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> TrainedBundle:
    """Read a checkpoint file once and rebuild its world model and g_φ on ``device``.

    Raises ``ValueError`` naming ``path`` for a missing, corrupt or foreign file, or weights that
    do not fit the stored configs.
    """
    payload = read_checkpoint(path, device)
    model = model_from_payload(payload, path, device)
    return TrainedBundle(model=model, noether=load_noether(payload, model),
                         config=payload["config"], step=int(payload["step"]), path=Path(path))
