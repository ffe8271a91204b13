"""Native vector environments: exact agreement with N single environments, API conventions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import noether_control.envs as envs
from noether_control.envs.pendulum import PixelPendulumVectorEnv

PENDULUM = envs.PENDULUM_ID


def _assert_same(native: Any, reference: Any, what: str) -> None:
    if isinstance(reference, dict):
        assert set(native) == set(reference), what
        for key in reference:
            _assert_same(native[key], reference[key], f"{what}[{key!r}]")
        return
    if isinstance(reference, tuple):
        assert isinstance(native, tuple) and len(native) == len(reference), what
        for index, (a, b) in enumerate(zip(native, reference, strict=True)):
            _assert_same(a, b, f"{what}[{index}]")
        return
    native = np.asarray(native)
    reference = np.asarray(reference)
    assert native.dtype == reference.dtype, what
    np.testing.assert_array_equal(native, reference, err_msg=what)


def _compare_with_single_envs(
    env_id: str, num_envs: int, steps: int, seed: int, **kwargs: Any
) -> int:
    """Step the native vector env and a SyncVectorEnv of gym.make(id) envs side by side."""
    native = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )
    reference = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    assert native.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert native.single_observation_space == reference.single_observation_space
    assert native.observation_space == reference.observation_space
    assert native.action_space == reference.action_space
    _assert_same(native.reset(seed=seed), reference.reset(seed=seed), "reset")
    high = 1.5 * native.single_action_space.high[0]
    torques = np.random.default_rng(seed).uniform(-high, high, (steps, num_envs, 1))
    truncations = 0
    for step, action in enumerate(torques.astype(np.float32)):
        got = native.step(action)
        want = reference.step(action)
        for name, a, b in zip(("obs", "reward", "term", "trunc", "info"), got, want, strict=True):
            _assert_same(a, b, f"step {step} {name}")
        truncations += int(np.sum(want[3]))
    return truncations


def test_pendulum_vector_env_equals_single_envs_across_truncation_and_autoreset() -> None:
    truncations = _compare_with_single_envs(PENDULUM, num_envs=4, steps=205, seed=10)
    assert truncations == 4


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (envs.RANDOM_PENDULUM_ID, {"obs_type": "pixels_state", "image_size": 32}),
        (envs.DOUBLE_PENDULUM_ID, {"obs_type": "pixels_state", "damping_range": (0.0, 0.1)}),
    ],
)
def test_randomised_and_double_vector_envs_equal_single_envs(
    env_id: str, kwargs: dict[str, Any]
) -> None:
    truncations = _compare_with_single_envs(
        env_id, num_envs=3, steps=25, seed=3, max_episode_steps=10, **kwargs
    )
    assert truncations == 6


def test_infos_are_arrays_with_masks_for_the_collector() -> None:
    vec = gym.make_vec(envs.RANDOM_PENDULUM_ID, num_envs=5, vectorization_mode="vector_entry_point")
    _, infos = vec.reset(seed=0)
    assert infos["state"].shape == (5, 2) and infos["state"].dtype == np.float64
    for key in ("energy", "gravity", "mass", "length", "damping"):
        assert infos[key].shape == (5,) and infos[key].dtype == np.float64
        assert infos[f"_{key}"].dtype == np.bool_ and infos[f"_{key}"].all()
    assert len(set(infos["gravity"].tolist())) == 5
    np.testing.assert_array_equal(vec.unwrapped.physical_parameters[:, 0], infos["gravity"])


def test_seed_sequences_and_unseeded_resets_follow_sync_vector_env() -> None:
    native = gym.make_vec(PENDULUM, num_envs=3, vectorization_mode="vector_entry_point")
    reference = gym.make_vec(PENDULUM, num_envs=3, vectorization_mode="sync")
    seeded = native.reset(seed=[7, 8, 9])
    _assert_same(seeded, reference.reset(seed=[7, 8, 9]), "list seeds")
    _assert_same(native.reset(seed=7), seeded, "int seed is seed + i")
    # A None seed (or no seed) lets each sub-env continue its own generator, like single envs.
    _assert_same(native.reset(seed=[None, 5, None]), reference.reset(seed=[None, 5, None]), "")
    _assert_same(native.reset(), reference.reset(), "continued generators")
    options = {"x_init": 0.2, "y_init": 0.1}
    _assert_same(native.reset(options=options), reference.reset(options=options), "options")
    with pytest.raises(ValueError, match="3 seeds"):
        native.reset(seed=[1, 2])


@pytest.mark.parametrize("env_id", [PENDULUM, envs.DOUBLE_PENDULUM_ID])
def test_reset_mask_resets_only_the_masked_sub_envs_like_sync_vector_env(env_id: str) -> None:
    native = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    reference = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    _assert_same(native.reset(seed=3), reference.reset(seed=3), "reset")
    actions = np.full((3, 1), 0.5, dtype=np.float32)
    for step in range(4):
        _assert_same(native.step(actions), reference.step(actions), f"step {step}")
    mask = np.array([True, False, True])
    options = {"reset_mask": mask, "y_init": 0.1}
    _assert_same(native.reset(seed=11, options={**options}),
                 reference.reset(seed=11, options={**options}), "masked reset")
    for step in range(3):
        _assert_same(native.step(actions), reference.step(actions), f"after mask, step {step}")
    for bad in (np.array([1, 0, 1]), np.array([True, False]), np.zeros(3, dtype=bool)):
        with pytest.raises(ValueError, match=r"reset_mask"):
            native.reset(options={"reset_mask": bad})


def test_copy_false_reuses_one_preallocated_pixel_buffer() -> None:
    shared = PixelPendulumVectorEnv(num_envs=2, copy=False)
    first, _ = shared.reset(seed=0)
    second = shared.step(np.zeros((2, 1), dtype=np.float32))[0]
    assert np.shares_memory(first, second)
    fresh = PixelPendulumVectorEnv(num_envs=2)
    first, _ = fresh.reset(seed=0)
    kept = first.copy()
    second = fresh.step(np.zeros((2, 1), dtype=np.float32))[0]
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)


def test_render_returns_each_sub_envs_frame() -> None:
    vec = gym.make_vec(
        PENDULUM,
        num_envs=3,
        vectorization_mode="vector_entry_point",
        render_mode="rgb_array",
        render_size=48,
    )
    vec.reset(seed=2)
    frames = vec.render()
    singles = [gym.make(PENDULUM, render_mode="rgb_array", render_size=48) for _ in range(3)]
    for index, single in enumerate(singles):
        single.reset(seed=2 + index)
        np.testing.assert_array_equal(frames[index], single.render())
    with pytest.raises(ValueError, match="render_mode"):
        PixelPendulumVectorEnv(num_envs=2, render_mode="human")


@pytest.mark.parametrize(
    "actions",
    [np.zeros((3, 1)), np.zeros(2), np.full((2, 1), np.nan), np.array([[1.0], [-np.inf]])],
)
def test_invalid_batched_actions_raise(actions: np.ndarray) -> None:
    vec = PixelPendulumVectorEnv(num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected a float array of shape \(2, 1\)"):
        vec.step(actions)


@pytest.mark.parametrize(
    "kwargs", [{"num_envs": 0}, {"num_envs": 2.0}, {"max_episode_steps": 0}, {"mass": 0.0}]
)
def test_invalid_vector_construction_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PixelPendulumVectorEnv(**kwargs)
