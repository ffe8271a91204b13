"""Pixel pendulum environments, registered with Gymnasium on import.

- ``NoetherControl/PixelPendulum-v0``: ``Pendulum-v1`` physics (plus mass, length, damping)
  observed as 64×64 RGB frames (:class:`PixelPendulumEnv`).
- ``NoetherControl/PixelPendulumRandom-v0``: the same with gravity, mass, length and damping
  drawn per episode (:data:`~noether_control.envs.pendulum.RANDOM_PHYSICS`).
- ``NoetherControl/PixelDoublePendulum-v0``: a double pendulum actuated at its base joint
  (:class:`PixelDoublePendulumEnv`).

Each id has a native ``vector_entry_point`` for
``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point", **kwargs)``. The pure
batched dynamics, rewards and energies live in :mod:`noether_control.envs.dynamics`.
"""

from __future__ import annotations

import gymnasium as gym

from noether_control.envs.double_pendulum import (
    PixelDoublePendulumEnv,
    PixelDoublePendulumVectorEnv,
)
from noether_control.envs.pendulum import (
    RANDOM_PHYSICS,
    PixelPendulumEnv,
    PixelPendulumVectorEnv,
)
from noether_control.envs.systems import DoublePendulumConfig, PendulumConfig

PENDULUM_ID = "NoetherControl/PixelPendulum-v0"
RANDOM_PENDULUM_ID = "NoetherControl/PixelPendulumRandom-v0"
DOUBLE_PENDULUM_ID = "NoetherControl/PixelDoublePendulum-v0"
ENV_IDS = (PENDULUM_ID, RANDOM_PENDULUM_ID, DOUBLE_PENDULUM_ID)
MAX_EPISODE_STEPS = 200


def _register(env_id: str, module: str, prefix: str, kwargs: dict[str, object]) -> None:
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=f"noether_control.envs.{module}:{prefix}Env",
        vector_entry_point=f"noether_control.envs.{module}:{prefix}VectorEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
        kwargs=kwargs,
    )


_register(PENDULUM_ID, "pendulum", "PixelPendulum", {})
_register(RANDOM_PENDULUM_ID, "pendulum", "PixelPendulum", dict(RANDOM_PHYSICS))
_register(DOUBLE_PENDULUM_ID, "double_pendulum", "PixelDoublePendulum", {})

__all__ = [
    "DOUBLE_PENDULUM_ID",
    "ENV_IDS",
    "PENDULUM_ID",
    "RANDOM_PENDULUM_ID",
    "RANDOM_PHYSICS",
    "DoublePendulumConfig",
    "PendulumConfig",
    "PixelDoublePendulumEnv",
    "PixelDoublePendulumVectorEnv",
    "PixelPendulumEnv",
    "PixelPendulumVectorEnv",
]
