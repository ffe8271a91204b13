"""Evaluating a Noether checkpoint: predict after test-time tailoring, and report what it did.

:class:`TailoredPredictor` adapts :meth:`NoetherModule.predict` to the evaluation's
``Predictor`` protocol and keeps, per test sequence, the conservation loss and the predicted
motion before and after the inner steps: a tailoring that lowers the loss by slowing the
predicted motion down (a damping shortcut) shows up beside the true frames' motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from noether_control.evaluation.metrics import motion
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.meta import NoetherModule


@dataclass
class NoetherEvalConfig:
    """Test-time tailoring of ``noether-control evaluate`` (key ``noether``)."""

    test_inner_steps: int | None = None
    """Inner steps K before predicting; ``None``: the checkpoint's own setting (0 for a
    baseline). K > 0 needs a checkpoint trained with Noether (it holds g_φ)."""


class TailoredPredictor:
    """A ``Predictor`` (``predict(frames, actions, n_future)``) that tailors before predicting.

    Keeps every sequence's conservation loss and predicted motion (mean |x̂ₜ − x̂ₜ₋₁| over the
    horizon, from the last context frame) before and after tailoring, so an evaluation can
    report their means (:meth:`summary`).
    """

    def __init__(self, model: SVGWorldModel, noether: NoetherModule, steps: int,
                 generator: torch.Generator | None = None) -> None:
        if steps < 0:
            raise ValueError(f"test_inner_steps: expected >= 0, got {steps}")
        self.model, self.noether, self.steps, self.generator = model, noether, steps, generator
        self.losses: dict[str, list[Tensor]] = {"before": [], "after": []}
        self.motions: dict[str, list[Tensor]] = {"before": [], "after": []}

    def predict(self, frames: Tensor, actions: Tensor, n_future: int) -> Tensor:
        """Frames ``(B, n_future, C, S, S)`` predicted after ``steps`` tailoring steps."""
        out = self.noether.predict(self.model, frames, actions, n_future, steps=self.steps,
                                   generator=self.generator)
        last_context = frames[:, -1].float()
        for key, losses, predicted in (("before", out.before, out.untailored_frames),
                                       ("after", out.after, out.frames)):
            self.losses[key].append(losses.detach().double().cpu())
            self.motions[key].append(
                motion(predicted.detach().float(), last_context).mean(1).double().cpu())
        return out.frames.detach()

    def summary(self) -> dict[str, Any]:
        """Means over the predicted sequences: ``{"inner_steps": K, "conservation_loss":
        {"before": x, "after": y}, "predicted_motion": {"before": m, "after": n}}``."""
        if not self.losses["before"]:
            raise ValueError("TailoredPredictor.summary: expected predictions first, got none")

        def means(parts: dict[str, list[Tensor]]) -> dict[str, float]:
            return {key: float(torch.cat(values).mean()) for key, values in parts.items()}

        return {"inner_steps": self.steps, "conservation_loss": means(self.losses),
                "predicted_motion": means(self.motions)}


def tailored_predictor(
    model: SVGWorldModel, noether: NoetherModule | None, steps: int | None, setting: str,
    generator: torch.Generator | None = None,
) -> TailoredPredictor | None:
    """The tailored predictor of ``model`` with its g_φ ``noether``, or ``None`` to predict
    without tailoring (a baseline).

    ``steps=None`` takes the checkpoint's test-time K. Raises ``ValueError`` naming ``setting``
    for ``steps > 0`` without g_φ.
    """
    if noether is None:
        if steps:
            raise ValueError(
                f"{setting}={steps}: expected a checkpoint trained with Noether "
                "(noether=default, it holds g_φ), got a baseline checkpoint; expected 0 or null"
            )
        return None
    return TailoredPredictor(model, noether, noether.config.test_steps(steps), generator)
