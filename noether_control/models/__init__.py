"""World models: the action-conditioned SVG video model and its checkpoints."""

from noether_control.models.svg import Rollout, SVGConfig, SVGWorldModel, TrainOutput, WorldState

__all__ = ["Rollout", "SVGConfig", "SVGWorldModel", "TrainOutput", "WorldState"]
