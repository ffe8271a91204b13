"""The terminal value of benchmarks/oracle_value.py: read off a dataset's true states, and fitted
by TD to the discounted value of the transitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from support import collect_ou, load_benchmark

from noether_control.data.minari_io import read_episodes


def test_transitions_pair_each_true_state_with_the_next(tmp_path: Path) -> None:
    oracle_value = load_benchmark("oracle_value")
    path = collect_ou(tmp_path, episodes=2, num_envs=2, episode_steps=6)["path"]
    before, after, rewards = oracle_value.dataset_transitions(path)
    episodes = list(read_episodes(path))
    states = episodes[1].infos["state"]
    assert before.shape == after.shape == (12, 3) and rewards.shape == (12,)
    torch.testing.assert_close(before[6:], oracle_value.value_features(states[:-1]))
    torch.testing.assert_close(after[6:], oracle_value.value_features(states[1:]))
    torch.testing.assert_close(rewards[:6], torch.as_tensor(episodes[0].rewards,
                                                            dtype=torch.float32))


def test_td_fit_finds_the_discounted_value_of_staying_put() -> None:
    oracle_value = load_benchmark("oracle_value")
    torch.set_num_threads(1)
    gamma = 0.8
    angles = np.random.default_rng(0).uniform(-np.pi, np.pi, 4096)
    states = np.stack([angles, np.zeros_like(angles)], axis=1)
    features = oracle_value.value_features(states)
    rewards = torch.as_tensor(-(1.0 - np.cos(angles)), dtype=torch.float32)  # 0 up, -2 down
    value = oracle_value.fit_value(features, features, rewards, gamma, steps=1500)
    probes = np.array([[0.0, 0.0], [np.pi / 2, 0.0], [np.pi, 0.0]])
    with torch.no_grad():
        fitted = value(oracle_value.value_features(probes)).squeeze(1).numpy()
    # a state that leads to itself is worth r / (1 - γ): 0, -5 and -10
    np.testing.assert_allclose(fitted, [0.0, -5.0, -10.0], atol=0.6)
