"""The ``env`` config group (``conf/env/*.yaml``) and how to build its environments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec


@dataclass
class EnvConfig:
    """Which registered environment to build, and with which keyword arguments."""

    #: short name used in dataset ids and file names, e.g. "pixel-pendulum"
    name: str = "pixel-pendulum"
    #: Gymnasium id registered by ``noether_control.envs``
    id: str = "NoetherControl/PixelPendulum-v0"
    #: constructor kwargs: obs_type, image_size, physics (gravity, mass, ..., *_range)
    kwargs: dict[str, Any] = field(default_factory=dict)


def env_spec(config: EnvConfig, **overrides: Any) -> EnvSpec:
    """The registered spec of ``config.id`` with ``config.kwargs`` and ``overrides`` applied.

    Raises:
        ValueError: the id is not registered (importing ``noether_control`` registers ours).
    """
    import noether_control  # noqa: F401  (registers the NoetherControl/* ids)

    try:
        spec = gym.spec(config.id)
    except gym.error.Error as error:
        raise ValueError(
            f"env.id: expected a registered Gymnasium id such as "
            f"'NoetherControl/PixelPendulum-v0', got {config.id!r}"
        ) from error
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **config.kwargs, **overrides})


def make_vector_env(config: EnvConfig, num_envs: int, **overrides: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the environment as one native (batched numpy) vector env."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
    spec = env_spec(config, **overrides)
    if spec.vector_entry_point is None:
        raise ValueError(
            f"env.id: expected an environment with a native vector implementation "
            f"(vector_entry_point), got {config.id!r}"
        )
    return gym.make_vec(
        spec.id, num_envs=num_envs, vectorization_mode="vector_entry_point", **spec.kwargs
    )
