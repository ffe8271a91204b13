"""The hold measurement of benchmarks/plan_hold.py: its torque holds the pendulum at rest, and
its rewards are the env's."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from support import SIZE, load_benchmark

from noether_control.envs.rendering import frame_table_bins
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


def test_angles_are_read_off_rendered_frames(plan_hold, env) -> None:
    angles = np.array([-0.31, 0.0, 0.125, 2.5])
    system = env.unwrapped.system
    frames = torch.as_tensor(system.render_pixels(np.stack([angles, 0 * angles], axis=1)))
    grid = np.linspace(-np.pi, np.pi, 1441)
    read = plan_hold.read_angles(system, frames.permute(0, 3, 1, 2).float() / 255, grid)
    # frames come from the renderer's table of angle bins: read to within a bin and a grid step
    resolution = 2 * np.pi / frame_table_bins(SIZE) + 2 * np.pi / 1440
    np.testing.assert_allclose(read, angles, atol=resolution)
    assert 2 * np.pi / frame_table_bins(SIZE) < 0.02


def test_a_push_from_rest_moves_the_simulated_pendulum_and_the_model_is_read(plan_hold,
                                                                             env) -> None:
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, action_embed_dim=2)).eval()
    angles = np.array([-0.1, 0.1])
    predicted, held = plan_hold.pushed_from_rest(model, 3, env, angles, 0.0, 6)
    assert predicted.shape == held.shape == (2, 6) and np.all(np.abs(predicted) <= np.pi)
    np.testing.assert_allclose(held, angles[:, None].repeat(6, axis=1), atol=1e-9)
    _, pushed = plan_hold.pushed_from_rest(model, 3, env, angles, 0.3, 6)
    # a positive torque turns the pendulum towards positive angles, faster every step
    assert np.all(np.diff(pushed - angles[:, None], axis=1) > 0)


class RestImagination:
    """A stand-in world model that imagines exactly the pendulum started at rest at ``angles``
    (the function under test reads its decoded frames only): frame ``k`` of a rollout is the
    simulator's state before action ``k``, as :meth:`SVGWorldModel.rollout` decodes it."""

    def __init__(self, env: gym.vector.VectorEnv, angles: np.ndarray) -> None:
        self.system = env.unwrapped.system
        self.params = np.repeat(env.unwrapped.physical_parameters[:1], len(angles), axis=0)
        self.start = np.stack([angles, np.zeros_like(angles)], axis=1)

    def encode_context(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        return None

    def rollout(self, state: None, actions: torch.Tensor, decode: bool) -> SimpleNamespace:
        states, frames = self.start, []
        for k in range(actions.shape[1]):
            frames.append(torch.as_tensor(self.system.render_pixels(states)))
            states = self.system.step(states, actions[:, k].double().numpy(), self.params)
        return SimpleNamespace(frames=torch.stack(frames, 1).permute(0, 1, 4, 2, 3) / 255)


def test_pushed_from_rest_compares_the_same_steps(plan_hold, env) -> None:
    angles = np.array([-0.2, 0.0, 0.2])
    predicted, true = plan_hold.pushed_from_rest(RestImagination(env, angles), 3, env, angles,
                                                 0.3, 12)
    assert predicted.shape == true.shape == (3, 12)
    assert np.abs(np.diff(true, axis=1)).max() > 0.01  # it moves: a step's lag would show
    np.testing.assert_allclose(predicted, true, atol=0.01)
