"""Env steps per second inside the world model against the real pixel env, one CPU thread.

    python benchmarks/bench_model_env.py [--envs 256] [--steps 20] [--threads 1]

An RL agent trained in the model (``noether-control rl``) is only worth it if imagined steps are
much cheaper than real ones. Both sides produce the same observation, the model's latent state:

- **in the model**: :class:`WorldModelVecEnv` with ``envs`` imagined episodes, one
  ``advance`` of the model per vector step (no frame decoded), episodes restarted (every 15
  steps) from real contexts, whose codes are encoded once per dataset episode;
- **real env + latent**: the native pixel vector env (``PixelPendulum-v0``, 64 px, batched
  renderer) stepped with the same number of episodes, each step's frames turned into the latent
  state by :class:`LatentHistory` (one encoder pass of the new frames, then the ``P − 1``
  recurrent steps of the context from the cached codes).

Both use the default world model (``SVGConfig()``, random weights: the cost does not depend on
the weights) and uniform random actions; the table gives env steps per second and the ratio.
Nothing is asserted; figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.agents.model_env import (
    ContextSampler,
    LatentHistory,
    ModelEnvConfig,
    WorldModelVecEnv,
)
from noether_control.data.env_config import EnvConfig
from noether_control.models.svg import SVGConfig, SVGWorldModel

ENV_ID = "NoetherControl/PixelPendulum-v0"


def contexts(n_past: int) -> ContextSampler:
    """Contexts from a few freshly collected OU episodes (seconds)."""
    root = tempfile.mkdtemp(prefix="bench_model_env.")
    env = EnvConfig(name="pixel-pendulum", id=ENV_ID, kwargs={"image_size": 64})
    data = collect(CollectConfig(episodes=4, num_envs=4, episode_steps=30, progress=False,
                                 env=env, policy={"kind": "ou"},  # type: ignore[arg-type]
                                 dataset=DatasetConfig(root=root)))
    return ContextSampler.from_dataset(data["path"], n_past, "train", (1.0, 0.0, 0.0), 0)


def in_model(model: SVGWorldModel, sampler: ContextSampler, envs: int, steps: int) -> float:
    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    env = WorldModelVecEnv(model, sampler, box, envs, ModelEnvConfig(horizon=15))
    env.reset()
    rng = np.random.default_rng(0)
    env.step(rng.uniform(-2, 2, (envs, 1)).astype(np.float32))  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-2, 2, (envs, 1)).astype(np.float32))
    return envs * steps / (time.perf_counter() - started)


def real_with_latent(model: SVGWorldModel, n_past: int, envs: int, steps: int) -> float:
    env = gym.make_vec(ENV_ID, num_envs=envs, vectorization_mode="vector_entry_point",
                       image_size=64)
    history = LatentHistory(model, n_past, envs, torch.zeros(1))
    observation, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)

    def one_step(observation: np.ndarray) -> np.ndarray:
        history.push(observation)
        history.latent()
        actions = rng.uniform(-2, 2, (envs, 1)).astype(np.float32)
        history.record(torch.as_tensor(actions))
        return env.step(actions)[0]

    for _ in range(n_past + 1):  # past the warm-up, so every row advances as in steady state
        observation = one_step(observation)
    started = time.perf_counter()
    for _ in range(steps):
        observation = one_step(observation)
    rate = envs * steps / (time.perf_counter() - started)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig()).eval()
    n_past = 4
    sampler = contexts(n_past)
    imagined = in_model(model, sampler, args.envs, args.steps)
    real = real_with_latent(model, n_past, args.envs, args.steps)
    print(f"{args.envs} envs, {args.steps} vector steps, {args.threads} thread(s), "
          f"default SVGConfig() model")
    print(f"{'side':<26} {'env steps/s':>12} {'ratio':>8}")
    print(f"{'real env + latent':<26} {real:>12.0f} {1.0:>8.2f}")
    print(f"{'in the model':<26} {imagined:>12.0f} {imagined / real:>8.2f}")


if __name__ == "__main__":
    main()
