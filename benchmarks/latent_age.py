"""Do real-episode latent states look like the imagined ones a policy was trained on?

    python benchmarks/latent_age.py CHECKPOINT [--episodes 8] [--imagined-envs 64]

A policy trained in :class:`WorldModelVecEnv` only ever sees states of imagined episodes: the
encoding of ``P`` real frames, advanced at most ``horizon`` (15) steps. On the real env the
policy needs the same kind of state at every step of a 200-step episode. This script builds the
real side two ways along the oracle's swing-ups (the states a good policy visits):

- **filter**: encode the first ``P`` frames, then advance the model with each applied action and
  replace its predicted code with the observed frame's code (the recurrent state ages with the
  episode);
- **window** (:class:`LatentHistory`): at every step, the encoding of the last ``P`` frames.

and prints, at several steps of the episode, the norm of the LSTM cell state ``c`` and the
distance from each real latent to its nearest imagined latent (in units of the imagined
latents' per-dimension std; the imagined latents' own nearest-neighbour distance is the scale
of "in distribution"). Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from scipy.spatial import cKDTree

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.model_env import (
    ContextSampler,
    LatentHistory,
    ModelEnvConfig,
    WorldModelVecEnv,
)
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import make_planner
from noether_control.models.svg import SVGWorldModel, as_model_frames

STEPS = (3, 10, 20, 50, 100, 199)


@torch.no_grad()
def real_latents(model: SVGWorldModel, context: int, episodes: int, seed: int) -> tuple[
        np.ndarray, np.ndarray]:
    """Filtered and windowed latents ``(200, episodes, D)`` along the oracle's episodes."""
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=episodes,
                       vectorization_mode="vector_entry_point",
                       image_size=model.config.image_size)
    box = env.single_action_space
    oracle = OracleAgent(env, make_planner({"kind": "mppi"}, box.low, box.high))
    window = LatentHistory(model, context, episodes, torch.zeros(1))
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=[seed + i for i in range(episodes)])
    oracle.reset(np.ones(episodes, dtype=np.bool_))
    window.reset(np.ones(episodes, dtype=np.bool_))
    filtered, windowed, state = [], [], None
    action = np.zeros((episodes, 1), np.float32)
    for t in range(200):
        window.push(observation)
        if t < context:
            state = window.state
        else:
            code, _ = model.encode(as_model_frames(torch.as_tensor(observation)[:, None],
                                                   model.config)[:, 0])
            _, advanced = model.advance(state, torch.as_tensor(action)[:, None])
            state = advanced._replace(code=code, observed=True)
        filtered.append(state.latent().numpy())
        windowed.append(window.latent().numpy())
        action = oracle.act(observation, rng)
        window.record(torch.as_tensor(action))
        observation, *_ = env.step(action)
    env.close()
    return np.array(filtered), np.array(windowed)


def imagined_latents(model: SVGWorldModel, contexts: ContextSampler, envs: int,
                     steps: int) -> np.ndarray:
    """Latents ``(envs · steps, D)`` of imagined 15-step episodes under uniform actions."""
    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    env = WorldModelVecEnv(model, contexts, box, envs, ModelEnvConfig(horizon=15))
    observations = [env.reset()]
    rng = np.random.default_rng(0)
    for _ in range(steps - 1):
        observation, *_ = env.step(rng.uniform(-2, 2, (envs, 1)).astype(np.float32))
        observations.append(observation)
    return np.concatenate(observations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="world-model checkpoint or train run directory")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--imagined-envs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    model, context = loaded.model, loaded.context_frames
    data = loaded.train_config["data"]
    contexts = ContextSampler.from_dataset(data["path"], context, "train",
                                           data.get("split_fractions", (0.8, 0.1, 0.1)),
                                           data.get("split_seed", 0))
    imagined = imagined_latents(model, contexts, args.imagined_envs, 150)
    filtered, windowed = real_latents(model, context, args.episodes, args.seed)
    cell = slice(model.config.g_dim + model.config.rnn_layers * model.config.rnn_size, None)
    mean, std = imagined.mean(0), imagined.std(0) + 1e-6
    tree = cKDTree((imagined - mean) / std)

    def distance(latents: np.ndarray) -> float:
        return float(tree.query((latents - mean) / std)[0].mean())

    own = float(tree.query((imagined[:500] - mean) / std, k=2)[0][:, 1].mean())
    print(f"checkpoint {loaded.path}; imagined: {len(imagined)} latents of 15-step episodes, "
          f"|c| {np.linalg.norm(imagined[:, cell], axis=1).mean():.1f} (max "
          f"{np.linalg.norm(imagined[:, cell], axis=1).max():.1f}), nearest-neighbour distance "
          f"{own:.1f}")
    print(f"{'step':>5}{'filter |c|':>12}{'filter dist':>13}{'window |c|':>12}"
          f"{'window dist':>13}")
    for t in STEPS:
        print(f"{t:>5}{np.linalg.norm(filtered[t][:, cell], axis=1).mean():>12.1f}"
              f"{distance(filtered[t]):>13.1f}"
              f"{np.linalg.norm(windowed[t][:, cell], axis=1).mean():>12.1f}"
              f"{distance(windowed[t]):>13.1f}")


if __name__ == "__main__":
    main()
