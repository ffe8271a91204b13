"""Batched collection policies: bounds, reproducibility, OU statistics, SB3 observation routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

from noether_control.agents.policies import (
    ExplorationNoise,
    OUPolicy,
    OUPolicyConfig,
    SB3Policy,
    UniformPolicy,
    explore,
    make_policy,
    policy_config,
)

BOX = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def roll(policy, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    policy.reset(np.ones(policy.num_envs, dtype=bool), rng)
    return np.stack([policy.act(None, rng) for _ in range(steps)])


@pytest.mark.parametrize("kind", ["uniform", "ou"])
def test_actions_are_batched_bounded_and_reproducible(kind: str) -> None:
    actions = roll(make_policy({"kind": kind}, BOX, 16), 200, seed=3)
    assert actions.shape == (200, 16, 2) and actions.dtype == np.float32
    assert np.all(actions >= BOX.low) and np.all(actions <= BOX.high)
    np.testing.assert_array_equal(actions, roll(make_policy({"kind": kind}, BOX, 16), 200, seed=3))
    assert not np.array_equal(actions, roll(make_policy({"kind": kind}, BOX, 16), 200, seed=4))
    # sub-envs get different actions, and the whole box is used
    assert np.unique(actions[0, :, 0]).size >= 12  # OU clips at the bounds, so some may tie
    assert actions[..., 0].min() < -1.5 and actions[..., 0].max() > 1.5


def test_ou_stays_inside_asymmetric_float32_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        low = np.float32(rng.uniform(-5, 5))
        box = spaces.Box(low, low + np.float32(rng.uniform(1e-3, 3)), (1,), np.float32)
        actions = roll(OUPolicy(box, 8, sigma=5.0), 20, seed=1)  # mostly at the bounds
        assert np.all(actions >= box.low) and np.all(actions <= box.high)


def test_uniform_covers_the_box_evenly() -> None:
    actions = roll(UniformPolicy(BOX, 64), 100, seed=0)
    unit = (actions - BOX.low) / (BOX.high - BOX.low)
    np.testing.assert_allclose(unit.mean(axis=(0, 1)), 0.5, atol=0.02)
    np.testing.assert_allclose(unit.var(axis=(0, 1)), 1 / 12, atol=0.01)


def test_ou_has_the_documented_correlation_and_spread() -> None:
    theta, sigma = 0.2, 0.1
    policy = OUPolicy(BOX, 256, theta=theta, sigma=sigma)
    actions = roll(policy, 400, seed=1)
    noise = (actions - policy.centre) / policy.half_range
    stationary = sigma / np.sqrt(2 * theta - theta**2)
    np.testing.assert_allclose(noise.std(), stationary, rtol=0.05)
    lag1 = np.mean(noise[1:] * noise[:-1]) / np.mean(noise**2)
    np.testing.assert_allclose(lag1, 1 - theta, atol=0.02)
    uniform = roll(UniformPolicy(BOX, 256), 400, seed=1)
    centred = uniform - uniform.mean(axis=(0, 1))
    assert abs(np.mean(centred[1:] * centred[:-1]) / np.mean(centred**2)) < 0.02


def test_ou_reset_restarts_only_masked_sub_envs() -> None:
    policy = OUPolicy(BOX, 4)
    rng = np.random.default_rng(0)
    policy.act(None, rng)
    before = policy.noise.copy()
    policy.reset(np.array([False, True, False, False]), rng)
    np.testing.assert_array_equal(policy.noise[[0, 2, 3]], before[[0, 2, 3]])
    assert not np.array_equal(policy.noise[1], before[1])


def test_white_exploration_noise_is_explore_draw_for_draw() -> None:
    actions = np.zeros((8, 2), np.float32)
    noise = ExplorationNoise(0.3, 0.0, 8, BOX.low, BOX.high)
    rng, reference = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(5):
        np.testing.assert_array_equal(noise(actions, rng),
                                      explore(actions, 0.3, BOX.low, BOX.high, reference))


def test_correlated_exploration_noise_keeps_its_spread_and_carries_a_push() -> None:
    std, rho = 0.05, 0.9  # small enough that the box never clips
    centre = np.tile((BOX.low + BOX.high) / 2, (512, 1))
    half = (BOX.high - BOX.low) / 2
    noise = ExplorationNoise(std, rho, 512, BOX.low, BOX.high)
    rng = np.random.default_rng(1)
    drawn = np.stack([(noise(centre, rng) - centre) / (std * half) for _ in range(300)])
    np.testing.assert_allclose(drawn.std(), 1.0, rtol=0.03)  # the first step included
    np.testing.assert_allclose(drawn[0].std(), 1.0, rtol=0.1)
    lag1 = np.mean(drawn[1:] * drawn[:-1]) / np.mean(drawn**2)
    np.testing.assert_allclose(lag1, rho, atol=0.02)
    lag10 = np.mean(drawn[10:] * drawn[:-10]) / np.mean(drawn**2)
    np.testing.assert_allclose(lag10, rho**10, atol=0.03)


def test_exploration_noise_reset_forgets_only_masked_sub_envs() -> None:
    actions = np.zeros((3, 2), np.float32)
    noise = ExplorationNoise(0.01, 0.99, 3, BOX.low, BOX.high)
    rng = np.random.default_rng(0)
    noise(actions, rng)
    carried = noise.state.copy()
    noise.reset(np.array([False, True, False]))
    innovation = np.random.default_rng(7).standard_normal((3, 2))
    noise(actions, np.random.default_rng(7))
    # a reset sub-env starts from this step's draw alone; the others carry theirs on
    np.testing.assert_array_equal(noise.state[1], innovation[1])
    kept = 0.99 * carried[[0, 2]] + np.sqrt(1 - 0.99**2) * innovation[[0, 2]]
    np.testing.assert_allclose(noise.state[[0, 2]], kept)


def test_bad_exploration_noise_is_refused() -> None:
    for rho in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"exploration_correlation: expected a number in "
                                             r"\[0, 1\)"):
            ExplorationNoise(0.3, rho, 2, BOX.low, BOX.high)
    with pytest.raises(ValueError, match="exploration_std: expected a number >= 0"):
        ExplorationNoise(-0.1, 0.5, 2, BOX.low, BOX.high)


def test_bad_policy_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="theta: expected"):
        OUPolicy(BOX, 2, theta=0.0)
    with pytest.raises(ValueError, match="sigma: expected"):
        OUPolicy(BOX, 2, sigma=-1.0)
    with pytest.raises(TypeError, match="expected a 1-D Box"):
        UniformPolicy(spaces.Discrete(3), 2)
    with pytest.raises(ValueError, match="num_envs: expected"):
        UniformPolicy(BOX, 0)
    with pytest.raises(ValueError, match="mask: expected bool"):
        UniformPolicy(BOX, 2).reset(np.ones(3, dtype=bool), np.random.default_rng())
    with pytest.raises(ValueError, match=r"policy\.kind: expected one of"):
        policy_config({"kind": "greedy"})
    with pytest.raises(ValueError, match="invalid OUPolicyConfig"):
        policy_config({"kind": "ou", "thetta": 0.1})
    with pytest.raises(ValueError, match=r"policy\.path: expected"):
        make_policy({"kind": "sb3"}, BOX, 2)
    with pytest.raises(FileNotFoundError, match="SB3 checkpoint"):
        make_policy({"kind": "sb3", "path": "/nonexistent/agent.zip"}, BOX, 2)
    with pytest.raises(ValueError, match="algo: expected one of"):
        make_policy({"kind": "sb3", "path": "x.zip", "algo": "dqn"}, BOX, 2)
    assert isinstance(policy_config(OUPolicyConfig(theta=0.5)), OUPolicyConfig)


PENDULUM_BOX = spaces.Box(-2.0, 2.0, (1,), np.float32)


def observation(num_envs: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pixels": rng.integers(0, 256, (num_envs, 64, 64, 3), dtype=np.uint8),
        "state": rng.normal(size=(num_envs, 2)).astype(np.float32),
    }


def saved_agent(tmp_path: Path, algo: str, observation_space: spaces.Space) -> Path:
    """An untrained SB3 agent over ``observation_space`` saved to disk (no env needed)."""
    import gymnasium as gym
    import stable_baselines3 as sb3

    class Shapes(gym.Env):
        """Only spaces: SB3 needs an env object to build its networks."""

        def __init__(self) -> None:
            self.observation_space = observation_space
            self.action_space = PENDULUM_BOX

    policy_name = {
        spaces.Dict: "MultiInputPolicy",
        spaces.Box: "CnnPolicy" if len(observation_space.shape) == 3 else "MlpPolicy",
    }[type(observation_space)]
    model = getattr(sb3, algo.upper())(policy_name, Shapes(), seed=0, device="cpu")
    path = tmp_path / f"{algo}.zip"
    model.save(path)
    return path


@pytest.mark.parametrize(
    ("algo", "observation_space", "key"),
    [
        ("ppo", spaces.Box(-np.inf, np.inf, (2,), np.float32), "state"),
        ("sac", spaces.Box(-np.inf, np.inf, (2,), np.float32), "state"),
        ("ppo", spaces.Box(0, 255, (64, 64, 3), np.uint8), "pixels"),
    ],
)
def test_sb3_agent_is_fed_the_observation_it_was_trained_on(
    tmp_path: Path, algo: str, observation_space: spaces.Space, key: str
) -> None:
    path = saved_agent(tmp_path, algo, observation_space)
    policy = make_policy(
        {"kind": "sb3", "path": str(path), "algo": algo, "device": "cpu"}, PENDULUM_BOX, 5
    )
    assert isinstance(policy, SB3Policy)
    batch = observation(5)
    actions = policy.act(batch, np.random.default_rng(0))
    assert actions.shape == (5, 1) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 2.0)
    expected, _ = policy.model.predict(batch[key], deterministic=True)
    np.testing.assert_allclose(actions, np.clip(expected, -2.0, 2.0), rtol=1e-6)
    # the agent's actions depend on the observation it is fed
    other = observation(5, seed=1)
    assert not np.allclose(policy.act(other, np.random.default_rng(0)), actions)


def test_sampling_sb3_agent_is_decided_by_the_rng_alone(tmp_path: Path) -> None:
    import torch

    path = saved_agent(tmp_path, "ppo", spaces.Box(-np.inf, np.inf, (2,), np.float32))
    policy = make_policy({"kind": "sb3", "path": str(path), "device": "cpu",
                          "deterministic": False}, PENDULUM_BOX, 64)
    batch = observation(64)
    torch.manual_seed(1)
    first = policy.act(batch, np.random.default_rng(5))
    torch.manual_seed(2)  # torch's global state no longer matters
    np.testing.assert_array_equal(policy.act(batch, np.random.default_rng(5)), first)
    assert not np.array_equal(policy.act(batch, np.random.default_rng(6)), first)


def test_sb3_agent_with_foreign_observations_is_rejected(tmp_path: Path) -> None:
    path = saved_agent(tmp_path, "ppo", spaces.Box(-1.0, 1.0, (7,), np.float32))
    policy = make_policy({"kind": "sb3", "path": str(path), "device": "cpu"}, PENDULUM_BOX, 2)
    with pytest.raises(ValueError, match=r"observation space has shape \(7,\)"):
        policy.act(observation(2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="expected an action space"):
        make_policy({"kind": "sb3", "path": str(path), "device": "cpu"}, BOX, 2)


def test_corrupt_sb3_checkpoint_raises_value_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="could not load"):
        make_policy({"kind": "sb3", "path": str(broken)}, PENDULUM_BOX, 2)
