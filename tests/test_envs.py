"""``NoetherControl/PixelPendulum-v0``: Pendulum-v1 equivalence, physics, randomisation, checks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.seeding import np_random
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import noether_control.envs as envs
from noether_control.envs.dynamics import (
    angle_normalize,
    pendulum_energy,
    pendulum_reward,
    pendulum_step,
)
from noether_control.envs.pendulum import RANDOM_PHYSICS, PixelPendulumEnv

PENDULUM = envs.PENDULUM_ID
RANDOM = envs.RANDOM_PENDULUM_ID
DOUBLE = envs.DOUBLE_PENDULUM_ID
PARAMETERS = ("gravity", "mass", "length", "damping")


def _torques(seed: int, steps: int, high: float = 3.0) -> np.ndarray:
    """Float32 torques, some beyond the ±2 bound so clipping is exercised too."""
    return np.random.default_rng(seed).uniform(-high, high, (steps, 1)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_observations_and_rewards_match_gymnasium_pendulum_v1(seed: int) -> None:
    reference = gym.make("Pendulum-v1")
    env = gym.make(PENDULUM, obs_type="state")
    ref_obs, _ = reference.reset(seed=seed)
    obs, info = env.reset(seed=seed)
    np.testing.assert_array_equal(obs, ref_obs)
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(info["state"], reference.unwrapped.state)
    for step, torque in enumerate(_torques(seed, 230)):
        ref_obs, ref_reward, ref_term, ref_trunc, _ = reference.step(torque)
        obs, reward, terminated, truncated, info = env.step(torque)
        np.testing.assert_array_equal(obs, ref_obs, err_msg=f"step {step}")
        np.testing.assert_array_equal(info["state"], reference.unwrapped.state)
        # Pendulum-v1 squares the float32 torque with libm's powf, which is not correctly
        # rounded: the reward may differ by one float32 ulp of 0.001 u² (< 5e-10).
        assert reward == pytest.approx(ref_reward, rel=0.0, abs=1e-9)
        assert (terminated, truncated) == (ref_term, ref_trunc)
        if truncated:
            assert step == 199
            ref_obs, _ = reference.reset()
            obs, _ = env.reset()
            np.testing.assert_array_equal(obs, ref_obs)


def test_float64_torques_give_bit_identical_rewards() -> None:
    reference = gym.make("Pendulum-v1")
    env = gym.make(PENDULUM, obs_type="state")
    reference.reset(seed=5)
    env.reset(seed=5)
    for torque in _torques(5, 150).astype(np.float64):
        ref_obs, ref_reward, *_ = reference.step(torque)
        obs, reward, *_ = env.step(torque)
        np.testing.assert_array_equal(obs, ref_obs)
        assert reward == ref_reward


@pytest.mark.parametrize(
    "options", [{"x_init": np.pi / 2, "y_init": 0.5}, {"x_init": 0.1}, {"y_init": 3.0}]
)
def test_reset_options_match_pendulum_v1(options: dict[str, float]) -> None:
    reference = gym.make("Pendulum-v1")
    env = gym.make(PENDULUM, obs_type="state")
    ref_obs, _ = reference.reset(seed=11, options=options)
    obs, info = env.reset(seed=11, options=options)
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(info["state"], reference.unwrapped.state)
    with pytest.raises(ValueError, match=r"options\['x_init'\]: expected a finite number"):
        env.reset(options={"x_init": "wide"})


def test_default_reset_draws_exactly_like_pendulum_v1() -> None:
    reference = gym.make("Pendulum-v1")
    env = gym.make(PENDULUM)
    reference.reset(seed=3)
    env.reset(seed=3)
    generator_state = env.unwrapped.np_random.bit_generator.state
    assert generator_state == reference.unwrapped.np_random.bit_generator.state


@pytest.mark.parametrize("env_id", [envs.PENDULUM_ID, envs.DOUBLE_PENDULUM_ID])
def test_resets_stay_in_the_observation_space_below_unit_max_speed(env_id: str) -> None:
    env = gym.make(env_id, obs_type="state", max_speed=0.5)
    starts = [env.reset(seed=seed, options={"y_init": 3.0})[0] for seed in range(20)]
    assert all(env.observation_space.contains(obs) for obs in starts)
    assert max(float(np.abs(obs[-1])) for obs in starts) > 0.4  # capped, not zeroed


def test_randomised_parameters_are_drawn_after_the_state_in_order() -> None:
    ranges = {
        "gravity_range": (6.0, 14.0),
        "length_range": (0.5, 1.5),
        "damping_range": (0.0, 0.3),
    }
    env = gym.make(PENDULUM, mass=1.7, **ranges)
    _, info = env.reset(seed=21)
    generator, _ = np_random(21)
    state = generator.uniform(low=-np.array([np.pi, 1.0]), high=np.array([np.pi, 1.0]))
    np.testing.assert_array_equal(info["state"], state)
    assert info["gravity"] == generator.uniform(6.0, 14.0)
    assert info["length"] == generator.uniform(0.5, 1.5)
    assert info["damping"] == generator.uniform(0.0, 0.3)
    assert info["mass"] == 1.7
    drawn = [env.reset()[1]["gravity"] for _ in range(20)]
    assert len(set(drawn)) == 20
    assert all(6.0 <= value < 14.0 for value in drawn)


def test_random_preset_draws_every_parameter_within_its_documented_range() -> None:
    env = gym.make(RANDOM)
    assert env.spec is not None and env.spec.kwargs == RANDOM_PHYSICS
    values = {name: [] for name in PARAMETERS}
    for episode in range(30):
        _, info = env.reset(seed=episode)
        for name in PARAMETERS:
            values[name].append(info[name])
    for name in PARAMETERS:
        low, high = RANDOM_PHYSICS[f"{name}_range"]
        assert low <= min(values[name]) and max(values[name]) < high
        assert np.std(values[name]) > 0.15 * (high - low)


def test_info_carries_state_parameters_and_energy() -> None:
    env = gym.make(PENDULUM, gravity=9.81, mass=0.8, length=1.3, damping=0.05)
    _, info = env.reset(seed=0)
    for _ in range(3):
        assert set(info) == {"state", "energy", *PARAMETERS}
        assert info["state"].dtype == np.float64 and info["state"].shape == (2,)
        assert (info["gravity"], info["mass"], info["length"], info["damping"]) == (
            9.81,
            0.8,
            1.3,
            0.05,
        )
        theta, theta_dot = info["state"]
        inertia = 0.8 * 1.3**2 / 3
        expected = 0.5 * inertia * theta_dot**2 + 0.8 * 9.81 * 0.65 * np.cos(theta)
        assert info["energy"] == pytest.approx(expected, rel=1e-12)
        _, _, _, _, info = env.step(np.array([0.5], dtype=np.float32))


def test_step_follows_the_damped_equation_of_motion() -> None:
    states = np.array([[0.3, -1.2], [2.5, 4.0], [-7.0, 0.5]])
    torques = np.array([[1.5], [-0.7], [0.0]])
    gravity = np.array([9.81, 4.0, 12.0])
    mass = np.array([1.0, 2.0, 0.5])
    length = np.array([1.0, 0.5, 1.4])
    damping = np.array([0.0, 0.2, 0.1])
    nxt = pendulum_step(
        states, torques, gravity, mass, length, damping, dt=0.05, max_speed=8.0, max_torque=2.0
    )
    theta, omega = states.T
    u = torques[:, 0]
    accel = 3 * gravity / (2 * length) * np.sin(theta) + 3 * (u - damping * omega) / (
        mass * length**2
    )
    expected_omega = omega + accel * 0.05
    np.testing.assert_allclose(nxt[:, 1], expected_omega, rtol=1e-13)
    np.testing.assert_allclose(nxt[:, 0], theta + expected_omega * 0.05, rtol=1e-13)
    fast = pendulum_step(
        np.array([[0.0, 7.9]]), np.array([[2.0]]), 10.0, 1.0, 1.0, 0.0,
        dt=0.05, max_speed=8.0, max_torque=2.0,
    )  # fmt: skip
    assert fast[0, 1] == 8.0


def test_damping_dissipates_and_undamped_energy_is_nearly_conserved() -> None:
    rng = np.random.default_rng(0)
    states = np.column_stack((rng.uniform(-3, 3, 16), rng.uniform(-1, 1, 16)))
    params = (10.0, 1.0, 1.0)
    for damping, check in ((0.3, "dissipates"), (0.0, "conserves")):
        x = states.copy()
        energies = [pendulum_energy(x, *params)]
        for _ in range(400):
            x = pendulum_step(
                x, np.zeros((16, 1)), *params, damping, dt=0.01, max_speed=1e3, max_torque=2.0
            )
            energies.append(pendulum_energy(x, *params))
        energies = np.array(energies)
        if check == "dissipates":
            excess = energies - (-5.0)  # above the hanging rest energy -m g l/2
            assert np.all(excess[-1] < 0.2 * excess[0] + 0.01)
        else:
            # Semi-implicit Euler keeps the energy error bounded (no drift) at O(dt).
            assert np.max(np.abs(energies - energies[0])) < 0.2


def test_reward_is_pendulum_v1s_cost() -> None:
    states = np.array([[0.0, 0.0], [np.pi - 1e-9, 8.0], [7.0, -2.0]])
    torques = np.array([[0.0], [5.0], [-1.0]])
    rewards = pendulum_reward(states, torques, max_torque=2.0)
    assert rewards[0] == 0.0
    assert rewards[1] == pytest.approx(-(np.pi**2 + 6.4 + 0.004), rel=1e-8)
    assert rewards[2] == pytest.approx(-(angle_normalize(7.0) ** 2 + 0.4 + 0.001))


def test_pixel_observation_defaults_and_image_size() -> None:
    env = gym.make(PENDULUM)
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    small = gym.make(PENDULUM, image_size=32)
    assert small.reset(seed=0)[0].shape == (32, 32, 3)
    both = gym.make(PENDULUM, obs_type="pixels_state")
    obs, info = both.reset(seed=0)
    assert set(obs) == {"pixels", "state"}
    assert both.observation_space.contains(obs)
    theta, omega = info["state"]
    np.testing.assert_array_equal(
        obs["state"], np.array([np.cos(theta), np.sin(theta), omega], dtype=np.float32)
    )


def test_metadata_and_registration() -> None:
    for env_id in envs.ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 200
        assert spec.vector_entry_point is not None
        env = gym.make(env_id)
        assert env.metadata["render_modes"] == ["human", "rgb_array"]
        assert env.metadata["render_fps"] == 20
    assert gym.make(PENDULUM, dt=0.1).metadata["render_fps"] == 10


def test_out_of_range_torques_are_clipped_like_pendulum_v1() -> None:
    clipped, large = gym.make(PENDULUM), gym.make(PENDULUM)
    clipped.reset(seed=4)
    large.reset(seed=4)
    for sign in (1.0, -1.0):
        a = clipped.step(np.array([2.0 * sign], dtype=np.float32))
        b = large.step(np.array([50.0 * sign], dtype=np.float32))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1]
        np.testing.assert_array_equal(a[4]["state"], b[4]["state"])


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.array([np.nan], dtype=np.float32), "non-finite"),
        (np.array([np.inf]), "non-finite"),
        (np.array([0.1, 0.2]), r"shape \(1,\)"),
        (np.float32(0.5), r"got shape \(\)"),
        (np.zeros((1, 1)), r"got shape \(1, 1\)"),
    ],
)
def test_invalid_actions_raise_value_error_naming_shape_and_bounds(
    action: np.ndarray, message: str
) -> None:
    env = gym.make(PENDULUM).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message) as error:
        env.step(action)
    assert r"(1,)" in str(error.value) and "[-2.0, 2.0]" in str(error.value)


def test_non_numeric_action_raises_type_error() -> None:
    env = gym.make(PENDULUM).unwrapped
    env.reset(seed=0)
    with pytest.raises(TypeError, match="expected a float array"):
        env.step(np.array(["left"]))


def test_step_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        PixelPendulumEnv().step(np.zeros(1, dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"mass": -1.0}, ValueError),
        ({"length": 0.0}, ValueError),
        ({"gravity": float("nan")}, ValueError),
        ({"damping": -0.1}, ValueError),
        ({"dt": 0.0}, ValueError),
        ({"max_torque": -2.0}, ValueError),
        ({"mass": "heavy"}, TypeError),
        ({"gravity_range": (12.0, 8.0)}, ValueError),
        ({"mass_range": (1.0, 1.0)}, ValueError),
        ({"length_range": (0.0, 1.0)}, ValueError),
        ({"damping_range": (0.1,)}, ValueError),
        ({"damping_range": ()}, ValueError),
        ({"obs_type": "rgb"}, ValueError),
        ({"image_size": 4}, ValueError),
        ({"image_size": 64.0}, TypeError),
        ({"render_size": 0}, ValueError),
        ({"render_mode": "ascii"}, ValueError),
        ({"friction": 0.1}, TypeError),
    ],
)
def test_invalid_construction_arguments_raise(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        PixelPendulumEnv(**kwargs)


def test_ranges_accept_lists_as_hydra_passes_them() -> None:
    from omegaconf import OmegaConf

    ranges = OmegaConf.create({"gravity_range": [8.0, 12.0]})
    env = PixelPendulumEnv(gravity_range=ranges.gravity_range)
    assert env.config.gravity_range == (8.0, 12.0)


@pytest.mark.parametrize("env_id", [PENDULUM, DOUBLE])
@pytest.mark.parametrize("obs_type", ["pixels", "state", "pixels_state"])
def test_gymnasium_and_sb3_env_checkers_pass(env_id: str, obs_type: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error")
        # Both checkers recommend a [-1, 1] action space; ours keeps Pendulum-v1's torques.
        warnings.filterwarnings("ignore", message=".*symmetric and normalized")
        check_env(gym.make(env_id, obs_type=obs_type, render_mode="rgb_array").unwrapped)
        sb3_check_env(gym.make(env_id, obs_type=obs_type).unwrapped)


def test_a_parameter_given_both_fixed_and_as_a_range_is_refused() -> None:
    import gymnasium as gym

    with pytest.raises(ValueError, match=r"mass=1\.0 and mass_range=\(0\.5, 2\.0\): expected one"):
        gym.make("NoetherControl/PixelPendulumRandom-v0", mass=1.0)
    with pytest.raises(ValueError, match=r"gravity=9\.8 and gravity_range=\(5\.0, 15\.0\)"):
        gym.make_vec("NoetherControl/PixelPendulumRandom-v0", num_envs=2,
                     vectorization_mode="vector_entry_point", gravity=9.8)
    fixed = gym.make("NoetherControl/PixelPendulumRandom-v0", mass=1.5, mass_range=None)
    assert fixed.unwrapped.system.config.mass == 1.5
    fixed.close()
