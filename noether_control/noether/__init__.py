"""Noether tailoring: the per-example inner loop shared by discovery and the world model."""

from noether_control.noether.tailoring import (
    ConservationLoss,
    InnerLearningRate,
    Params,
    TailoringConfig,
    expand_params,
    tailor,
    tailor_with_config,
)

__all__ = [
    "ConservationLoss",
    "InnerLearningRate",
    "Params",
    "TailoringConfig",
    "expand_params",
    "tailor",
    "tailor_with_config",
]
