"""Would a value at the end of the plan lift the planner's ceiling? Oracle MPPI with a value.

    python benchmarks/oracle_value.py DATASET [--gammas 0.9 0.95 0.97] [--weights 1.0 0.5]
        [--episodes 60] [--seed 1000] [--noise-beta 0.0]

MPPI with a 20-step horizon (1 s) cannot see the top from a pendulum hanging at rest; a value
of the state its plan ends in would let it. Real data gives one value without more experience:
that of the policy that collected it. For each discount ``γ`` the script fits
``V(cos θ, sin θ, θ̇ / 8)`` (an MLP) by TD(0) with a slowly following target on the transitions
of ``DATASET`` (a noether-control dataset directory whose episodes keep the true state in
``infos/state``, such as the last one of ``mbrl experiment=pendulum_20k``), then plays oracle
MPPI 500 × 20, λ 0.1, 2 iterations through the true simulator without and with ``weight · V``
added at the end of every candidate (``OracleAgent(terminal_value=...)``) on the same
seeded episodes of ``PixelPendulum-v0``, and prints the mean returns and the paired differences.
Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import run_episodes
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.plan_table import paired_difference
from noether_control.agents.planners import make_planner
from noether_control.data.minari_io import read_episodes


def value_features(states: NDArray[np.float64] | Tensor) -> Tensor:
    """``(cos θ, sin θ, θ̇ / 8)`` float32 ``(N, 3)`` of pendulum states ``(N, 2)``."""
    states = torch.as_tensor(states, dtype=torch.float32)
    return torch.stack([states[:, 0].cos(), states[:, 0].sin(), states[:, 1] / 8.0], dim=1)


def dataset_transitions(path: str) -> tuple[Tensor, Tensor, Tensor]:
    """Features of the states before and after every step ``(N, 3)``, and its reward ``(N,)``."""
    before, after, rewards = [], [], []
    for episode in read_episodes(path):
        states = episode.infos["state"]
        before.append(states[:-1])
        after.append(states[1:])
        rewards.append(episode.rewards)
    return (value_features(np.concatenate(before)), value_features(np.concatenate(after)),
            torch.as_tensor(np.concatenate(rewards), dtype=torch.float32))


def fit_value(before: Tensor, after: Tensor, rewards: Tensor, gamma: float, steps: int = 4000,
              batch: int = 1024, seed: int = 0) -> nn.Module:
    """``V`` fitted by TD(0), ``V(s) ≈ r + γ V̄(s')``, ``V̄`` following ``V`` by Polyak averaging
    (0.99): the discounted value of the policy that collected the transitions."""
    torch.manual_seed(seed)
    value = nn.Sequential(nn.Linear(3, 128), nn.ELU(), nn.Linear(128, 128), nn.ELU(),
                          nn.Linear(128, 1))
    target = copy.deepcopy(value)
    optimiser = torch.optim.Adam(value.parameters(), lr=1e-3)
    for _ in range(steps):
        index = torch.randint(len(rewards), (batch,))
        with torch.no_grad():
            bootstrapped = rewards[index] + gamma * target(after[index]).squeeze(1)
        loss = (value(before[index]).squeeze(1) - bootstrapped).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for follower, leader in zip(target.parameters(), value.parameters(), strict=True):
                follower.lerp_(leader, 0.01)
    return value.eval()


def weighted_value(value: nn.Module, weight: float) -> Callable[[NDArray[np.float64]],
                                                                NDArray[np.float64]]:
    """``weight · value`` as the oracle's terminal value: states ``(N, 2)`` -> float64 ``(N,)``."""
    def terminal_value(states: NDArray[np.float64]) -> NDArray[np.float64]:
        with torch.no_grad():
            return weight * value(value_features(states)).squeeze(1).double().numpy()

    return terminal_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="noether-control dataset directory with infos/state")
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.9, 0.95, 0.97])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--noise-beta", type=float, default=0.0, help="MPPI's noise colour")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.num_envs,
                       vectorization_mode="vector_entry_point")
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": 500, "horizon": 20, "temperature": 0.1,
                            "iterations": 2, "noise_beta": args.noise_beta}, box.low, box.high)

    def play(agent: OracleAgent) -> np.ndarray:
        rng = np.random.default_rng(args.seed)
        return run_episodes(agent, env, args.episodes, args.seed, rng).returns

    before, after, rewards = dataset_transitions(args.dataset)
    print(f"{len(rewards)} transitions of {args.dataset}; oracle MPPI 500 x 20, λ 0.1, 2 it, "
          f"β {args.noise_beta}; {args.episodes} episodes from seed {args.seed}")
    plain = play(OracleAgent(env, planner))
    print(f"{'terminal value':<24}{'V(upright)':>11}{'V(0.2 rad)':>11}{'V(hanging)':>11}"
          f"{'return':>9}{'− no value, paired 95 %':>28}{'better':>8}")
    print(f"{'none':<24}{'':>33}{plain.mean():>9.1f}")
    probes = value_features(np.array([[0.0, 0.0], [0.2, 0.0], [np.pi, 0.0]]))
    for gamma in args.gammas:
        value = fit_value(before, after, rewards, gamma)
        with torch.no_grad():
            at = value(probes).squeeze(1).tolist()
        for weight in args.weights:
            returns = play(OracleAgent(env, planner,
                                       terminal_value=weighted_value(value, weight)))
            difference = paired_difference(returns, plain)
            print(f"{f'γ {gamma}, weight {weight}':<24}{at[0]:>11.1f}{at[1]:>11.1f}{at[2]:>11.1f}"
                  f"{returns.mean():>9.1f}{difference['mean']:>+12.1f} "
                  f"[{difference['low']:+.1f}, {difference['high']:+.1f}]"
                  f"{difference['better']:>8}")
    env.close()


if __name__ == "__main__":
    main()
