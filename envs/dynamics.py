"""Pure, batched dynamics, rewards and energies of the pendulum systems.

One function per quantity and system serves the single environments, the native vector
environments and the oracle planner, so they can never disagree. Every function works on a batch
of ``N`` systems with their own physical parameters and never mutates its inputs.

Conventions shared by both systems:

- Angles are in radians with ``θ = 0`` pointing straight up and positive angles
  counter-clockwise; angular velocities in rad/s, torques in N·m, energies in J.
- Links are uniform rods pivoting at one end: a rod of mass ``m`` and length ``l`` has its centre
  of mass at ``l/2`` and moment of inertia ``m l²/3`` about the pivot (``m l²/12`` about its
  centre).
- Physical parameters are float64 arrays of shape ``(N,)`` (anything that broadcasts to it, e.g.
  a Python float, works too).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

PENDULUM_STATE_DIM = 2
"""``(θ, θ̇)``."""
DOUBLE_PENDULUM_STATE_DIM = 4
"""``(θ₁, θ₂, θ̇₁, θ̇₂)`` with both angles absolute (measured from the upward vertical)."""


def angle_normalize(angle: NDArray[np.floating]) -> NDArray[np.floating]:
    """Wrap angles to ``[-π, π)``, exactly as Gymnasium's ``Pendulum-v1`` does."""
    return ((angle + np.pi) % (2 * np.pi)) - np.pi


def clip_torque(torques: ArrayLike, max_torque: float) -> NDArray[np.floating]:
    """Clip torques to ``[-max_torque, max_torque]`` keeping their floating dtype.

    Integer input is promoted to float64 (as ``np.clip`` with float bounds would). ``max_torque``
    is used as a Python float so that float32 torques stay float32, like ``Pendulum-v1``.
    """
    torques = np.asarray(torques)
    if not np.issubdtype(torques.dtype, np.floating):
        torques = torques.astype(np.float64)
    limit = float(max_torque)
    return np.clip(torques, -limit, limit)


def pendulum_step(
    states: NDArray[np.float64],
    torques: ArrayLike,
    gravity: ArrayLike,
    mass: ArrayLike,
    length: ArrayLike,
    damping: ArrayLike,
    *,
    dt: float,
    max_speed: float,
    max_torque: float,
) -> NDArray[np.float64]:
    """Advance ``N`` damped torque-driven pendulums by one semi-implicit Euler step.

    ``θ̈ = 3g/(2l) sin θ + 3(u − b θ̇)/(m l²)``, then ``θ̇' = clip(θ̇ + θ̈ dt, ±max_speed)`` and
    ``θ' = θ + θ̇' dt``: with ``b = 0`` this is Gymnasium's ``Pendulum-v1`` bit for bit. In
    particular the torque term is evaluated in the torque's own precision (``Pendulum-v1``
    multiplies a float32 action by a Python float, which NumPy keeps in float32), so float32
    actions give the same rounding as there.

    Args:
        states: ``(N, 2)`` float64 ``(θ, θ̇)``; θ is not wrapped.
        torques: ``(N, 1)`` torques in N·m; clipped to ``[-max_torque, max_torque]``.
        gravity, mass, length, damping: ``(N,)`` parameters (m/s², kg, m, N·m·s/rad).
        dt: time step in seconds.
        max_speed: bound on ``|θ̇|`` in rad/s.
        max_torque: bound on ``|u|`` in N·m.

    Returns:
        ``(N, 2)`` float64 next states.
    """
    theta = states[:, 0]
    theta_dot = states[:, 1]
    u = clip_torque(torques, max_torque)[:, 0]
    mass = np.asarray(mass, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    inverse_inertia = 3.0 / (mass * length**2)
    torque_accel = inverse_inertia.astype(u.dtype) * u
    damping_accel = np.asarray(damping, dtype=np.float64) * inverse_inertia * theta_dot
    gravity_accel = 3 * np.asarray(gravity, dtype=np.float64) / (2 * length) * np.sin(theta)
    new_theta_dot = theta_dot + (gravity_accel + (torque_accel - damping_accel)) * dt
    new_theta_dot = np.clip(new_theta_dot, -max_speed, max_speed)
    new_theta = theta + new_theta_dot * dt
    return np.stack((new_theta, new_theta_dot), axis=1)


def pendulum_reward(
    states: NDArray[np.float64], torques: ArrayLike, *, max_torque: float
) -> NDArray[np.float64]:
    """``Pendulum-v1``'s reward ``−(norm(θ)² + 0.1 θ̇² + 0.001 u²)`` of ``torques`` in ``states``.

    Bit-identical to ``Pendulum-v1`` except in one case: for a float32 torque, ``Pendulum-v1``
    squares it with the C library's ``powf``, which is not correctly rounded, so about 0.1 % of
    torques give a ``u²`` one float32 ulp away from ours (a reward difference below 5e-10).

    Args:
        states: ``(N, 2)`` float64 states *before* the step.
        torques: ``(N, 1)`` torques, clipped to ``[-max_torque, max_torque]`` first.

    Returns:
        ``(N,)`` float64 rewards in ``[-(π² + 0.1 max_speed² + 0.001 max_torque²), 0]``.
    """
    u = clip_torque(torques, max_torque)[:, 0]
    # float_power calls the C library's pow() per element like Pendulum-v1's scalar ``x**2``;
    # ``x**2`` on arrays is ``x*x``, which differs from pow() in the last bit for ~0.1 % of x.
    costs = (
        np.float_power(angle_normalize(states[:, 0]), 2)
        + 0.1 * np.float_power(states[:, 1], 2)
        + 0.001 * (u**2)
    )
    return -costs


def pendulum_energy(
    states: NDArray[np.float64], gravity: ArrayLike, mass: ArrayLike, length: ArrayLike
) -> NDArray[np.float64]:
    """Mechanical energy ``E = ½ (m l²/3) θ̇² + m g (l/2) cos θ`` in J, shape ``(N,)`` float64."""
    mass = np.asarray(mass, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    kinetic = 0.5 * (mass * length**2 / 3.0) * states[:, 1] ** 2
    potential = mass * np.asarray(gravity, dtype=np.float64) * (length / 2.0) * np.cos(states[:, 0])
    return kinetic + potential


def pendulum_observation(states: NDArray[np.float64]) -> NDArray[np.float32]:
    """``Pendulum-v1``'s observation ``(cos θ, sin θ, θ̇)``: ``(N, 3)`` float32."""
    theta = states[:, 0]
    return np.stack((np.cos(theta), np.sin(theta), states[:, 1]), axis=1).astype(np.float32)


class _DoublePendulumCoefficients(NamedTuple):
    """Parameter combinations of the equations of motion, each ``(N,)`` float64."""

    a: NDArray[np.float64]  # (m₁/3 + m₂) l₁²
    d: NDArray[np.float64]  # m₂ l₂²/3
    c: NDArray[np.float64]  # m₂ l₁ l₂/2
    g1: NDArray[np.float64]  # (m₁/2 + m₂) g l₁
    g2: NDArray[np.float64]  # m₂ g l₂/2
    damping: NDArray[np.float64]
    torque: NDArray[np.float64]


def _double_pendulum_coefficients(
    torques: NDArray[np.floating], parameters: tuple[ArrayLike, ...]
) -> _DoublePendulumCoefficients:
    gravity, mass1, mass2, length1, length2, damping = (
        np.asarray(value, dtype=np.float64) for value in parameters
    )
    return _DoublePendulumCoefficients(
        a=(mass1 / 3.0 + mass2) * length1**2,
        d=mass2 * length2**2 / 3.0,
        c=0.5 * mass2 * length1 * length2,
        g1=(0.5 * mass1 + mass2) * gravity * length1,
        g2=0.5 * mass2 * gravity * length2,
        damping=damping,
        torque=np.asarray(torques, dtype=np.float64),
    )


def _double_pendulum_rates(
    x: NDArray[np.float64], k: _DoublePendulumCoefficients, out: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Time derivative of ``x`` ``(4, N)`` = ``(θ₁, θ₂, θ̇₁, θ̇₂)`` written into ``out``."""
    theta1, theta2, omega1, omega2 = x
    delta = theta1 - theta2
    c_cos = k.c * np.cos(delta)
    c_sin = k.c * np.sin(delta)
    relative_friction = k.damping * (omega2 - omega1)
    rhs1 = (
        k.torque
        - k.damping * omega1
        + relative_friction
        - c_sin * omega2**2
        + k.g1 * np.sin(theta1)
    )
    rhs2 = c_sin * omega1**2 + k.g2 * np.sin(theta2) - relative_friction
    inverse_determinant = 1.0 / (k.a * k.d - c_cos**2)
    out[:2] = x[2:]
    np.multiply(k.d * rhs1 - c_cos * rhs2, inverse_determinant, out=out[2])
    np.multiply(k.a * rhs2 - c_cos * rhs1, inverse_determinant, out=out[3])
    return out


def double_pendulum_accelerations(states: NDArray[np.float64], torques: ArrayLike,
                                  gravity: ArrayLike, mass1: ArrayLike, mass2: ArrayLike,
                                  length1: ArrayLike, length2: ArrayLike, damping: ArrayLike
                                  ) -> NDArray[np.float64]:
    """Angular accelerations ``(θ̈₁, θ̈₂)`` of ``N`` double pendulums, shape ``(N, 2)``.

    Two uniform rods, the first pivoting on a fixed axle, the second on the tip of the first.
    With absolute angles, ``Δ = θ₁ − θ₂``, ``a = (m₁/3 + m₂) l₁²``, ``d = m₂ l₂²/3`` and
    ``c = m₂ l₁ l₂/2``, Lagrange's equations read

        ``a θ̈₁ + c cos Δ θ̈₂ = τ₁ − c sin Δ θ̇₂² + (m₁/2 + m₂) g l₁ sin θ₁``
        ``c cos Δ θ̈₁ + d θ̈₂ = τ₂ + c sin Δ θ̇₁² + m₂ g (l₂/2) sin θ₂``

    with generalised forces ``τ₁ = u − b θ̇₁ + b (θ̇₂ − θ̇₁)`` and ``τ₂ = −b (θ̇₂ − θ̇₁)``: the
    motor torque ``u`` ``(N,)`` (not clipped here) acts at the first (base) joint and both
    joints have viscous friction ``b`` on their relative angular velocity.
    """
    coefficients = _double_pendulum_coefficients(
        torques, (gravity, mass1, mass2, length1, length2, damping)
    )
    x = np.asarray(states, dtype=np.float64).T
    return _double_pendulum_rates(x, coefficients, np.empty_like(x))[2:].T.copy()


def double_pendulum_step(
    states: NDArray[np.float64],
    torques: ArrayLike,
    gravity: ArrayLike,
    mass1: ArrayLike,
    mass2: ArrayLike,
    length1: ArrayLike,
    length2: ArrayLike,
    damping: ArrayLike,
    *,
    dt: float,
    max_speed: float,
    max_torque: float,
    substeps: int,
) -> NDArray[np.float64]:
    """Advance ``N`` double pendulums by ``dt`` with ``substeps`` classical RK4 steps.

    The torque is held constant over ``dt`` (zero-order hold); after the last substep both
    angular velocities are clipped to ``±max_speed`` (as ``Pendulum-v1`` does), which never
    triggers in normal swinging. With zero torque and damping the energy drifts by less than
    ``1e-4`` (relative) over 1,000 steps at the default 24 substeps.

    Args:
        states: ``(N, 4)`` float64 ``(θ₁, θ₂, θ̇₁, θ̇₂)``, absolute angles.
        torques: ``(N, 1)`` torques at the base joint, clipped to ``[-max_torque, max_torque]``.
        gravity, mass1, mass2, length1, length2, damping: ``(N,)`` parameters.
        dt: time step in seconds; ``substeps``: RK4 steps per ``dt``.

    Returns:
        ``(N, 4)`` float64 next states.
    """
    coefficients = _double_pendulum_coefficients(
        clip_torque(torques, max_torque)[:, 0],
        (gravity, mass1, mass2, length1, length2, damping),
    )
    h = dt / substeps
    # (4, N) layout: each state component is a contiguous row, and each RK stage is a handful
    # of whole-array operations (this function is dominated by per-call overhead at small N).
    x = np.array(states, dtype=np.float64).T.copy()
    k1, k2, k3, k4, stage = (np.empty_like(x) for _ in range(5))
    for _ in range(substeps):
        _double_pendulum_rates(x, coefficients, k1)
        _double_pendulum_rates(np.add(x, 0.5 * h * k1, out=stage), coefficients, k2)
        _double_pendulum_rates(np.add(x, 0.5 * h * k2, out=stage), coefficients, k3)
        _double_pendulum_rates(np.add(x, h * k3, out=stage), coefficients, k4)
        k2 += k3
        k2 *= 2.0
        k1 += k2
        k1 += k4
        x += (h / 6.0) * k1
    np.clip(x[2:], -max_speed, max_speed, out=x[2:])
    return x.T.copy()


def double_pendulum_reward(
    states: NDArray[np.float64], torques: ArrayLike, *, max_torque: float
) -> NDArray[np.float64]:
    """Swing-up reward ``−(norm(θ₁)² + norm(θ₂)² + 0.1 (θ̇₁² + θ̇₂²) + 0.001 u²)``, ``(N,)`` float64.

    Zero when both links point straight up at rest without torque; ``states`` are the states
    before the step and ``torques`` ``(N, 1)`` are clipped first.
    """
    u = clip_torque(torques, max_torque)[:, 0]
    angles = angle_normalize(states[:, :2])
    costs = np.sum(angles**2, axis=1) + 0.1 * np.sum(states[:, 2:] ** 2, axis=1) + 0.001 * (u**2)
    return -costs


def double_pendulum_energy(
    states: NDArray[np.float64],
    gravity: ArrayLike,
    mass1: ArrayLike,
    mass2: ArrayLike,
    length1: ArrayLike,
    length2: ArrayLike,
) -> NDArray[np.float64]:
    """Mechanical energy ``T + V`` of ``N`` double pendulums in J, shape ``(N,)`` float64.

    ``T = ½ (m₁/3 + m₂) l₁² θ̇₁² + ½ (m₂ l₂²/3) θ̇₂² + ½ m₂ l₁ l₂ cos(θ₁ − θ₂) θ̇₁ θ̇₂`` and
    ``V = g [(m₁/2 + m₂) l₁ cos θ₁ + m₂ (l₂/2) cos θ₂]`` (zero potential at the axle height).
    """
    gravity, mass1, mass2, length1, length2 = (
        np.asarray(value, dtype=np.float64) for value in (gravity, mass1, mass2, length1, length2)
    )
    theta1, theta2, omega1, omega2 = states.T
    kinetic = (
        0.5 * (mass1 / 3.0 + mass2) * length1**2 * omega1**2
        + 0.5 * (mass2 * length2**2 / 3.0) * omega2**2
        + 0.5 * mass2 * length1 * length2 * np.cos(theta1 - theta2) * omega1 * omega2
    )
    potential = gravity * (
        (0.5 * mass1 + mass2) * length1 * np.cos(theta1) + 0.5 * mass2 * length2 * np.cos(theta2)
    )
    return kinetic + potential


def double_pendulum_observation(states: NDArray[np.float64]) -> NDArray[np.float32]:
    """``(cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂)``: ``(N, 6)`` float32."""
    theta1, theta2, omega1, omega2 = states.T
    return np.stack(
        (np.cos(theta1), np.sin(theta1), np.cos(theta2), np.sin(theta2), omega1, omega2), axis=1
    ).astype(np.float32)
