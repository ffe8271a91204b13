"""How far below the optimum does the best planner play? The optimal controller as the ceiling.

    python benchmarks/optimal_ceiling.py [--episodes 60] [--seed 1000]
        [--grids 128x101x41 256x201x41 384x301x41 512x401x41]

On seeded episodes of ``PixelPendulum-v0`` (episode ``i`` reset with seed ``seed + i``, as
``noether-control plan`` seeds them), the script plays:

1. the optimal agent (``OptimalAgent``: greedy on the dynamic-programming value table from the
   true state) on each grid of ``--grids`` (angles x speeds x torques), to show how its return
   converges as the grid is refined;
2. oracle MPPI 500 x 20, λ 0.1, 2 iterations, β 2 (the best planner through the true simulator
   measured in docs/rl.md), without and with the value table of the finest grid at the end of
   every candidate (``V_{T − 20}`` of the state the candidate ends in, as a value-guided
   planner such as TD-MPC adds a learned one),

and prints the mean returns and every row's paired difference from the optimal agent on the
finest grid, with the seeds where MPPI falls furthest behind. Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import run_episodes
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.optimal import OptimalAgent, StateGrid
from noether_control.agents.plan_table import paired_difference
from noether_control.agents.planners import make_planner
from noether_control.agents.policies import Policy

HORIZON = 20


def parse_grid(text: str) -> StateGrid:
    """``"256x201x41"`` -> ``StateGrid(256, 201, 41)``."""
    parts = text.split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"--grids: expected ANGLESxSPEEDSxTORQUES such as "
                                         f"256x201x41, got {text!r}")
    return StateGrid(*(int(part) for part in parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--grids", type=parse_grid, nargs="+",
                        default=[parse_grid(text) for text in
                                 ("128x101x41", "256x201x41", "384x301x41", "512x401x41")])
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.num_envs,
                       vectorization_mode="vector_entry_point")

    def play(agent: Policy) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        returns = run_episodes(agent, env, args.episodes, args.seed,
                               np.random.default_rng(args.seed)).returns
        return returns, time.perf_counter() - started

    rows: list[tuple[str, np.ndarray, float]] = []
    for grid in args.grids:
        agent = OptimalAgent(env, grid)
        returns, seconds = play(agent)
        rows.append((f"optimal, {grid.angles}x{grid.speeds}x{grid.torques}", returns, seconds))
    optimal, finest = rows[-1][1], agent
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": 500, "horizon": HORIZON,
                            "temperature": 0.1, "iterations": 2, "noise_beta": 2.0},
                           box.low, box.high)
    mppi, seconds = play(OracleAgent(env, planner))
    rows.append(("oracle MPPI 500 x 20, β 2", mppi, seconds))
    table = finest.table(env.unwrapped.physical_parameters[0])
    remaining = finest.episode_steps - HORIZON
    returns, seconds = play(OracleAgent(env, planner, terminal_value=lambda states: table.value(
        states, remaining)))
    rows.append(("  + the table's value at the end", returns, seconds))
    env.close()

    print(f"{args.episodes} episodes of PixelPendulum-v0 from seed {args.seed}; differences are "
          f"paired, against the optimal agent on the finest grid")
    print(f"{'agent':<36}{'return':>9}{'± s.e.':>8}{'− optimal, 95 %':>26}{'better':>8}"
          f"{'s':>7}")
    for name, returns, seconds in rows:
        difference = paired_difference(returns, optimal)
        interval = (f"{difference['mean']:+.1f} [{difference['low']:+.1f}, "
                    f"{difference['high']:+.1f}]" if difference["low"] is not None else "")
        print(f"{name:<36}{returns.mean():>9.1f}"
              f"{returns.std(ddof=1) / np.sqrt(len(returns)):>8.1f}{interval:>26}"
              f"{difference['better']:>8}{seconds:>7.0f}")
    behind = np.argsort(mppi - optimal)[:8]
    print("where oracle MPPI falls furthest behind (seed: optimal / MPPI / MPPI + value):")
    print(", ".join(f"{args.seed + i}: {optimal[i]:.1f} / {mppi[i]:.1f} / {returns[i]:.1f}"
                    for i in behind))


if __name__ == "__main__":
    main()
