"""The renderer: orientation, anti-aliasing, frame table accuracy, render modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import noether_control.envs as envs
from noether_control.envs.rendering import (
    DOUBLE_PENDULUM_STYLE,
    MAX_TABLE_BYTES,
    PENDULUM_STYLE,
    TIP_STEP_PIXELS,
    draw_links,
    draw_links_on_table,
    frame_table_bins,
    frame_table_bytes,
    pendulum_frame_table,
    scene_frame_table,
)

ROD = np.array(PENDULUM_STYLE.link_colours[0])
SECOND_LINK = np.array(DOUBLE_PENDULUM_STYLE.link_colours[1])


def _mask_of(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.all(np.abs(frames.astype(int) - colour) <= 2, axis=-1)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Mean (row, col) of ``mask`` in pixel units relative to the image centre (the axle)."""
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()]) + 0.5 - mask.shape[0] / 2


@pytest.mark.parametrize(
    ("theta", "direction"),
    [(0.0, (-1, 0)), (np.pi / 2, (0, -1)), (np.pi, (1, 0)), (-np.pi / 2, (0, 1))],
)
def test_rod_points_up_at_zero_and_turns_counter_clockwise(
    theta: float, direction: tuple[int, int]
) -> None:
    frame = pendulum_frame_table(64).gather(np.array([theta]))[0]
    offset = _centroid(_mask_of(frame, ROD))
    # Solid red runs from the axle's edge (0.05 units) to the round tip (1.1 units).
    middle = 0.5 * (0.05 + 1.1) * PENDULUM_STYLE.pixels_per_unit(64)
    np.testing.assert_allclose(offset, middle * np.array(direction), atol=1.0)


def test_edges_are_anti_aliased_and_background_is_white() -> None:
    frame = draw_links(np.array([[0.3]]), 64, PENDULUM_STYLE)[0]
    assert np.all(frame[0, 0] == 255) and np.all(frame[-1, -1] == 255)
    red_channel = frame[..., 1].astype(int)  # green: 255 on white, 77 inside the rod, 0 axle
    partial = (red_channel > 80) & (red_channel < 250)
    assert partial.sum() > 30, "expected a ring of partially covered pixels along the rod"
    assert np.all(frame[32, 32] == 0), "expected the black axle in the centre"


def test_frame_table_bins_move_the_tip_less_than_an_eighth_of_a_pixel() -> None:
    for size in (32, 64, 96):
        bins = frame_table_bins(size)
        tip_radius = (1.0 + PENDULUM_STYLE.rod_width / 2) * PENDULUM_STYLE.pixels_per_unit(size)
        assert 2 * np.pi * tip_radius / bins < TIP_STEP_PIXELS
        assert bins % 8 == 0


def test_table_frames_match_direct_rendering_of_the_exact_angle() -> None:
    table = pendulum_frame_table(64)
    angles = np.random.default_rng(0).uniform(-20, 20, 64)
    gathered = table.gather(angles)
    direct = draw_links(angles[:, None], 64, PENDULUM_STYLE)
    difference = np.abs(gathered.astype(int) - direct.astype(int))
    # At most half a bin (< 1/16 px at the tip) away: a small change in edge coverage only.
    assert difference.max() <= 16
    assert difference.mean() < 0.1
    assert pendulum_frame_table(64) is table
    with pytest.raises(ValueError):
        table.frames[0, 0, 0, 0] = 1


def test_observation_is_the_table_frame_of_the_true_angle() -> None:
    env = gym.make(envs.PENDULUM_ID, image_size=48)
    obs, info = env.reset(seed=1)
    for _ in range(5):
        expected = pendulum_frame_table(48).gather(info["state"][:1])[0]
        np.testing.assert_array_equal(obs, expected)
        obs, _, _, _, info = env.step(np.array([1.0], dtype=np.float32))


def test_rgb_array_render_shows_the_observed_scene_at_render_size() -> None:
    env = gym.make(envs.PENDULUM_ID, render_mode="rgb_array", render_size=256)
    obs, _ = env.reset(seed=4)
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    downscaled = frame.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.abs(downscaled - obs.astype(float)).mean() < 2.0
    # A different pose gives a clearly different picture (the comparison above can fail).
    other = env.step(np.array([2.0], dtype=np.float32))
    for _ in range(10):
        other = env.step(np.array([2.0], dtype=np.float32))
    assert np.abs(downscaled - other[0].astype(float)).mean() > 5.0


def test_human_mode_window_shows_the_observation_scaled_up() -> None:
    pygame = pytest.importorskip("pygame")
    env = gym.make(envs.PENDULUM_ID, render_mode="human", render_size=128)
    try:
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(np.array([0.5], dtype=np.float32))
        shown = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
        np.testing.assert_array_equal(shown, obs.repeat(2, axis=0).repeat(2, axis=1))
    finally:
        env.close()


def test_double_pendulum_draws_both_links_at_their_angles() -> None:
    env = gym.make(envs.DOUBLE_PENDULUM_ID)
    env.reset(seed=0)
    env.unwrapped._states = np.array([[0.0, np.pi / 2, 0.0, 0.0]])
    frame = env.unwrapped.system.render_pixels(env.unwrapped._states)[0]
    scale = DOUBLE_PENDULUM_STYLE.pixels_per_unit(64)
    first = _centroid(_mask_of(frame, ROD))
    second = _centroid(_mask_of(frame, SECOND_LINK))
    np.testing.assert_allclose(first, [-0.5 * scale, 0.0], atol=1.5)  # straight up
    np.testing.assert_allclose(second, [-scale, -0.5 * scale], atol=1.5)  # then left


def test_double_pendulum_table_path_matches_direct_rendering() -> None:
    env = gym.make(envs.DOUBLE_PENDULUM_ID, obs_type="pixels_state")
    frames, states = [], []
    obs, info = env.reset(seed=3)
    for _ in range(8):
        frames.append(obs["pixels"])
        states.append(info["state"])
        obs, _, _, _, info = env.step(np.array([4.0], dtype=np.float32))
    direct = draw_links(np.array(states)[:, :2], 64, DOUBLE_PENDULUM_STYLE)
    difference = np.abs(np.array(frames).astype(int) - direct.astype(int))
    assert difference.max() <= 16 and difference.mean() < 0.1
    with pytest.raises(ValueError, match="first_link_style"):
        draw_links_on_table(pendulum_frame_table(64), np.zeros((1, 2)), DOUBLE_PENDULUM_STYLE)


def test_sizes_beyond_the_table_budget_are_drawn_directly() -> None:
    assert frame_table_bytes(128) <= MAX_TABLE_BYTES < frame_table_bytes(192)
    assert scene_frame_table(192, PENDULUM_STYLE) is None
    env = gym.make(envs.PENDULUM_ID, image_size=192)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, draw_links(info["state"][None, :1], 192, PENDULUM_STYLE)[0])


def test_draw_links_rejects_wrong_angle_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(N, 2\)"):
        draw_links(np.zeros((3, 1)), 32, DOUBLE_PENDULUM_STYLE)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_the_env_family_is_mirror_symmetric(env_id: str) -> None:
    """What training on mirrored episodes (``data.mirror``) relies on: negating every angle,
    velocity and torque mirrors the frame left–right, mirrors the next state, and keeps the
    reward and the energy."""
    env = gym.make_vec(env_id, num_envs=64)
    env.reset(seed=0)
    system, params = env.unwrapped.system, env.unwrapped.physical_parameters
    rng = np.random.default_rng(0)
    states = rng.uniform(-1, 1, (64, system.state_dim)) * system.reset_high(None)
    actions = rng.uniform(-2, 2, (64, 1))
    np.testing.assert_array_equal(system.render_pixels(-states),
                                  system.render_pixels(states)[:, :, ::-1])
    np.testing.assert_allclose(system.step(-states, -actions, params),
                               -system.step(states, actions, params), rtol=0, atol=1e-12)
    np.testing.assert_allclose(system.reward(-states, -actions), system.reward(states, actions),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(system.energy(-states, params), system.energy(states, params),
                               rtol=0, atol=1e-12)
    env.close()
