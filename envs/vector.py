"""The generic native vector environment shared by the pendulum ids.

All sub-environments step as one ``(N, D)`` array through the system's batched functions and
their observations are rendered in one batched call into a preallocated buffer. Each
sub-environment keeps its own ``np.random.Generator``, seeded ``seed + i`` like Gymnasium's
``SyncVectorEnv`` seeds its sub-environments, and draws its resets from it, so a vector of ``N``
gives exactly the observations, rewards and infos of ``N`` ``gym.make(id)`` environments
(resets are rare, so drawing them sub-environment by sub-environment costs nothing measurable).
Autoreset follows Gymnasium's ``NEXT_STEP`` mode: the step after a sub-environment ends resets
it and returns its reset observation and info with reward 0 and no termination or truncation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from noether_control.envs.base import build_info, check_render_mode, render_fps
from noether_control.envs.systems import PendulumSystemBase


def _check_count(name: str, value: Any, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "None or an int >= 1" if allow_none else "an int >= 1"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


class PixelVectorEnv(VectorEnv[Any, NDArray[np.float32], NDArray[Any]]):
    """``num_envs`` copies of a :class:`PendulumSystemBase` stepped as arrays.

    Subclasses set ``system_type``; the keyword arguments besides those named here are those of
    the system's config.

    Observations are batched over the leading axis (``(N, S, S, 3)`` uint8 pixels, ``(N, d)``
    float32 states, or a dict of both); infos are dicts of ``(N, ...)`` arrays, each with its
    ``"_key"`` mask (always all true: every sub-environment reports every key).

    With ``copy=False`` the pixel observation is a view of a buffer that the next ``step`` or
    ``reset`` overwrites (fastest, for consumers that copy what they keep); by default each call
    returns a fresh array.
    """

    # Gymnasium reads it from the class and the instance; __init__ sets the instance's fps.
    metadata: dict[str, Any] = {  # noqa: RUF012
        "render_modes": ["rgb_array"],
        "render_fps": 20,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    system_type: ClassVar[type[PendulumSystemBase]]

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 200,
        render_mode: str | None = None,
        copy: bool = True,
        **kwargs: Any,
    ) -> None:
        system = self.system_type.from_kwargs(**kwargs)
        self.num_envs = _check_count("num_envs", num_envs, allow_none=False)
        self.max_episode_steps = _check_count(
            "max_episode_steps", max_episode_steps, allow_none=True
        )
        self.render_mode = check_render_mode(render_mode, tuple(self.metadata["render_modes"]))
        self.system = system
        self.config = system.config
        self.parameter_names = system.parameter_names
        self.copy = bool(copy)
        self.metadata = {**type(self).metadata, "render_fps": render_fps(self.config.dt)}
        self.single_observation_space = system.observation_space
        self.single_action_space = system.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        size = self.config.image_size
        pixel_shape = (self.num_envs, size, size, 3) if self.config.obs_type != "state" else (0,)
        self._pixel_buffer = np.zeros(pixel_shape, dtype=np.uint8)
        self._states: NDArray[np.float64] | None = None
        self._params = np.tile(system.fixed_parameters, (self.num_envs, 1))
        self._generators: list[np.random.Generator] | None = None
        self._elapsed_steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)

    @property
    def states(self) -> NDArray[np.float64]:
        """True states ``(N, D)`` float64 (a copy); raises before the first reset."""
        return self._require_states().copy()

    @property
    def physical_parameters(self) -> NDArray[np.float64]:
        """``(N, P)`` float64 parameters of the current episodes, columns ``parameter_names``."""
        return self._params.copy()

    def _require_states(self) -> NDArray[np.float64]:
        if self._states is None:
            raise RuntimeError("call reset() before step() or render()")
        return self._states

    def _seed_generators(
        self, seed: int | Sequence[int | None] | None, mask: NDArray[np.bool_]
    ) -> None:
        """Seed the generators of the sub-environments in ``mask`` (all on the first reset)."""
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds: list[int | None] = [
                None if seed is None else int(seed) + index for index in range(self.num_envs)
            ]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(
                    f"seed: expected None, an int or {self.num_envs} seeds, got {len(seeds)}"
                )
        if self._generators is None:
            self._generators = [seeding.np_random(value)[0] for value in seeds]
            return
        for index, value in enumerate(seeds):
            if value is not None and mask[index]:
                self._generators[index] = seeding.np_random(value)[0]

    def _reset_mask(self, mask: Any) -> NDArray[np.bool_]:
        """``options["reset_mask"]`` checked as ``SyncVectorEnv`` does; all True when absent."""
        if mask is None:
            return np.ones(self.num_envs, dtype=np.bool_)
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (
                self.num_envs,):
            raise ValueError(
                f"options['reset_mask']: expected a bool array of shape ({self.num_envs},), "
                f"got {mask!r}"
            )
        if not mask.any():
            raise ValueError("options['reset_mask']: expected at least one True entry")
        if self._states is None and not mask.all():
            raise ValueError("options['reset_mask']: the first reset must reset every "
                             "sub-environment")
        return mask

    def _reset_sub_envs(self, indices: NDArray[np.intp], options: Mapping[str, Any] | None) -> None:
        assert self._generators is not None and self._states is not None
        for index in indices:
            state, params = self.system.sample_reset(self._generators[index], options)
            self._states[index] = state
            self._params[index] = params
        self._elapsed_steps[indices] = 0

    def _observe(self) -> Any:
        states = self._require_states()
        buffer = None if self.copy else self._pixel_buffer
        return self.system.observe(states, pixel_buffer=buffer)

    def _infos(self, mask: NDArray[np.bool_] | None = None) -> dict[str, Any]:
        """Infos of every sub-environment, or (``mask``) of those just reset, zeros elsewhere."""
        values = build_info(self.system, self._require_states(), self._params)
        present = np.ones(self.num_envs, dtype=np.bool_) if mask is None else mask
        infos: dict[str, Any] = {}
        for key, value in values.items():
            infos[key] = np.where(present.reshape(-1, *([1] * (value.ndim - 1))), value,
                                  np.zeros_like(value))
            infos[f"_{key}"] = present.copy()
        return infos

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all sub-environments; an int ``seed`` seeds sub-environment ``i`` with ``seed+i``.

        ``options`` (``x_init``, ``y_init``) apply to this reset; later autoresets use the
        default bounds, as single environments reset without options do. ``options["reset_mask"]``
        (bool ``(N,)``) resets only those sub-environments, as ``SyncVectorEnv`` does: the
        others keep their state and step count, and the infos cover the reset ones.
        """
        reset_options = dict(options or {})
        mask = self._reset_mask(reset_options.pop("reset_mask", None))
        self._seed_generators(seed, mask)
        if self._states is None:
            self._states = np.zeros((self.num_envs, self.system.state_dim), dtype=np.float64)
        indices = np.flatnonzero(mask)
        self._reset_sub_envs(indices, reset_options or None)
        self._autoreset[indices] = False
        return self._observe(), self._infos(None if mask.all() else mask)

    def step(
        self, actions: Any
    ) -> tuple[Any, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_], dict[str, Any]]:
        """Step all sub-environments with ``actions`` ``(N, 1)``; autoreset those that ended."""
        states = self._require_states()
        actions = self.system.check_actions(actions, (self.num_envs,))
        rewards = self.system.reward(states, actions)
        self._states = self.system.step(states, actions, self._params)
        self._elapsed_steps += 1
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=np.bool_)
        else:
            truncated = self._elapsed_steps >= self.max_episode_steps

        resetting = np.flatnonzero(self._autoreset)
        if resetting.size:
            self._reset_sub_envs(resetting, None)
            rewards[resetting] = 0.0
            truncated[resetting] = False
        self._autoreset = terminated | truncated
        return self._observe(), rewards, terminated, truncated, self._infos()

    def render(self) -> tuple[NDArray[np.uint8], ...] | None:
        """Frames ``(render_size, render_size, 3)`` uint8 of every sub-environment, one call."""
        if self.render_mode != "rgb_array":
            return None
        frames = self.system.render_frames(self._require_states(), self.config.render_size)
        return tuple(frames)
