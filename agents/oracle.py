"""The oracle's objective: candidate action sequences rolled out through the true simulator.

An oracle MPC agent plans with :func:`true_dynamics_objective` instead of a learned model: it
sees the environment's true states and physical parameters and scores candidates with the very
functions the environment steps with (:mod:`noether_control.envs.dynamics`), so its returns are
exactly what the environment would pay. It bounds what any learned model can achieve with the
same planner.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from noether_control.agents.planners import Objective
from noether_control.envs.systems import PendulumSystemBase


def true_dynamics_objective(
    system: PendulumSystemBase,
    states: NDArray[np.float64],
    params: NDArray[np.float64],
    device: torch.device | str,
    terminal_value: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
) -> Objective:
    """The objective of planning from ``states`` through the true dynamics of ``system``.

    Args:
        system: the environment's system (``env.system`` of a native vector env).
        states: ``(E, D)`` float64 true states of the ``E`` episodes (``env.states``).
        params: ``(E, P)`` float64 physical parameters (``env.physical_parameters``).
        device: where the returns go (the planner's device).
        terminal_value: optional ``value(states (E·N, D) float64) -> (E·N,)``, added to each
            candidate's return at the state its last action leads to: a value of what follows
            the plan, so that a short horizon need not see the whole swing-up.

    Returns:
        ``objective(actions float (E, N, H, A)) -> returns (E, N)`` on ``device``: the
        undiscounted sum over the horizon of ``system.reward`` of each candidate, stepped from
        its episode's state, with the reward taken on the state before each step as the
        environment does (plus ``terminal_value`` of the last state). All ``E·N`` candidates
        step together in float64 NumPy, one loop over ``H``. Actions keep their dtype, so
        float32 candidates are stepped as the environment steps float32 actions, bit for bit;
        the returns are in the candidates' dtype (float32 for a float32 planner; float64
        candidates give float64 returns, exact to rounding).
        Not differentiable: use it with the sampling planners.
    """
    states = np.array(states, dtype=np.float64)
    params = np.array(params, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] != system.state_dim:
        raise ValueError(
            f"states: expected an array (E, {system.state_dim}), got shape {states.shape}"
        )
    expected_params = (states.shape[0], len(system.parameter_names))
    if params.shape != expected_params:
        raise ValueError(f"params: expected shape {expected_params}, got {params.shape}")
    episodes = states.shape[0]

    def objective(actions: Tensor) -> Tensor:
        if actions.ndim != 4 or actions.shape[0] != episodes or actions.shape[3] != (
            system.action_dim
        ):
            raise ValueError(
                f"actions: expected a tensor ({episodes}, N, H, {system.action_dim}), "
                f"got shape {tuple(actions.shape)}"
            )
        E, N, H, A = actions.shape
        torques = actions.detach().cpu().numpy().reshape(E * N, H, A)
        x = np.repeat(states, N, axis=0)
        p = np.repeat(params, N, axis=0)
        returns = np.zeros(E * N, dtype=np.float64)
        for step in range(H):
            returns += system.reward(x, torques[:, step])
            x = system.step(x, torques[:, step], p)
        if terminal_value is not None:
            returns += terminal_value(x)
        return torch.as_tensor(returns.reshape(E, N), dtype=actions.dtype, device=device)

    return objective


def policy_rollout(
    system: PendulumSystemBase,
    states: NDArray[np.float64],
    params: NDArray[np.float64],
    policy: Callable[[NDArray[np.float64]], NDArray[np.floating]],
    horizon: int,
) -> NDArray[np.float64]:
    """The plans ``(E, horizon, A)`` float64 a state ``policy`` (``states (E, D) -> actions
    (E, A)``) makes from ``states`` ``(E, D)`` through the true dynamics of ``system`` with
    ``params`` ``(E, P)``; actions are clipped to the torque bound before they are stepped."""
    limit = float(system.config.max_torque)
    x = np.array(states, dtype=np.float64)
    plans = []
    for _ in range(horizon):
        actions = np.clip(np.asarray(policy(x), dtype=np.float64), -limit, limit)
        if actions.shape != (len(x), system.action_dim):
            raise ValueError(f"policy: expected actions of shape ({len(x)}, "
                             f"{system.action_dim}), got {actions.shape}")
        plans.append(actions)
        x = system.step(x, actions, params)
    return np.stack(plans, axis=1)
