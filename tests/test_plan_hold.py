"""The hold measurement of benchmarks/plan_hold.py: its torque holds the pendulum at rest, and
its rewards are the env's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from support import SIZE, load_benchmark

from noether_control.models.svg import SVGConfig, SVGWorldModel


@pytest.fixture(scope="module")
def plan_hold() -> object:
    return load_benchmark("plan_hold")


@pytest.fixture()
def env() -> gym.vector.VectorEnv:
    vector = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=1,
                          vectorization_mode="vector_entry_point", image_size=SIZE, mass=1.5,
                          length=0.8)
    vector.reset(seed=0)
    yield vector
    vector.close()


def test_the_holding_torque_keeps_the_pendulum_at_rest(plan_hold, env) -> None:
    angles = np.array([-0.3, -0.1, 0.0, 0.2])
    torque = plan_hold.holding_torque(env, angles)
    states = np.stack([angles, np.zeros_like(angles)], axis=1)
    params = np.repeat(env.unwrapped.physical_parameters, len(angles), axis=0)
    after = env.unwrapped.system.step(states, torque[:, None], params)
    np.testing.assert_allclose(after, states, atol=1e-9)
    # any other torque moves it
    moved = env.unwrapped.system.step(states, torque[:, None] + 0.1, params)
    assert np.all(np.abs(moved[:, 1]) > 1e-3)


def test_held_rewards_are_the_envs_and_the_models_first_step(plan_hold, env) -> None:
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, action_embed_dim=2)).eval()
    angles = np.array([-0.2, 0.0, 0.3])
    predicted, true = plan_hold.held_reward(model, 3, env, angles)
    torque = plan_hold.holding_torque(env, angles)
    np.testing.assert_allclose(true, -(angles**2) - 0.001 * torque**2)
    assert predicted.shape == (3,) and np.all(np.isfinite(predicted))
    # the model is asked about the rendered pendulum: different angles, different predictions
    assert np.ptp(predicted) > 0
