"""``NoetherControl/PixelDoublePendulum-v0``: equations of motion, integrator accuracy, energy."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import noether_control.envs as envs
from noether_control.envs.double_pendulum import PixelDoublePendulumEnv
from noether_control.envs.dynamics import (
    double_pendulum_accelerations,
    double_pendulum_energy,
    double_pendulum_reward,
    double_pendulum_step,
    pendulum_step,
)

DOUBLE = envs.DOUBLE_PENDULUM_ID


def _random_systems(count: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    states = np.column_stack(
        (rng.uniform(-np.pi, np.pi, (count, 2)), rng.uniform(-3.0, 3.0, (count, 2)))
    )
    torques = rng.uniform(-5.0, 5.0, count)
    gravity = rng.uniform(5.0, 15.0, count)
    masses = rng.uniform(0.5, 2.0, (2, count))
    lengths = rng.uniform(0.5, 1.5, (2, count))
    damping = rng.uniform(0.0, 0.3, count)
    return states, torques, gravity, *masses, *lengths, damping


def test_energy_changes_at_the_rate_of_motor_power_minus_friction() -> None:
    states, torques, gravity, m1, m2, l1, l2, damping = _random_systems(32, seed=0)
    accelerations = double_pendulum_accelerations(states, torques, gravity, m1, m2, l1, l2, damping)
    rates = np.concatenate((states[:, 2:], accelerations), axis=1)
    epsilon = 1e-6
    energy_rate = (
        double_pendulum_energy(states + epsilon * rates, gravity, m1, m2, l1, l2)
        - double_pendulum_energy(states - epsilon * rates, gravity, m1, m2, l1, l2)
    ) / (2 * epsilon)
    omega1, omega2 = states[:, 2], states[:, 3]
    power = torques * omega1 - damping * omega1**2 - damping * (omega2 - omega1) ** 2
    np.testing.assert_allclose(energy_rate, power, rtol=1e-6, atol=1e-6)


def test_a_massless_second_link_leaves_the_single_pendulum() -> None:
    states = np.array([[0.7, -2.0, 1.5, 0.3], [2.9, 1.0, -0.4, 2.0]])
    torques = np.array([1.2, -0.8])
    accelerations = double_pendulum_accelerations(states, torques, 9.81, 1.3, 1e-12, 0.8, 1.0, 0.0)
    expected = 3 * 9.81 / (2 * 0.8) * np.sin(states[:, 0]) + 3 * torques / (1.3 * 0.8**2)
    np.testing.assert_allclose(accelerations[:, 0], expected, rtol=1e-9)
    single = pendulum_step(
        states[:, [0, 2]], torques[:, None], 9.81, 1.3, 0.8, 0.0,
        dt=1e-4, max_speed=1e3, max_torque=5.0,
    )  # fmt: skip
    double = double_pendulum_step(
        states, torques[:, None], 9.81, 1.3, 1e-12, 0.8, 1.0, 0.0,
        dt=1e-4, max_speed=1e3, max_torque=5.0, substeps=1,
    )  # fmt: skip
    np.testing.assert_allclose(double[:, [0, 2]], single, rtol=1e-6, atol=1e-9)


def test_rk4_step_matches_a_tight_reference_integration() -> None:
    states, torques, gravity, m1, m2, l1, l2, damping = _random_systems(6, seed=1)
    stepped = double_pendulum_step(
        states, torques[:, None], gravity, m1, m2, l1, l2, damping,
        dt=0.05, max_speed=1e3, max_torque=5.0, substeps=24,
    )  # fmt: skip
    for index in range(len(states)):
        params = (torques[index : index + 1], gravity[index], m1[index], m2[index])
        params += (l1[index], l2[index], damping[index])

        def rates(_: float, x: np.ndarray, params: tuple = params) -> np.ndarray:
            accel = double_pendulum_accelerations(x[None], *params)[0]
            return np.concatenate((x[2:], accel))

        solution = solve_ivp(rates, (0.0, 0.05), states[index], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stepped[index], solution.y[:, -1], rtol=1e-8, atol=1e-9)


def test_free_energy_drifts_less_than_1e_4_over_1000_steps() -> None:
    vec = gym.make_vec(
        DOUBLE,
        num_envs=8,
        vectorization_mode="vector_entry_point",
        obs_type="state",
        max_episode_steps=None,
    )
    _, infos = vec.reset(seed=123, options={"y_init": 3.0})
    initial = infos["energy"]
    assert np.min(np.abs(initial)) > 0.1  # relative drift is meaningful for these seeds
    zero_torque = np.zeros((8, 1), dtype=np.float32)
    worst = 0.0
    for _ in range(1000):
        *_, infos = vec.step(zero_torque)
        worst = max(worst, float(np.max(np.abs(infos["energy"] / initial - 1.0))))
    assert worst < 1e-4
    assert np.max(np.abs(infos["state"][:, 2:])) > 5.0  # the links did swing hard


def test_reward_is_zero_upright_at_rest_and_penalises_torque() -> None:
    states = np.array([[0.0, 2 * np.pi, 0.0, 0.0], [np.pi, 0.0, 1.0, -1.0]])
    rewards = double_pendulum_reward(states, np.array([[0.0], [9.0]]), max_torque=5.0)
    assert rewards[0] == 0.0
    assert rewards[1] == pytest.approx(-(np.pi**2 + 0.2 + 0.025))


def test_info_reports_double_pendulum_parameters_and_energy() -> None:
    env = gym.make(DOUBLE, mass2=0.5, length1=0.7, gravity_range=(9.0, 11.0))
    _, info = env.reset(seed=0)
    names = ("gravity", "mass1", "mass2", "length1", "length2", "damping")
    assert set(info) == {"state", "energy", *names}
    assert env.unwrapped.parameter_names == names
    assert (info["mass2"], info["length1"]) == (0.5, 0.7) and 9.0 <= info["gravity"] < 11.0
    expected = double_pendulum_energy(info["state"][None], info["gravity"], 1.0, 0.5, 0.7, 1.0)[0]
    assert info["energy"] == expected
    obs, *_ = env.step(np.array([1.0], dtype=np.float32))
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8


@pytest.mark.parametrize(
    "kwargs", [{"substeps": 0}, {"mass2": 0.0}, {"length1_range": (1.0, 0.5)}, {"mass": 1.0}]
)
def test_invalid_double_pendulum_arguments_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        PixelDoublePendulumEnv(**kwargs)
