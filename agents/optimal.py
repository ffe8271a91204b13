"""The optimal controller of a single pendulum: dynamic programming on a grid of its states.

A pendulum's state ``(θ, θ̇)`` is two numbers, so the best return of every state with ``k``
steps left can be tabulated outright: ``V₀ = 0`` and
``V_{k+1}(s) = max_u [ r(s, u) + V_k(f(s, u)) ]``, with ``f`` and ``r`` the very functions the
environment steps with, ``u`` on a grid of torques and ``V_k`` read between grid points by
bilinear interpolation (periodic in ``θ``). :class:`OptimalAgent` acts greedily on that table
from the environment's true state, with the episode's remaining steps: the reference no agent
can beat by more than the grid's error (measured in docs/rl.md), where oracle MPC only bounds
what its planner finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import NDArray

from noether_control.agents.policies import check_mask
from noether_control.envs.dynamics import PENDULUM_STATE_DIM
from noether_control.envs.systems import PendulumSystemBase
from noether_control.envs.vector import PixelVectorEnv
from noether_control.runtime import require_at_least


@dataclass(frozen=True)
class StateGrid:
    """The grid the value table lives on.

    ``angles`` points cover ``[-π, π)`` evenly (an even count puts one at upright, ``θ = 0``);
    ``speeds`` points cover ``[-max_speed, max_speed]`` (an odd count puts one at rest);
    the backups choose among ``torques`` evenly spaced torques in the action bounds.
    """

    angles: int = 256
    speeds: int = 201
    torques: int = 41

    def __post_init__(self) -> None:
        require_at_least("angles", self.angles, 4, integer=True)
        require_at_least("speeds", self.speeds, 2, integer=True)
        require_at_least("torques", self.torques, 2, integer=True)


class PendulumValueTable:
    """Best returns ``V_k`` of ``k = 0 … steps`` remaining steps on a :class:`StateGrid`.

    Args:
        system: a single-pendulum system (``env.system`` of a native vector env).
        params: ``(P,)`` physical parameters of the episode (``env.physical_parameters[i]``).
        steps: the longest horizon tabulated (the episode's length).
        grid: the state and torque grid.
    """

    def __init__(self, system: PendulumSystemBase, params: NDArray[np.float64], steps: int,
                 grid: StateGrid = StateGrid()) -> None:
        if system.state_dim != PENDULUM_STATE_DIM:
            raise ValueError(f"optimal control by dynamic programming: expected a single "
                             f"pendulum (state (θ, θ̇)), got a {type(system).__name__} with "
                             f"{system.state_dim} state dimensions")
        params = np.asarray(params, dtype=np.float64)
        if params.shape != (len(system.parameter_names),):
            raise ValueError(f"params: expected shape ({len(system.parameter_names)},) "
                             f"({', '.join(system.parameter_names)}), got {params.shape}")
        require_at_least("steps", steps, 1, integer=True)
        self.system = system
        self.params = params
        self.grid = grid
        self.max_speed = float(system.config.max_speed)
        max_torque = float(system.config.max_torque)
        angles = -np.pi + 2 * np.pi * np.arange(grid.angles) / grid.angles
        speeds = np.linspace(-self.max_speed, self.max_speed, grid.speeds)
        torques = np.linspace(-max_torque, max_torque, grid.torques)
        # every (grid state, torque) pair, torque fastest: row s·T + t
        states = np.stack(np.meshgrid(angles, speeds, indexing="ij"), axis=-1).reshape(-1, 2)
        pairs = np.repeat(states, grid.torques, axis=0)
        actions = np.tile(torques, len(states))[:, None]
        rewards = system.reward(pairs, actions)
        columns, weights = self._corners(self._following(pairs, actions))
        rows = np.repeat(np.arange(len(pairs)), 4)
        transition = scipy.sparse.csr_matrix(
            (weights.ravel(), (rows, columns.ravel())), shape=(len(pairs), len(states)))
        # float32 storage: 40 MB for the default grid and 200 steps; backups in float64
        self.values = np.zeros((steps + 1, len(states)), dtype=np.float32)
        value = np.zeros(len(states))
        for k in range(steps):
            value = (rewards + transition @ value).reshape(len(states), grid.torques).max(axis=1)
            self.values[k + 1] = value

    @property
    def steps(self) -> int:
        """The longest horizon tabulated."""
        return len(self.values) - 1

    def _corners(self, states: NDArray[np.float64]) -> tuple[NDArray[np.int64],
                                                            NDArray[np.float64]]:
        """Flat grid indices ``(N, 4)`` of the cell around each state ``(N, 2)`` and their
        bilinear weights ``(N, 4)`` (rows sum to 1); speeds beyond the grid take its edge."""
        grid = self.grid
        position = (states[:, 0] + np.pi) / (2 * np.pi) * grid.angles
        low_angle = np.floor(position)
        angle_weight = position - low_angle
        low_angle = low_angle.astype(np.int64) % grid.angles
        high_angle = (low_angle + 1) % grid.angles
        speed = (np.clip(states[:, 1], -self.max_speed, self.max_speed) + self.max_speed) / (
            2 * self.max_speed) * (grid.speeds - 1)
        low_speed = np.minimum(np.floor(speed).astype(np.int64), grid.speeds - 2)
        speed_weight = speed - low_speed
        columns = np.stack([low_angle * grid.speeds + low_speed,
                            low_angle * grid.speeds + low_speed + 1,
                            high_angle * grid.speeds + low_speed,
                            high_angle * grid.speeds + low_speed + 1], axis=1)
        weights = np.stack([(1 - angle_weight) * (1 - speed_weight),
                            (1 - angle_weight) * speed_weight,
                            angle_weight * (1 - speed_weight),
                            angle_weight * speed_weight], axis=1)
        return columns, weights

    def value(self, states: NDArray[np.float64], remaining: NDArray[np.int64] | int
              ) -> NDArray[np.float64]:
        """``V_remaining`` ``(N,)`` of states ``(N, 2)``; ``remaining`` is an int or ``(N,)``
        in ``0 … steps``."""
        states = np.asarray(states, dtype=np.float64)
        remaining = np.broadcast_to(np.asarray(remaining, dtype=np.int64), (len(states),))
        if remaining.size and (remaining.min() < 0 or remaining.max() > self.steps):
            raise ValueError(f"remaining: expected steps in [0, {self.steps}], got "
                             f"{remaining.min()} to {remaining.max()}")
        columns, weights = self._corners(states)
        return (self.values[remaining[:, None], columns] * weights).sum(axis=1)

    def action_values(self, states: NDArray[np.float64], torques: NDArray[np.float64],
                      remaining: NDArray[np.int64]) -> NDArray[np.float64]:
        """``r(s, u) + V_{remaining − 1}(f(s, u))`` ``(N, U)`` of torques ``(U,)`` in states
        ``(N, 2)`` with ``remaining`` ``(N,)`` steps (each ≥ 1) left, through the true dynamics."""
        count, choices = len(states), len(torques)
        pairs = np.repeat(np.asarray(states, dtype=np.float64), choices, axis=0)
        actions = np.tile(torques, count)[:, None]
        rewards = self.system.reward(pairs, actions)
        return (rewards + self.value(self._following(pairs, actions),
                                     np.repeat(remaining - 1, choices))).reshape(count, choices)

    def _following(self, pairs: NDArray[np.float64], actions: NDArray[np.float64]
                   ) -> NDArray[np.float64]:
        """The states ``(N, 2)`` that ``actions`` ``(N, 1)`` lead to from ``pairs`` ``(N, 2)``."""
        params = np.broadcast_to(self.params, (len(pairs), len(self.params)))
        return self.system.step(pairs, actions, params)


class OptimalAgent:
    """Greedy on a :class:`PendulumValueTable` of each episode's physics, from the true state.

    At every step it picks, among ``candidates`` evenly spaced torques, the one maximising
    ``r(s, u) + V_{T − t − 1}(f(s, u))`` with ``t`` the steps taken and ``T`` the episode
    length, so the last steps are played for what is left of the episode. One table is solved
    per distinct parameter vector (each episode of a randomised-physics env gets its own).

    Args:
        env: the native noether-control vector env acted in (its ``states``,
            ``physical_parameters``, ``system`` and ``max_episode_steps`` are read).
        grid: the value table's grid.
        candidates: torques compared at every step (≥ 2).
    """

    def __init__(self, env: Any, grid: StateGrid = StateGrid(), candidates: int = 201) -> None:
        vector = getattr(env, "unwrapped", env)
        if not isinstance(vector, PixelVectorEnv):
            raise TypeError(f"optimal: expected a native noether-control vector env (its true "
                            f"states are read), got {type(vector).__name__}")
        if vector.system.state_dim != PENDULUM_STATE_DIM:
            raise ValueError(f"optimal: dynamic programming needs a single pendulum (state "
                             f"(θ, θ̇)), got {type(vector.system).__name__} with "
                             f"{vector.system.state_dim} state dimensions")
        require_at_least("candidates", candidates, 2, integer=True)
        self.env = vector
        self.num_envs = vector.num_envs
        self.grid = grid
        self.episode_steps = vector.max_episode_steps or 200
        box = vector.single_action_space
        self.candidates = np.linspace(float(box.low[0]), float(box.high[0]), candidates)
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._tables: dict[tuple[float, ...], PendulumValueTable] = {}

    def table(self, params: NDArray[np.float64]) -> PendulumValueTable:
        """The value table of physical parameters ``(P,)``, solved on first use."""
        key = tuple(float(value) for value in params)
        if key not in self._tables:
            self._tables[key] = PendulumValueTable(self.env.system, np.asarray(key),
                                                   self.episode_steps, self.grid)
        return self._tables[key]

    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Restart the step count of the episodes in ``mask``."""
        self.elapsed[check_mask(mask, self.num_envs)] = 0

    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Torques float32 ``(num_envs, 1)``; the observation is ignored (the state is read)."""
        states = self.env.states
        params = self.env.physical_parameters
        remaining = np.clip(self.episode_steps - self.elapsed, 1, self.episode_steps)
        actions = np.empty((self.num_envs, 1), dtype=np.float32)
        current = np.unique(params, axis=0)
        # keep only the running episodes' tables: a randomised-physics env makes one per episode
        keys = {tuple(float(value) for value in key) for key in current}
        self._tables = {key: table for key, table in self._tables.items() if key in keys}
        # one batched evaluation per table
        for key in current:
            rows = np.flatnonzero((params == key).all(axis=1))
            scores = self.table(key).action_values(states[rows], self.candidates, remaining[rows])
            actions[rows, 0] = self.candidates[scores.argmax(axis=1)]
        self.elapsed += 1
        return actions
