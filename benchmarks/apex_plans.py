"""Where the agent itself goes wrong: its plan against the simulator's best, step by step.

    python benchmarks/apex_plans.py CHECKPOINT --seeds 1022,1044 --at 40 [--samples 500]
        [--horizon 20] [--temperature 0.1] [--iterations 2] [--noise-beta 2.0]

:mod:`plan_diagnosis` scores candidates along the oracle's trajectories, so it never visits the
states where the agent's own episode goes wrong (a first swing that fails, after which the
agent keeps pushing). This script plays MPPI through the model on the seeded episodes, as one
batch like ``plan`` does, up to step ``--at``. There it takes the agent's plan M and the
simulator's best plan O from the same state (MPPI ``2 × samples`` × horizon, 8 iterations on
the true dynamics, from zero), and prints for each plan, step by step, the action, the true
angle and velocity, the angle the model imagines (read off its decoded frame,
:func:`plan_diagnosis.imagined_states`), the env's reward and the reward head's. The sums
compare three scores of each plan: the head's, the env's reward on the imagined states, and the
simulator's. A plan the head prefers while the imagined states with the true reward do not is
the head's error; one the imagined states already prefer is the dynamics'.

Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from plan_diagnosis import imagined_states

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.mpc import MPCAgent, MPCConfig
from noether_control.agents.oracle import true_dynamics_objective
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import make_planner
from noether_control.envs.dynamics import angle_normalize


def true_states(env: gym.vector.VectorEnv, start: np.ndarray, plans: torch.Tensor
                ) -> np.ndarray:
    """States ``(E, N, H, 2)`` before each action of plans ``(E, N, H, A)`` on the simulator,
    from states ``start`` ``(E, 2)``."""
    system, params = env.unwrapped.system, env.unwrapped.physical_parameters
    episodes, count, horizon = plans.shape[:3]
    state = np.repeat(start, count, axis=0)
    repeated = np.repeat(params, count, axis=0)
    flat = plans.flatten(0, 1).double().numpy()
    states = []
    for k in range(horizon):
        states.append(state)
        state = system.step(state, flat[:, k], repeated)
    return np.stack(states, 1).reshape(episodes, count, horizon, 2)


def seed_list(text: str) -> list[int]:
    """``"1022,1044"`` → ``[1022, 1044]``."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="world-model checkpoint or train run directory")
    parser.add_argument("--seeds", type=seed_list, required=True,
                        help="episode seeds, comma-separated")
    parser.add_argument("--at", type=int, required=True, help="the step to compare plans at")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=0.1, help="MPPI's λ")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--noise-beta", type=float, default=2.0,
                        help="colour of MPPI's noise along the horizon (0 white, 2 brown)")
    args = parser.parse_args()
    seeds: list[int] = args.seeds
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    model, context = loaded.model.eval(), loaded.context_frames
    if context < 2:
        parser.error(f"checkpoint: expected a model with at least 2 context frames (imagined "
                     f"velocities come from the last two), got {context}")
    if args.at < context:
        parser.error(f"--at: expected ≥ the model's {context} context frames, got {args.at}")
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=len(seeds),
                       vectorization_mode="vector_entry_point",
                       image_size=model.config.image_size)
    box = env.single_action_space
    settings = {"kind": "mppi", "samples": args.samples, "horizon": args.horizon,
                "temperature": args.temperature, "iterations": args.iterations,
                "noise_beta": args.noise_beta}
    agent = MPCAgent(model, make_planner(settings, box.low, box.high), box, len(seeds), context,
                     MPCConfig(warmup_action="plan"))
    best = make_planner(dict(settings, samples=2 * args.samples, iterations=8), box.low,
                        box.high)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=seeds)
    agent.reset(np.ones(len(seeds), dtype=np.bool_))
    for _ in range(args.at):
        observation, *_ = env.step(agent.act(observation, rng))
    start = env.unwrapped.states.copy()
    agent.act(observation, rng)
    agent_plan = agent.loop.chosen.clone()
    objective = true_dynamics_objective(env.unwrapped.system, start,
                                        env.unwrapped.physical_parameters, "cpu")
    best_plan = best.plan(objective, torch.zeros_like(agent_plan),
                          torch.Generator().manual_seed(0))
    plans = torch.stack([agent_plan, best_plan], 1).float()  # (E, 2, H, A)
    frames, actions = agent.context(torch.arange(len(seeds)))
    with torch.no_grad():
        state = model.encode_context(frames.repeat_interleave(2, 0),
                                     actions.repeat_interleave(2, 0))
        head = model.rollout(state, plans.flatten(0, 1)).rewards.view(len(seeds), 2, -1).numpy()
    imagined = imagined_states(model, frames, actions, plans, env)
    truth = true_states(env, start, plans)
    reward = env.unwrapped.system.reward
    flat_actions = plans.reshape(-1, 1).double().numpy()
    true_reward = reward(truth.reshape(-1, 2), flat_actions).reshape(head.shape)
    imagined_reward = reward(imagined.reshape(-1, 2), flat_actions).reshape(head.shape)
    for e, seed in enumerate(seeds):
        print(f"seed {seed}, step {args.at}: θ {angle_normalize(start[e, 0]):+.2f} rad, "
              f"θ̇ {start[e, 1]:+.2f} rad/s")
        for p, name in enumerate(("agent's plan M", "simulator's best plan O")):
            print(f"  {name}: head {head[e, p].sum():.1f}, imagined states with the true reward "
                  f"{imagined_reward[e, p].sum():.1f}, simulator {true_reward[e, p].sum():.1f}")
            print(f"  {'k':>3}{'u':>7}{'θ':>7}{'θ̇':>7}{'θ imagined':>12}{'reward':>8}"
                  f"{'head':>8}")
            for k in range(args.horizon):
                true_angle = angle_normalize(truth[e, p, k, 0])
                print(f"  {k:>3}{plans[e, p, k, 0]:>+7.2f}{true_angle:>+7.2f}"
                      f"{truth[e, p, k, 1]:>+7.2f}{angle_normalize(imagined[e, p, k, 0]):>+12.2f}"
                      f"{true_reward[e, p, k]:>8.2f}{head[e, p, k]:>8.2f}")
    env.close()


if __name__ == "__main__":
    main()
