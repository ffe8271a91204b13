"""Does a world model rank candidate plans as the true simulator does, and where not?

    python benchmarks/plan_diagnosis.py CHECKPOINT [--episodes 4] [--samples 200] [--noise 1.0]
        [--noise-beta 2.0] [--decompose]

MPC through a learned model fails when the model's predicted returns order the candidates
differently from their true returns. This script measures that ordering where it matters: along
the trajectories of the oracle (MPPI through the true simulator) swinging the pendulum up and
holding it, at every sixth step it draws ``samples`` candidate plans (the oracle's next
``horizon`` actions plus Gaussian noise of ``noise`` N·m, white or coloured along the horizon
as MPPI's ``noise_beta`` colours it, clipped), scores them with the true
simulator (``true_dynamics_objective``) and with the model (``plan_returns`` from the model's
context of the last ``P`` real frames), and reports

- the Spearman rank correlation of the two, split into states near the top (``|θ| < 0.8``) and
  swinging states: 1 means the model would pick the plans the simulator would;
- the mean true and predicted return of the candidates in each group: a gap is a reward bias;
- the regret of the model's pick: the true return of the best candidate minus the true return
  of the candidate the model ranks first. A planner with a low temperature acts on the top of
  the model's ranking, where a high rank correlation over all candidates can still hide errors;
- with ``--decompose``, the regret of the pick that the model's dynamics make with the true
  reward: each candidate's imagined frames are decoded, their angles read off by matching
  frames rendered at rest (:func:`plan_hold.read_angles`), the velocities taken as backward
  differences (exact for the pendulum's semi-implicit step) and the env's reward applied. A
  regret that falls from the head's to this one is the reward head's share; what remains is
  the dynamics'.

Figures are in docs/planning.md and docs/rl.md.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from plan_hold import read_angles
from scipy.stats import spearmanr

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.oracle import true_dynamics_objective
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import colored_noise, make_planner
from noether_control.envs.dynamics import angle_normalize
from noether_control.models.planning import plan_returns
from noether_control.models.svg import SVGWorldModel

ANGLE_GRID = np.linspace(-np.pi, np.pi, 721)  # templates 0.5° apart


def oracle_trajectories(env: gym.vector.VectorEnv, steps: int, seed: int) -> tuple[
        torch.Tensor, torch.Tensor, np.ndarray]:
    """Frames uint8 ``(E, steps + 1, S, S, 3)``, actions ``(E, steps, 1)`` and true states
    ``(E, steps, 2)`` (before each action) of the oracle swinging up from seeded resets."""
    box = env.single_action_space
    agent = OracleAgent(env, make_planner({"kind": "mppi"}, box.low, box.high))
    rng = np.random.default_rng(seed)
    episodes = env.num_envs
    observation, _ = env.reset(seed=[seed + i for i in range(episodes)])
    agent.reset(np.ones(episodes, dtype=np.bool_))
    frames, actions, states = [observation], [], []
    for _ in range(steps):
        states.append(env.unwrapped.states)
        action = agent.act(observation, rng)
        actions.append(action)
        observation, *_ = env.step(action)
        frames.append(observation)
    return (torch.as_tensor(np.stack(frames, 1)), torch.as_tensor(np.stack(actions, 1)),
            np.stack(states, 1))


def imagined_states(model: SVGWorldModel, context_frames: torch.Tensor,
                    context_actions: torch.Tensor, candidates: torch.Tensor,
                    env: gym.vector.VectorEnv) -> np.ndarray:
    """States ``(E, N, H, 2)`` (angle unwrapped along the plan, velocity) before each action of
    candidates ``(E, N, H, A)``, as the model imagines them from its context (uint8 frames
    ``(E, P, S, S, C)``, ``P ≥ 2``, and the ``P - 1`` actions between): angles read off its
    decoded frames and the last two real ones, velocities their backward differences."""
    system = env.unwrapped.system
    episodes, samples, horizon = candidates.shape[:3]
    states = np.empty((episodes, samples, horizon, 2))
    last_two = context_frames[:, -2:].permute(0, 1, 4, 2, 3).flatten(0, 1) / 255
    seen = read_angles(system, last_two, ANGLE_GRID).reshape(episodes, 2)
    for e in range(episodes):  # one episode's decoded frames at a time bounds the memory
        with torch.no_grad():
            state = model.encode_context(context_frames[e : e + 1], context_actions[e : e + 1])
            frames = model.rollout(state.expand(samples), candidates[e], decode=True).frames
        # frame 0 of a rollout is the observed frame's own decoding; frame k the state after k
        # actions, the one action k is applied to
        imagined = read_angles(system, frames[:, 1:].flatten(0, 1),
                               ANGLE_GRID).reshape(samples, horizon - 1)
        angles = np.unwrap(np.concatenate([np.repeat(seen[e][None], samples, 0), imagined], 1),
                           axis=1)
        states[e] = np.stack([angles[:, 1:], np.diff(angles, axis=1) / system.config.dt], -1)
    return states


def imagined_returns(model: SVGWorldModel, context_frames: torch.Tensor,
                     context_actions: torch.Tensor, candidates: torch.Tensor,
                     env: gym.vector.VectorEnv) -> np.ndarray:
    """Returns ``(E, N)`` of candidates ``(E, N, H, A)`` under the env's reward on the states
    the model imagines (:func:`imagined_states`)."""
    states = imagined_states(model, context_frames, context_actions, candidates, env)
    rewards = env.unwrapped.system.reward(states.reshape(-1, 2),
                                          candidates.reshape(-1, 1).double().numpy())
    return rewards.reshape(candidates.shape[:3]).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="world-model checkpoint or train run directory")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=120, help="oracle steps per episode")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--noise", type=float, default=1.0, help="candidate noise in N·m")
    parser.add_argument("--noise-beta", type=float, default=0.0,
                        help="colour of the candidate noise along the horizon (0 white, 2 brown)")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--decompose", action="store_true",
                        help="also the regret of the model's dynamics with the true reward")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    model, context = loaded.model, loaded.context_frames
    if args.decompose and context < 2:
        parser.error(f"--decompose: expected a model with at least 2 context frames (velocities "
                     f"come from the last two), got {context}")
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.episodes,
                       vectorization_mode="vector_entry_point",
                       image_size=model.config.image_size)
    frames, actions, states = oracle_trajectories(env, args.steps, args.seed)
    system, params = env.unwrapped.system, env.unwrapped.physical_parameters
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for t in range(context - 1, args.steps - args.horizon, 6):
        oracle_plan = actions[:, t : t + args.horizon]
        along_last = (args.episodes, args.samples, 1, args.horizon)  # colour runs along the plan
        noise = (torch.randn(along_last, generator=generator) if args.noise_beta == 0
                 else colored_noise(args.noise_beta, along_last, generator)).transpose(2, 3)
        candidates = (oracle_plan[:, None] + args.noise * noise).clamp(-2.0, 2.0)
        true = true_dynamics_objective(system, states[:, t], params, "cpu")(candidates.double())
        with torch.no_grad():
            state = model.encode_context(frames[:, t - context + 1 : t + 1],
                                         actions[:, t - context + 1 : t])
            predicted = plan_returns(model, state, candidates)
        imagined = (imagined_returns(model, frames[:, t - context + 1 : t + 1],
                                     actions[:, t - context + 1 : t], candidates, env)
                    if args.decompose else None)
        for e in range(args.episodes):
            rho = spearmanr(true[e].numpy(), predicted[e].numpy()).statistic
            regret = float(true[e].max() - true[e, predicted[e].argmax()])
            dynamics_regret = (np.nan if imagined is None
                               else float(true[e].max() - true[e, int(imagined[e].argmax())]))
            rows.append((abs(angle_normalize(states[e, t, :1])[0]), rho, float(true[e].mean()),
                         float(predicted[e].mean()), regret, dynamics_regret))
    table = np.array(rows)
    print(f"checkpoint {loaded.path} ({loaded.real_steps} real steps), {args.samples} "
          f"candidates x horizon {args.horizon}, noise {args.noise} N·m (β {args.noise_beta}), "
          f"{len(rows)} states")
    print(f"{'states':<22}{'n':>4}{'spearman':>10}{'true return':>13}{'predicted':>11}"
          f"{'regret':>8}" + (f"{'regret, true reward':>21}" if args.decompose else ""))
    for name, mask in (("near the top |θ|<0.8", table[:, 0] < 0.8),
                       ("swinging", table[:, 0] >= 0.8), ("all", table[:, 0] >= 0)):
        part = table[mask]
        print(f"{name:<22}{len(part):>4}{np.nanmean(part[:, 1]):>10.2f}"
              f"{part[:, 2].mean():>13.1f}{part[:, 3].mean():>11.1f}{part[:, 4].mean():>8.2f}"
              + (f"{part[:, 5].mean():>21.2f}" if args.decompose else ""))


if __name__ == "__main__":
    main()
