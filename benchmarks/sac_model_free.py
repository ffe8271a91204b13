"""Model-free SAC on the real env at a given real-step budget: the reference for RL in the model.

    python benchmarks/sac_model_free.py --obs state --steps 20000 --out runs/sac_state
    python benchmarks/sac_model_free.py --obs pixels --steps 20000 --out runs/sac_pixels

A killed run resumes from its last checkpoint (``--checkpoint-every`` real steps, with the
replay buffer) when started again with the same ``--out``. ``--curve`` also evaluates every
saved checkpoint before the last on the same episodes, into ``OUT/curve/steps_N/results.json``
(return against real steps: ``plan_table +runs.sac_pixels_N=OUT/curve/steps_N ...``).

Stable-Baselines3 SAC (default hyper-parameters, ``MlpPolicy`` on the state observation
``(cos θ, sin θ, θ̇)``, ``CnnPolicy`` on the last two 64 px frames stacked) trains for ``--steps``
real environment steps of ``PixelPendulum-v0``, then plays the same seeded evaluation episodes
as ``noether-control plan`` (episode ``i`` seeded ``--eval-seed + i``, deterministic actions).
``OUT/results.json`` has ``plan``'s fields (``episode_returns``, ``mean_return``,
``stderr_return``, ``seeds``, ``real_env_steps``, ...), so ``noether-control plan_table`` lines
it up with MPC and the agents trained in the model. Figures: docs/rl.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import return_statistics
from noether_control.agents.rl import checkpoint_callback, latest_checkpoint, saved_checkpoints
from noether_control.runtime import write_json

ENV_ID = "NoetherControl/PixelPendulum-v0"


def make_env(obs: str, seed: int) -> VecFrameStack | DummyVecEnv:
    """One real env with the agent's observation (pixels: the last two frames stacked)."""
    kind = "state" if obs == "state" else "pixels"
    env = DummyVecEnv([lambda: gym.make(ENV_ID, obs_type=kind)])
    env.seed(seed)
    return VecFrameStack(env, n_stack=2) if obs == "pixels" else env


def evaluate(agent: SAC, obs: str, episodes: int, seed: int) -> list[float]:
    """Returns of seeded episodes (episode ``i`` reset with ``seed + i``), deterministic."""
    returns = []
    for i in range(episodes):
        env = make_env(obs, seed + i)
        observation = env.reset()
        total, done = 0.0, False
        while not done:
            action, _ = agent.predict(observation, deterministic=True)
            observation, reward, dones, _ = env.step(action)
            total += float(reward[0])
            done = bool(dones[0])
        returns.append(total)
        env.close()
    return returns


def sac_agent(policy: str, args: argparse.Namespace, checkpoints: Path) -> tuple[SAC, int]:
    """A fresh agent, or the last one saved in ``checkpoints`` with its replay buffer; and the
    real steps it has trained for. (The episode running at the save is not restored: a resumed
    run starts a new one, so it is not bit-identical to an uninterrupted one.)"""
    env = make_env(args.obs, args.seed)
    latest = latest_checkpoint(checkpoints)
    if latest is None:
        return SAC(policy, env, seed=args.seed, buffer_size=args.buffer_size, verbose=0,
                   device=args.device), 0
    path, steps = latest
    agent = SAC.load(path, env=env, device=args.device)
    agent.load_replay_buffer(checkpoints / f"policy_replay_buffer_{steps}_steps.pkl")
    print(f"resuming from {path} at {steps} real steps")
    return agent, steps


def plan_results(returns: np.ndarray, args: argparse.Namespace, policy: str, steps: int,
                 seconds: float | None) -> dict:
    """``noether-control plan``'s result fields for the evaluation ``returns`` after ``steps``."""
    return {
        "env_id": ENV_ID,
        "agent": {"kind": f"sac_model_free_{args.obs}", "policy": policy},
        "planner": None, "checkpoint": None,
        "real_env_steps": steps,
        "episodes": args.episodes,
        "seeds": [args.eval_seed + i for i in range(args.episodes)],
        "episode_returns": returns.tolist(),
        **return_statistics(returns),
        "num_envs": 1, "ms_per_action": None, "ms_per_call": None,
        "train_seconds": None if seconds is None else round(seconds, 1),
    }


def evaluate_curve(args: argparse.Namespace, policy: str, out: Path) -> None:
    """Every saved agent before ``args.steps`` evaluated into ``out/curve/steps_N`` (once)."""
    for steps, path in saved_checkpoints(out / "checkpoints"):
        target = out / "curve" / f"steps_{steps}" / "results.json"
        if steps >= args.steps or target.exists():
            continue
        agent = SAC.load(path, device=args.device)
        returns = np.array(evaluate(agent, args.obs, args.episodes, args.eval_seed))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, plan_results(returns, args, policy, steps, None))
        print(f"  after {steps} real steps: mean return {returns.mean():.1f}")


def finished(results: Path, steps: int) -> bool:
    """Whether ``results`` already holds the evaluation after ``steps`` real steps."""
    return results.exists() and json.loads(results.read_text())["real_env_steps"] == steps


def train_and_evaluate(args: argparse.Namespace, policy: str, out: Path) -> None:
    """Train (or resume) for ``args.steps`` real steps, evaluate, write ``out/results.json``."""
    agent, done = sac_agent(policy, args, out / "checkpoints")
    callback = checkpoint_callback(args.checkpoint_every, out / "checkpoints", replay_buffer=True)
    started = time.perf_counter()
    if args.steps > done:
        agent.learn(args.steps - done, callback=callback, reset_num_timesteps=done == 0)
    seconds = time.perf_counter() - started
    returns = np.array(evaluate(agent, args.obs, args.episodes, args.eval_seed))
    document = plan_results(returns, args, policy, args.steps, seconds)
    write_json(out / "results.json", document)
    print(f"SAC model-free on {args.obs}, {args.steps} real steps ({seconds:.0f} s): mean return "
          f"{document['mean_return']:.1f} ± {document['stderr_return'] or 0:.1f} over "
          f"{args.episodes} episodes (seeds {args.eval_seed}–{args.eval_seed + args.episodes - 1})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--obs", choices=("state", "pixels"), default="state")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu", help="torch device of the agent: cpu, cuda")
    parser.add_argument("--checkpoint-every", type=int, default=2000,
                        help="real steps between saved agents (with the replay buffer); a "
                             "rerun with the same --out resumes from the last one")
    parser.add_argument("--curve", action="store_true",
                        help="also evaluate every saved agent before the last "
                             "(OUT/curve/steps_N/results.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = "MlpPolicy" if args.obs == "state" else "CnnPolicy"
    if finished(out / "results.json", args.steps):
        print(f"{out / 'results.json'} already has the agent after {args.steps} real steps")
    else:
        train_and_evaluate(args, policy, out)
    if args.curve:
        evaluate_curve(args, policy, out)


if __name__ == "__main__":
    main()
