"""The true law as g: tailoring with the pendulum's energy balance, read off the predicted frames.

A check of the lever rather than of the meta-learner: if tailoring a world model so that its own
prediction obeys the *true* conservation law does not make that prediction better, no learned
g_φ can, and what is tailored (not g_φ) is the bottleneck.

The controlled pendulum's energy ``E = ½ (m l²/3) θ̇² + m g (l/2) cos θ`` is not conserved: the
torque does work, ``dE/dt = u θ̇``. What holds is the balance of energy and work, which
:func:`energy_balance_residual` states exactly for the environments' discrete step. The angle
of each predicted frame is read by the world model's own (untailored) encoder and a linear
probe of ``(cos θ, sin θ)`` fitted on real frames, so nothing but the predicted pixels carries
the state: a tailoring can only satisfy the law by changing the prediction, not a separate
readout. Velocities are backward differences of angles, exact for the environments'
semi-implicit Euler step (``θ' = θ + θ̇' dt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from noether_control.models.svg import SVGWorldModel
from noether_control.noether.meta import NoetherModule
from noether_control.noether.tailoring import Params, tailor


@dataclass(frozen=True)
class PendulumPhysics:
    """The physical constants of a pendulum env (defaults: ``PixelPendulum-v0``)."""

    gravity: float = 10.0
    mass: float = 1.0
    length: float = 1.0
    dt: float = 0.05


def wrap_angle(angle: Tensor) -> Tensor:
    """Angles wrapped into ``[−π, π)``."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


@dataclass
class AngleProbe:
    """A linear readout of ``(cos θ, sin θ)`` from a world model's frame codes.

    ``weights``: ``(g_dim + 1, 2)``, the least-squares fit with a bias row last.
    """

    weights: Tensor

    @classmethod
    def fit(cls, model: SVGWorldModel, frames: Tensor, angles: Tensor,
            ridge: float = 1e-6) -> AngleProbe:
        """Fit on real ``frames`` ``(N, C, S, S)`` and their true ``angles`` θ ``(N,)``."""
        if frames.dim() != 4 or angles.shape != frames.shape[:1] or frames.shape[0] < 2:
            raise ValueError(f"expected frames (N >= 2, C, S, S) and one angle each (N,), got "
                             f"{tuple(frames.shape)} and {tuple(angles.shape)}")
        with torch.no_grad():
            design = cls._design(model, frames).double()
        target = cls._target(angles).to(design)
        gram = design.T @ design + ridge * torch.eye(design.shape[1], dtype=design.dtype,
                                                     device=design.device)
        weights = torch.linalg.solve(gram, design.T @ target)
        return cls(weights.to(frames.dtype))

    @staticmethod
    def _target(angles: Tensor) -> Tensor:
        return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    @staticmethod
    def _design(model: SVGWorldModel, frames: Tensor) -> Tensor:
        code, _ = model.encode(frames)
        return torch.cat([code, code.new_ones(code.shape[0], 1)], dim=1)

    def angles(self, model: SVGWorldModel, frames: Tensor) -> Tensor:
        """θ of each frame ``(..., C, S, S)`` → ``(...)``; differentiable in the frames."""
        flat = frames.flatten(0, -4)
        cos_sin = self._design(model, flat) @ self.weights.to(flat)
        return torch.atan2(cos_sin[:, 1], cos_sin[:, 0]).reshape(frames.shape[:-3])

    def r2(self, model: SVGWorldModel, frames: Tensor, angles: Tensor) -> float:
        """R² of the ``(cos θ, sin θ)`` readout on held-out frames and their angles ``(N,)``."""
        with torch.no_grad():
            predicted = self._design(model, frames) @ self.weights.to(frames)
        target = self._target(angles).to(predicted)
        residual = (target - predicted).square().sum()
        total = (target - target.mean(0)).square().sum()
        return float(1 - residual / total)


#: How the balance is compared along a sequence: step by step (Eq. 2b's form) or every energy
#: against the first one plus the work done since (Eq. 2a's form, anchored to the start).
BALANCE_MODES = ("consecutive", "start")


def energy_balance_residual(angles: Tensor, actions: Tensor, physics: PendulumPhysics,
                            mode: str = "consecutive") -> Tensor:
    """Per-example mean squared violation of the discrete energy balance along a sequence.

    With ``v_t = (θ_t − θ_{t−1}) / dt`` the environments' step is ``v_{t+1} − v_t = dt θ̈(θ_t,
    u_t)`` exactly. Multiplying by ``v_{t+1}`` and summing two steps gives the balance
    ``E_{t+1} − E_t = ½ (u_t + u_{t+1}) (θ_{t+1} − θ_t) + O(Δθ³)`` for the staggered energy
    ``E_t = ½ (m l²/3) v_t v_{t+1} + m g (l/2) cos θ_t``: on true trajectories it holds ~30×
    more tightly than the naive ``½ I v_t² + V(θ_t)`` with ``u_t (θ_{t+1} − θ_t)`` (whose
    semi-implicit Euler error is of the order of the torque's work itself).

    Args:
        angles: ``(B, T)`` θ of consecutive frames, ``T >= 4``.
        actions: ``(B, T − 1, 1)`` or ``(B, T − 1)``: the torque applied at each frame but the
            last (action ``t`` moves frame ``t`` to ``t + 1``).
        physics: the pendulum's constants.
        mode: ``consecutive``: ``E_{t+1} − E_t − W_t`` for each step; ``start``: ``E_{t+1} − E_1
            − Σ_{s ≤ t} W_s``, every energy against the first one (a prediction that loses
            energy it was given, e.g. by slowing down, violates this at every later step).

    Returns:
        ``(B,)``: the mean over ``t = 1 … T − 3`` of the squared residual of the balance, in J².
    """
    if mode not in BALANCE_MODES:
        raise ValueError(f"mode: expected one of {BALANCE_MODES}, got {mode!r}")
    if angles.dim() != 2 or angles.shape[1] < 4:
        raise ValueError(f"angles: expected (B, T >= 4), got {tuple(angles.shape)}")
    torques = actions.reshape(actions.shape[0], -1) if actions.dim() == 3 else actions
    if torques.shape != (angles.shape[0], angles.shape[1] - 1):
        raise ValueError(f"actions: expected one torque per frame but the last, "
                         f"({angles.shape[0]}, {angles.shape[1] - 1}), got "
                         f"{tuple(actions.shape)}")
    step = wrap_angle(angles[:, 1:] - angles[:, :-1])  # step[:, k] = θ_{k+1} − θ_k
    m, length, g = physics.mass, physics.length, physics.gravity
    inertia = m * length**2 / 3.0
    energy = (0.5 * inertia * step[:, :-1] * step[:, 1:] / physics.dt**2
              + m * g * (length / 2.0) * torch.cos(angles[:, 1:-1]))  # E_t, t = 1 … T − 2
    work = 0.5 * (torques[:, 1:-1] + torques[:, 2:]) * step[:, 1:-1]  # t = 1 … T − 3
    if mode == "start":
        residual = energy[:, 1:] - energy[:, :1] - work.cumsum(1)
    else:
        residual = energy[:, 1:] - energy[:, :-1] - work
    return residual.square().mean(1)


def oracle_loss(
    model: SVGWorldModel, probe: AngleProbe, physics: PendulumPhysics, context: Tensor,
    predicted: Tensor, actions: Tensor, mode: str = "consecutive",
) -> Tensor:
    """:func:`energy_balance_residual` along the last true context frames and a prediction.

    ``context`` ``(B, P, C, S, S)``, ``predicted`` ``(B, H ≥ 2, C, S, S)`` (the frames after the
    context), ``actions`` ``(B, ≥ P + H − 1, A)`` aligned with the frames. The sequence starts
    with the last 2 context frames (``consecutive``: the first velocity is the true one) or 3
    (``start``: the first energy, which every later one is held to, is the true one).
    Returns ``(B,)``.
    """
    n_past, horizon = context.shape[1], predicted.shape[1]
    anchor = 3 if mode == "start" else 2
    if n_past < anchor:
        raise ValueError(f"context: expected >= {anchor} frames for mode {mode!r} (a true "
                         f"{'energy' if anchor == 3 else 'velocity'}), got {n_past}")
    frames = torch.cat([context[:, -anchor:].to(predicted), predicted], dim=1)
    angles = probe.angles(model, frames)
    torques = actions[:, n_past - anchor : n_past + horizon - 1, 0]
    return energy_balance_residual(angles, torques, physics, mode)


def oracle_tailor(
    model: SVGWorldModel, tailoring: NoetherModule, probe: AngleProbe, physics: PendulumPhysics,
    context: Tensor, actions: Tensor, horizon: int, *, steps: int, lr: float,
    optimizer: str = "normalized", mode: str = "consecutive",
) -> Params:
    """Per-example parameters after ``steps`` inner steps on :func:`oracle_loss`.

    ``tailoring`` says what is tailored (its ``config.tailored``) and rolls the model out; its
    g_φ is not used. First order (an oracle is not meta-trained).
    """
    initial = tailoring.initial_params(model, context.shape[0], context)

    def loss(params: Params, _: object) -> Tensor:
        rollout = tailoring.rollout(model, params, context, actions, horizon)
        return oracle_loss(model, probe, physics, context, rollout.frames, actions, mode)

    return tailor(initial, None, loss, steps=steps, lr=lr, optimizer=optimizer,
                  second_order=False)
