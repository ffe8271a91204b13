"""Where the inner step's gradient comes from: the path through g_φ's input and the dynamics.

The conservation loss reads g_φ along the model's own prediction. A tailored parameter moves
that loss along two paths: through what each predictor step emits at once (the activations g_φ
reads with ``input=hidden``, or the decoded frame), and through the dynamics (the code and
recurrent state carried to every later step). A step that lowers the loss mostly through g_φ's
input changes what g_φ sees without changing where the prediction goes; one that acts through
the dynamics changes the predicted motion itself, which is where a damping shortcut lives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from noether_control.models.svg import SVGWorldModel
from noether_control.noether.meta import NoetherModule


def inner_gradient_split(
    noether: NoetherModule,
    model: SVGWorldModel,
    context: Tensor,
    actions: Tensor,
    horizon: int,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The first inner step's gradient per example, split into its two paths.

    The gradient of the conservation loss with respect to the untailored per-example
    parameters is computed twice: in full, and with the state carried between predictor steps
    detached (:meth:`SVGWorldModel.carry_detached`), which keeps only the path through each
    step's own outputs; the path through the dynamics is the difference.

    Args:
        noether: g_φ and the tailoring settings.
        model: the world model.
        context: ``(B, P, C, S, S)`` context frames in [0, 1].
        actions: ``(B, ≥ P + horizon − 1, A)``.
        horizon: predicted frames along which the loss is taken.
        generator: latent draws of a stochastic model (replayed for both gradients).

    Returns:
        ``(B,)`` float64 tensors: ``total``, ``through_input``, ``through_dynamics`` (gradient
        norms) and ``input_share`` = ``through_input · total / |total|²``, the part of the full
        gradient's length carried by the direct path (1: all of it; ≤ 0: none or against it).
    """
    initial = noether.initial_params(model, context.shape[0], context)
    start = generator.get_state() if generator is not None else None

    def gradient(direct: bool) -> Tensor:
        if generator is not None:
            generator.set_state(start)
        params = {name: value.detach().requires_grad_(True) for name, value in initial.items()}
        with torch.enable_grad():
            if direct:
                with model.carry_detached():
                    rollout = noether.rollout(model, params, context, actions, horizon, generator)
            else:
                rollout = noether.rollout(model, params, context, actions, horizon, generator)
            loss = noether.conservation(rollout, context, actions).sum()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        return torch.cat([
            (torch.zeros_like(value) if grad is None else grad).flatten(1)
            for value, grad in zip(params.values(), grads, strict=True)
        ], dim=1).double()

    total = gradient(direct=False)
    through_input = gradient(direct=True)
    through_dynamics = total - through_input
    total_norm = total.norm(dim=1)
    return {
        "total": total_norm,
        "through_input": through_input.norm(dim=1),
        "through_dynamics": through_dynamics.norm(dim=1),
        "input_share": (through_input * total).sum(1) / total_norm.square().clamp_min(1e-300),
    }
