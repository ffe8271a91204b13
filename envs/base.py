"""The generic single pixel environment shared by the pendulum ids.

Each step runs the system's batched functions at ``N = 1``; the episode limit (200 steps) is
applied by Gymnasium's ``TimeLimit`` wrapper that ``gym.make`` adds from the registration, as for
``Pendulum-v1``, so ``step`` itself never truncates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from noether_control.envs.rendering import HumanWindow
from noether_control.envs.systems import PendulumSystemBase

RENDER_MODES = ("human", "rgb_array")


def check_render_mode(render_mode: str | None, allowed: tuple[str, ...]) -> str | None:
    """``render_mode`` if it is None or one of ``allowed``, else ValueError."""
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"render_mode: expected None or one of {allowed}, got {render_mode!r}")
    return render_mode


def render_fps(dt: float) -> float | int:
    """Frames per second of real time (``1/dt``), as an int when it is whole."""
    fps = 1.0 / dt
    return round(fps) if math.isclose(fps, round(fps)) else fps


def build_info(
    system: PendulumSystemBase, states: NDArray[np.float64], params: NDArray[np.float64]
) -> dict[str, NDArray[Any]]:
    """Batched info values: true ``state`` ``(N, D)``, each parameter ``(N,)``, ``energy`` ``(N,)``.

    All float64; fresh arrays that the caller may keep.
    """
    info: dict[str, NDArray[Any]] = {"state": np.array(states, dtype=np.float64)}
    for column, name in enumerate(system.parameter_names):
        info[name] = params[:, column].copy()
    info["energy"] = system.energy(states, params)
    return info


class PixelEnv(gym.Env[Any, NDArray[np.float32]]):
    """A single environment over a :class:`PendulumSystemBase`.

    Subclasses set ``system_type`` and document the physics; the keyword arguments besides
    ``render_mode`` are those of the system's config.
    """

    # Gymnasium reads it from the class and the instance; __init__ sets the instance's fps.
    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 20}  # noqa: RUF012
    system_type: ClassVar[type[PendulumSystemBase]]

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        system = self.system_type.from_kwargs(**kwargs)
        self.render_mode = check_render_mode(render_mode, RENDER_MODES)
        self.system = system
        self.config = system.config
        self.parameter_names = system.parameter_names
        self.metadata = {**type(self).metadata, "render_fps": render_fps(self.config.dt)}
        self.observation_space = system.observation_space
        self.action_space = system.action_space
        self._states: NDArray[np.float64] | None = None
        self._params = system.fixed_parameters[None].copy()
        self._window: HumanWindow | None = None

    @property
    def state(self) -> NDArray[np.float64]:
        """The true state ``(D,)`` float64 (a copy); raises before the first reset."""
        return self._require_states()[0].copy()

    @property
    def physical_parameters(self) -> dict[str, float]:
        """The current episode's physical parameters by name."""
        values = self._params[0].tolist()
        return dict(zip(self.parameter_names, values, strict=True))

    def _require_states(self) -> NDArray[np.float64]:
        if self._states is None:
            raise RuntimeError("call reset() before step() or render()")
        return self._states

    def _observation_and_info(self) -> tuple[Any, dict[str, Any]]:
        states = self._require_states()
        batched = self.system.observe(states)
        observation = (
            {key: value[0] for key, value in batched.items()}
            if isinstance(batched, dict)
            else batched[0]
        )
        info = build_info(self.system, states, self._params)
        single_info: dict[str, Any] = {"state": info.pop("state")[0]}
        single_info.update({key: float(value[0]) for key, value in info.items()})
        return observation, single_info

    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Draw a new state (then randomised parameters) from ``np_random``.

        ``options`` may hold ``x_init`` (angle bound, default π) and ``y_init`` (angular velocity
        bound, default 1), as for ``Pendulum-v1``.
        """
        super().reset(seed=seed)
        state, params = self.system.sample_reset(self.np_random, options)
        self._states = state[None]
        self._params = params[None]
        if self.render_mode == "human":
            self.render()
        return self._observation_and_info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (torque, shape ``(1,)``) for ``dt`` seconds."""
        states = self._require_states()
        actions = self.system.check_actions(action, ())[None]
        reward = float(self.system.reward(states, actions)[0])
        self._states = self.system.step(states, actions, self._params)
        if self.render_mode == "human":
            self.render()
        observation, info = self._observation_and_info()
        return observation, reward, False, False, info

    def render(self) -> NDArray[np.uint8] | None:
        """``rgb_array``: the scene at ``render_size`` pixels; ``human``: show the observation.

        The human window shows the observation frame (``image_size``) scaled up to
        ``render_size``, i.e. exactly what the agent sees.
        """
        states = self._require_states()
        if self.render_mode == "rgb_array":
            return self.system.render_frames(states, self.config.render_size)[0]
        if self.render_mode == "human":
            if self._window is None:
                caption = self.spec.id if self.spec is not None else type(self).__name__
                self._window = HumanWindow(
                    self.config.render_size, self.metadata["render_fps"], caption
                )
            self._window.show(self.system.render_pixels(states)[0])
            return None
        gym.logger.warn(
            "render() called without a render_mode; pass render_mode='rgb_array' or 'human'"
        )
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
