"""``NoetherControl/PixelPendulum-v0``: Gymnasium's ``Pendulum-v1`` seen through pixels."""

from __future__ import annotations

from noether_control.envs.base import PixelEnv
from noether_control.envs.systems import PendulumSystem
from noether_control.envs.vector import PixelVectorEnv

RANDOM_PHYSICS: dict[str, tuple[float, float]] = {
    "gravity_range": (5.0, 15.0),
    "mass_range": (0.5, 2.0),
    "length_range": (0.5, 1.5),
    "damping_range": (0.0, 0.2),
}
"""Per-episode ranges of ``NoetherControl/PixelPendulumRandom-v0`` (about ×3 around defaults)."""


class PixelPendulumEnv(PixelEnv):
    """The torque-controlled swing-up pendulum of ``Pendulum-v1``, observed as RGB images.

    ## Description

    A uniform rod of mass ``m`` and length ``l`` swings about a fixed axle under gravity ``g``,
    viscous friction ``b`` and a motor torque ``u``. With ``θ`` the angle from the upward
    vertical (counter-clockwise positive) and ``I = m l²/3``:

        θ̈ = 3g/(2l) sin θ + 3(u − b θ̇)/(m l²)

    integrated by semi-implicit Euler with ``dt`` (``θ̇' = clip(θ̇ + θ̈ dt, ±max_speed)``,
    ``θ' = θ + θ̇' dt``). With the default physics (``g = 10``, ``m = l = 1``, ``b = 0``) the
    dynamics, reward, reset distribution, random-number use and 200-step limit are exactly those
    of Gymnasium's ``Pendulum-v1``: ``obs_type="state"`` gives its observations and rewards bit
    for bit. Mechanical energy: ``E = ½ I θ̇² + m g (l/2) cos θ`` (J).

    ## Action Space

    ``Box(-max_torque, max_torque, (1,), float32)``: the torque in N·m (default bound 2).
    Finite torques outside the bounds are clipped to them, as ``Pendulum-v1`` does; a NaN or
    infinite torque, or an action of another shape, raises ``ValueError``.

    ## Observation Space

    - ``"pixels"`` (default): ``Box(0, 255, (image_size, image_size, 3), uint8)``, an
      anti-aliased RGB frame: red rod with round ends, black axle in the centre, white
      background, rod drawn at a fixed length (the frame depends on ``θ`` only).
    - ``"state"``: ``Box([-1, -1, -max_speed], [1, 1, max_speed], (3,), float32)``,
      ``(cos θ, sin θ, θ̇)`` as in ``Pendulum-v1``.
    - ``"pixels_state"``: ``Dict(pixels=..., state=...)`` of both.

    Every ``info`` (reset and step) holds ``"state"`` (``(2,)`` float64 ``(θ, θ̇)``, θ not
    wrapped), ``"gravity"``, ``"mass"``, ``"length"``, ``"damping"`` (floats, the current
    episode's physics) and ``"energy"`` (float, J).

    ## Rewards

    ``r = −(norm(θ)² + 0.1 θ̇² + 0.001 u²)`` with ``norm(θ)`` in ``[-π, π)`` and ``u`` the
    clipped torque, evaluated before the step: 0 upright at rest, about −16.27 at worst.

    ## Starting State

    ``θ ~ U[-x_init, x_init]``, ``θ̇ ~ U[-y_init, y_init]`` (defaults π and 1; override with
    ``reset(options={"x_init": ..., "y_init": ...})``). Then, in the order gravity, mass,
    length, damping, each parameter with a ``*_range`` is drawn ``U[low, high)`` from the same
    ``np_random``; without ranges nothing more is drawn.

    ## Episode End

    Never terminates; truncated after 200 steps (``max_episode_steps`` of the registration).

    ## Arguments

    ``gym.make("NoetherControl/PixelPendulum-v0", render_mode=None, **kwargs)`` with the
    keyword arguments of :class:`~noether_control.envs.systems.PendulumConfig`: ``obs_type``
    ("pixels"), ``image_size`` (64), ``render_size`` (256), ``gravity`` (10.0), ``mass``
    (1.0), ``length`` (1.0), ``damping`` (0.0), ``max_torque`` (2.0), ``max_speed`` (8.0),
    ``dt`` (0.05), ``gravity_range``, ``mass_range``, ``length_range``, ``damping_range``
    (None or ``(low, high)``). Invalid values raise ``ValueError``/``TypeError`` here.
    ``render_mode="rgb_array"`` returns the scene drawn at ``render_size``; ``"human"`` shows
    the observation frame scaled up to ``render_size`` in a pygame window at ``1/dt`` fps.
    ``NoetherControl/PixelPendulumRandom-v0`` presets the ranges of ``RANDOM_PHYSICS``.

    ## Version History

    * v0: Initial version (``Pendulum-v1`` physics plus mass, length and damping; pixels).
    """

    system_type = PendulumSystem


class PixelPendulumVectorEnv(PixelVectorEnv):
    """``num_envs`` :class:`PixelPendulumEnv` stepped as arrays (same keyword arguments).

    For ``reset(seed=s)`` it gives exactly the observations, rewards and infos of ``num_envs``
    ``gym.make("NoetherControl/PixelPendulum-v0")`` environments seeded ``s + i``, including
    across the 200-step truncation and the ``NEXT_STEP`` autoreset. See
    :class:`~noether_control.envs.vector.PixelVectorEnv`.
    """

    system_type = PendulumSystem
