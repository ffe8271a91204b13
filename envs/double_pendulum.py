"""``NoetherControl/PixelDoublePendulum-v0``: a double pendulum driven at its base joint."""

from __future__ import annotations

from noether_control.envs.base import PixelEnv
from noether_control.envs.systems import DoublePendulumSystem
from noether_control.envs.vector import PixelVectorEnv


class PixelDoublePendulumEnv(PixelEnv):
    """A chaotic double pendulum with a motor at its base joint, observed as RGB images.

    ## Description

    Two uniform rods (masses ``m₁``, ``m₂``, lengths ``l₁``, ``l₂``): the first swings about
    a fixed axle, the second about the tip of the first. The motor torque ``u`` acts at the
    base joint only (a "pendubot"); both joints have viscous friction ``b`` on their relative
    angular velocity. The state is ``(θ₁, θ₂, θ̇₁, θ̇₂)`` with both angles *absolute*, measured
    from the upward vertical, counter-clockwise positive. With ``Δ = θ₁ − θ₂``,
    ``a = (m₁/3 + m₂) l₁²``, ``d = m₂ l₂²/3``, ``c = m₂ l₁ l₂/2``, Lagrange's equations are

        a θ̈₁ + c cos Δ θ̈₂ = u − b θ̇₁ + b (θ̇₂ − θ̇₁) − c sin Δ θ̇₂² + (m₁/2 + m₂) g l₁ sin θ₁
        c cos Δ θ̈₁ + d θ̈₂ = −b (θ̇₂ − θ̇₁) + c sin Δ θ̇₁² + m₂ g (l₂/2) sin θ₂

    integrated over each ``dt`` by ``substeps`` classical RK4 steps (torque held constant),
    then both angular velocities are clipped to ``±max_speed``. Mechanical energy
    ``E = T + V`` with ``T = ½ a θ̇₁² + ½ d θ̇₂² + c cos Δ θ̇₁ θ̇₂`` and
    ``V = g [(m₁/2 + m₂) l₁ cos θ₁ + m₂ (l₂/2) cos θ₂]`` (J); with ``u = b = 0`` it drifts by
    less than 1e-4 (relative) over 1,000 steps at the default 24 substeps.

    ## Action Space

    ``Box(-max_torque, max_torque, (1,), float32)``: the base torque in N·m (default bound
    5). Finite torques outside the bounds are clipped; NaN/inf or another shape raises
    ``ValueError``.

    ## Observation Space

    - ``"pixels"`` (default): ``Box(0, 255, (image_size, image_size, 3), uint8)``: red first
      link, blue second link (both drawn one unit long), black axle, white background.
    - ``"state"``: ``(cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂)`` float32, speeds bounded by
      ``max_speed``.
    - ``"pixels_state"``: ``Dict(pixels=..., state=...)``.

    Every ``info`` holds ``"state"`` (``(4,)`` float64), ``"gravity"``, ``"mass1"``,
    ``"mass2"``, ``"length1"``, ``"length2"``, ``"damping"`` (floats) and ``"energy"`` (J).

    ## Rewards

    ``r = −(norm(θ₁)² + norm(θ₂)² + 0.1 (θ̇₁² + θ̇₂²) + 0.001 u²)``, evaluated before the
    step: 0 with both links upright at rest.

    ## Starting State

    ``θ₁, θ₂ ~ U[-x_init, x_init]`` and ``θ̇₁, θ̇₂ ~ U[-y_init, y_init]`` (defaults π and 1,
    ``reset(options=...)`` as for ``Pendulum-v1``), then each parameter with a ``*_range`` in
    the order gravity, mass1, mass2, length1, length2, damping.

    ## Episode End

    Never terminates; truncated after 200 steps.

    ## Arguments

    Keyword arguments of :class:`~noether_control.envs.systems.DoublePendulumConfig`:
    ``obs_type``, ``image_size``, ``render_size``, ``gravity`` (10.0), ``mass1``, ``mass2``,
    ``length1``, ``length2`` (1.0), ``damping`` (0.0), ``max_torque`` (5.0), ``max_speed``
    (10π), ``dt`` (0.05), ``substeps`` (24) and a ``*_range`` per physical parameter.
    ``render_mode`` as for ``NoetherControl/PixelPendulum-v0``.

    ## Version History

    * v0: Initial version.
    """

    system_type = DoublePendulumSystem


class PixelDoublePendulumVectorEnv(PixelVectorEnv):
    """``num_envs`` :class:`PixelDoublePendulumEnv` stepped as arrays (same keyword arguments).

    Matches ``num_envs`` single environments seeded ``s + i`` exactly; see
    :class:`~noether_control.envs.vector.PixelVectorEnv`.
    """

    system_type = DoublePendulumSystem
