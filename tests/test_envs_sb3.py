"""Stable-Baselines3 trains on the pixel pendulum (a short smoke run of real learning code)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import noether_control.envs as envs


def test_ppo_cnn_policy_learns_on_pixel_observations(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # SB3's learn() makes a log folder, by default a new one under the system temp directory.
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path))
    env = gym.make(envs.PENDULUM_ID)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=128,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 64}},
    )
    before = [parameter.detach().clone() for parameter in model.policy.parameters()]
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (1,) and np.all(np.abs(action) <= 2.0)
