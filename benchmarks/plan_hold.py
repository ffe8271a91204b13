"""Where does MPC through a learned model lose return to the oracle: the swing-up or the hold?

    python benchmarks/plan_hold.py CHECKPOINT [--episodes 8] [--samples 500] [--horizon 20]
        [--temperature 1] [--iterations 1] [--noise-beta 0] [--seed 1000] [--warmup-action plan]

Runs MPPI through the model (from the env's pixels) and MPPI through the true simulator (the
oracle, from the true state) with the same planner settings on the same seeded episodes of
``PixelPendulum-v0``, and prints

- the return of each in the swing-up (steps 0–74) and in the hold (steps 100–199);
- over the hold, the mean signed angle ``θ`` the pendulum is held at and the mean torque: a
  model that misjudges where upright is holds the pendulum off it, paying ``θ²`` every step;
- per episode, the start state and the two returns: an episode the model's agent loses is
  visible with where it started (e.g. a pendulum starting at the edge of what the torque holds,
  lost in the idle steps of ``--warmup-action zero``);
- the model's predicted reward of holding the pendulum at rest at angles ``φ`` around upright
  (``P`` identical rendered frames, then the torque that holds it there, ``−m g l sin(φ) / 2``)
  against the true reward: the reward head's error where the hold is decided;
- where the model thinks such a pendulum goes under the holding torque and under that torque
  pushed by ±0.3 for 20 steps (its decoded frames, read off by the nearest frame rendered at
  rest), against the simulator: upright is unstable, so a model that brings the pendulum back
  to upright by itself sees no cost in leaving it there off by a little, or in pushing it.

Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.mpc import WARMUP_ACTIONS, MPCAgent, MPCConfig, OracleAgent
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import make_planner
from noether_control.envs.dynamics import angle_normalize
from noether_control.models.svg import SVGWorldModel

SWING_UP, HOLD = slice(0, 75), slice(100, 200)


def play(agent: MPCAgent | OracleAgent, env: gym.vector.VectorEnv, seed: int) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """Rewards ``(200, E)``, true states ``(200, E, 2)`` and actions ``(200, E)`` of one
    200-step episode per sub-env, reset with seeds ``seed, seed + 1, …``."""
    episodes = env.num_envs
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=[seed + i for i in range(episodes)])
    agent.reset(np.ones(episodes, dtype=np.bool_), rng)
    rewards, states, actions = [], [], []
    for _ in range(200):
        states.append(env.unwrapped.states)
        action = agent.act(observation, rng)
        observation, reward, *_ = env.step(action)
        rewards.append(reward)
        actions.append(action[:, 0])
    return np.array(rewards), np.array(states), np.array(actions)


def holding_torque(env: gym.vector.VectorEnv, angles: np.ndarray) -> np.ndarray:
    """Torques ``(len(angles),)`` that hold the first sub-env's pendulum at rest at ``angles``:
    gravity's torque on the uniform rod, ``m g l sin(φ) / 2``, cancelled."""
    gravity, mass, length = env.unwrapped.physical_parameters[0, :3]
    return -mass * gravity * length * np.sin(angles) / 2


def held_reward(model: SVGWorldModel, context: int, env: gym.vector.VectorEnv,
                angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true rewards ``(len(angles),)`` of holding the pendulum at rest at
    ``angles`` (within the torque bound) with :func:`holding_torque`."""
    system = env.unwrapped.system
    torque = holding_torque(env, angles)
    states = np.stack([angles, np.zeros_like(angles)], axis=1)
    frames = torch.as_tensor(system.render_pixels(states))
    frames = frames[:, None].expand(-1, context, -1, -1, -1)
    actions = torch.as_tensor(torque, dtype=torch.float32)[:, None, None]
    with torch.no_grad():
        state = model.encode_context(frames, actions.expand(-1, context - 1, -1))
        predicted = model.rollout(state, actions).rewards[:, 0].numpy()
    return predicted, system.reward(states, torque[:, None])


def read_angles(system: Any, frames: torch.Tensor, grid: np.ndarray) -> np.ndarray:
    """Angles ``(N,)`` of frames ``(N, C, S, S)`` in [0, 1]: for each, the angle of ``grid``
    whose frame rendered at rest is nearest in mean squared error."""
    rendered = system.render_pixels(np.stack([grid, np.zeros_like(grid)], axis=1))
    templates = torch.as_tensor(rendered).permute(0, 3, 1, 2).flatten(1).float() / 255
    flat = frames.flatten(1).float()
    # |f − t|² = |f|² − 2 f·t + |t|² with |f|² the same for every template: one matrix product
    # instead of an (N, G, pixels) tensor
    error = templates.pow(2).sum(1)[None] - 2 * flat @ templates.T
    return grid[error.argmin(1).cpu().numpy()]


def pushed_from_rest(model: SVGWorldModel, context: int, env: gym.vector.VectorEnv,
                     angles: np.ndarray, push: float, steps: int) -> tuple[
                         np.ndarray, np.ndarray]:
    """Angles ``(len(angles), steps)`` the model predicts (decoded and read off) and the
    simulator gives, from rest at ``angles`` under the holding torque plus ``push``."""
    system = env.unwrapped.system
    torque = holding_torque(env, angles) + push
    states = np.stack([angles, np.zeros_like(angles)], axis=1)
    frames = torch.as_tensor(system.render_pixels(states))[:, None].expand(-1, context, -1, -1,
                                                                            -1)
    actions = torch.as_tensor(torque, dtype=torch.float32)[:, None, None]
    with torch.no_grad():
        state = model.encode_context(frames, actions.expand(-1, context - 1, -1))
        # a rollout's frame 0 is the observed frame: steps + 1 actions reach frame ``steps``
        imagined = model.rollout(state, actions.expand(-1, steps + 1, -1), decode=True).frames
    grid = np.linspace(-np.pi, np.pi, 1441)
    predicted = read_angles(system, imagined[:, 1:].flatten(0, 1), grid).reshape(len(angles),
                                                                                 steps)
    params = np.repeat(env.unwrapped.physical_parameters[:1], len(angles), axis=0)
    true = []
    for _ in range(steps):
        states = system.step(states, torque[:, None], params)
        true.append(angle_normalize(states[:, 0]))
    return predicted, np.stack(true, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="world-model checkpoint or train run directory")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0, help="MPPI's λ")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--noise-beta", type=float, default=0.0,
                        help="colour of MPPI's noise along the horizon (0 white, 2 brown)")
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--warmup-action", default="plan", choices=WARMUP_ACTIONS,
                        help="the model agent's action before it has P frames")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    model, context = loaded.model, loaded.context_frames
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.episodes,
                       vectorization_mode="vector_entry_point",
                       image_size=model.config.image_size)
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": args.samples, "horizon": args.horizon,
                            "temperature": args.temperature, "iterations": args.iterations,
                            "noise_beta": args.noise_beta}, box.low, box.high)
    agents = {"oracle": OracleAgent(env, planner),
              "model": MPCAgent(model, planner, box, args.episodes, context,
                                MPCConfig(warmup_action=args.warmup_action))}
    print(f"checkpoint {loaded.path} ({loaded.real_steps} real steps); MPPI {args.samples} x "
          f"{args.horizon}, λ {args.temperature}, {args.iterations} iterations, noise β "
          f"{args.noise_beta}; {args.episodes} episodes from seed {args.seed}; model agent's "
          f"warm-up: {args.warmup_action}")
    print(f"{'planning through':<18}{'return':>9}{'swing-up':>10}{'hold':>8}"
          f"{'held θ':>9}{'torque':>8}")
    returns, starts = {}, None
    for name, agent in agents.items():
        rewards, states, actions = play(agent, env, args.seed)
        returns[name], starts = rewards.sum(0), states[0]
        angle = angle_normalize(states[HOLD, :, 0])
        print(f"{name:<18}{rewards.sum(0).mean():>9.1f}{rewards[SWING_UP].sum(0).mean():>10.1f}"
              f"{rewards[HOLD].sum(0).mean():>8.2f}{angle.mean():>+9.3f}"
              f"{actions[HOLD].mean():>+8.3f}")
    print(f"{'seed':>6}{'start θ':>9}{'start θ̇':>9}{'oracle':>9}{'model':>9}")
    for episode, (oracle_return, model_return) in enumerate(
            zip(returns["oracle"], returns["model"], strict=True)):
        print(f"{args.seed + episode:>6}{angle_normalize(starts[episode, 0]):>+9.2f}"
              f"{starts[episode, 1]:>+9.2f}{oracle_return:>9.1f}{model_return:>9.1f}")
    angles = np.linspace(-0.4, 0.4, 9)
    predicted, true = held_reward(model, context, env, angles)
    print("held at rest:   φ " + " ".join(f"{a:+6.2f}" for a in angles))
    print("true reward       " + " ".join(f"{r:+6.3f}" for r in true))
    print("predicted reward  " + " ".join(f"{r:+6.3f}" for r in predicted))
    starts = np.array([-0.2, -0.1, 0.0, 0.1, 0.2])
    print("from rest at φ, angle after 5 / 10 / 20 steps: model | simulator")
    for push in (0.0, -0.3, 0.3):
        predicted, true = pushed_from_rest(model, context, env, starts, push, 20)
        print(f"holding torque {push:+.1f}")
        for start, imagined, real in zip(starts, predicted, true, strict=True):
            print(f"  φ {start:+.2f}: " + " ".join(f"{imagined[k]:+6.2f}" for k in (4, 9, 19))
                  + "  | " + " ".join(f"{real[k]:+6.2f}" for k in (4, 9, 19)))
    env.close()


if __name__ == "__main__":
    main()
