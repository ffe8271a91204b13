"""How far below the optimum does the best planner play? The optimal controller as the ceiling.

    python benchmarks/optimal_ceiling.py [--episodes 60] [--seed 1000]
        [--grids 128x101x41 256x201x41 384x301x41 512x401x41] [--sac SAC_ZIP]

On seeded episodes of ``PixelPendulum-v0`` (episode ``i`` reset with seed ``seed + i``, as
``noether-control plan`` seeds them), the script plays:

1. the optimal agent (``OptimalAgent``: greedy on the dynamic-programming value table from the
   true state) on each grid of ``--grids`` (angles x speeds x torques), to show how its return
   converges as the grid is refined;
2. oracle MPPI 500 x 20, λ 0.1, 2 iterations, β 2 (the best planner through the true simulator
   measured in docs/rl.md), without and with the value table of the finest grid at the end of
   every candidate (``V_{T − 20}`` of the state the candidate ends in, as a value-guided
   planner such as TD-MPC adds a learned one), and with that value and the table's greedy
   policy proposing a warm start (its rollout replaces the shifted previous plan where it
   scores higher: ``OracleAgent(proposal_policy=...)``);
3. with ``--sac`` (a state-observation SAC checkpoint of ``benchmarks/sac_model_free.py --obs
   state``): that policy alone, and oracle MPPI with its critic ``min(Q₁, Q₂)(s, π(s))`` at the
   end, without and with its policy proposing the warm start: the same planner with a value
   and a policy learned from real experience instead of the exact ones,

and prints the mean returns and every row's paired differences from the optimal agent on the
finest grid and from plain oracle MPPI, with the seeds where MPPI falls furthest behind.
Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import run_episodes
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.optimal import OptimalAgent, StateGrid
from noether_control.agents.plan_table import paired_difference
from noether_control.agents.planners import make_planner
from noether_control.agents.policies import Policy

HORIZON = 20

StateFunction = Callable[[NDArray[np.float64]], NDArray[np.float64]]


def parse_grid(text: str) -> StateGrid:
    """``"256x201x41"`` -> ``StateGrid(256, 201, 41)``."""
    parts = text.split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"--grids: expected ANGLESxSPEEDSxTORQUES such as "
                                         f"256x201x41, got {text!r}")
    return StateGrid(*(int(part) for part in parts))


def table_policy_and_value(agent: OptimalAgent, params: NDArray[np.float64]
                           ) -> tuple[StateFunction, StateFunction]:
    """The greedy policy on ``agent``'s table with the whole episode left, and the table's
    value with what is left after one plan: ``states (N, 2) -> actions (N, 1)`` and
    ``-> values (N,)``."""
    table = agent.table(params)
    episode = agent.episode_steps

    def policy(states: NDArray[np.float64]) -> NDArray[np.float64]:
        scores = table.action_values(states, agent.candidates, np.full(len(states), episode))
        return agent.candidates[scores.argmax(axis=1)][:, None]

    return policy, lambda states: table.value(states, episode - HORIZON)


def sac_policy_and_value(path: str, system: Any) -> tuple[StateFunction, StateFunction]:
    """A state SAC's deterministic policy ``states (N, 2) -> actions (N, 1)`` and its critic's
    value ``min(Q₁, Q₂)(s, π(s))`` ``-> (N,)``, from its checkpoint."""
    from stable_baselines3 import SAC

    agent = SAC.load(path, device="cpu")

    def policy(states: NDArray[np.float64]) -> NDArray[np.float64]:
        actions, _ = agent.predict(system.state_observation(states), deterministic=True)
        return np.asarray(actions, dtype=np.float64)

    def value(states: NDArray[np.float64]) -> NDArray[np.float64]:
        with torch.no_grad():
            observations = torch.as_tensor(system.state_observation(states))
            scaled = agent.actor(observations, deterministic=True)
            return torch.min(*agent.critic(observations, scaled)).squeeze(1).double().numpy()

    return policy, value


class StatePolicy:
    """A state policy acting on the env's true states (the observation is ignored)."""

    def __init__(self, env: Any, policy: StateFunction) -> None:
        self.env = env.unwrapped
        self.num_envs = env.num_envs
        self.policy = policy

    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Nothing to restart."""

    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, 1)`` of the policy in the true states."""
        return self.policy(self.env.states).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--grids", type=parse_grid, nargs="+",
                        default=[parse_grid(text) for text in
                                 ("128x101x41", "256x201x41", "384x301x41", "512x401x41")])
    parser.add_argument("--sac", help="checkpoint (.zip) of a state-observation SAC agent")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.num_envs,
                       vectorization_mode="vector_entry_point")
    rows: dict[str, tuple[np.ndarray, float]] = {}

    def play(name: str, agent: Policy) -> np.ndarray:
        started = time.perf_counter()
        returns = run_episodes(agent, env, args.episodes, args.seed,
                               np.random.default_rng(args.seed)).returns
        rows[name] = returns, time.perf_counter() - started
        return returns

    for grid in args.grids:
        finest = OptimalAgent(env, grid)
        optimal = play(f"optimal, {grid.angles}x{grid.speeds}x{grid.torques}", finest)
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": 500, "horizon": HORIZON,
                            "temperature": 0.1, "iterations": 2, "noise_beta": 2.0},
                           box.low, box.high)
    mppi = play("oracle MPPI 500 x 20, β 2", OracleAgent(env, planner))
    policy, value = table_policy_and_value(finest, env.unwrapped.system.fixed_parameters)
    valued = play("  + the table's value at the end",
                  OracleAgent(env, planner, terminal_value=value))
    play("  + its value and its policy's proposal",
         OracleAgent(env, planner, terminal_value=value, proposal_policy=policy))
    if args.sac:
        policy, value = sac_policy_and_value(args.sac, env.unwrapped.system)
        play("SAC (state) alone", StatePolicy(env, policy))
        play("oracle MPPI + SAC's critic at the end",
             OracleAgent(env, planner, terminal_value=value))
        play("  + SAC's policy's proposal",
             OracleAgent(env, planner, terminal_value=value, proposal_policy=policy))
    env.close()

    print(f"{args.episodes} episodes of PixelPendulum-v0 from seed {args.seed}; differences are "
          f"paired")
    print(f"{'agent':<40}{'return':>9}{'± s.e.':>7}{'− optimal, 95 %':>25}"
          f"{'− MPPI, 95 %':>25}{'> MPPI':>7}{'s':>6}")
    for name, (returns, seconds) in rows.items():
        columns = []
        for reference in (optimal, mppi):
            difference = paired_difference(returns, reference)
            columns.append(f"{difference['mean']:+.1f} [{difference['low']:+.1f}, "
                           f"{difference['high']:+.1f}]" if difference["low"] is not None else "")
        better = paired_difference(returns, mppi)["better"]
        print(f"{name:<40}{returns.mean():>9.1f}"
              f"{returns.std(ddof=1) / np.sqrt(len(returns)):>7.1f}{columns[0]:>25}"
              f"{columns[1]:>25}{better:>7}{seconds:>6.0f}")
    behind = np.argsort(mppi - optimal)[:8]
    print("where oracle MPPI falls furthest behind (seed: optimal / MPPI / MPPI + value):")
    print(", ".join(f"{args.seed + i}: {optimal[i]:.1f} / {mppi[i]:.1f} / {valued[i]:.1f}"
                    for i in behind))


if __name__ == "__main__":
    main()
