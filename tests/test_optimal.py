"""The optimal controller of a single pendulum: its value table and the greedy agent on it."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from support import PENDULUM_32

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import run_episodes
from noether_control.agents.mpc import OracleAgent
from noether_control.agents.optimal import OptimalAgent, PendulumValueTable, StateGrid
from noether_control.agents.plan import AgentConfig, PlanConfig, plan_episodes
from noether_control.agents.planners import make_planner
from noether_control.envs.systems import PendulumSystem

SYSTEM = PendulumSystem.from_kwargs()
PARAMS = SYSTEM.fixed_parameters


def vector_env(env_id: str = "NoetherControl/PixelPendulum-v0", num_envs: int = 1) -> gym.Env:
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        image_size=16)


def test_one_step_left_is_worth_the_best_reward_and_upright_rest_costs_nothing() -> None:
    table = PendulumValueTable(SYSTEM, PARAMS, steps=30, grid=StateGrid(64, 51, 21))
    angles = -np.pi + 2 * np.pi * np.arange(64) / 64
    speeds = np.linspace(-8.0, 8.0, 51)
    grid_states = np.stack(np.meshgrid(angles, speeds, indexing="ij"), axis=-1).reshape(-1, 2)
    np.testing.assert_array_equal(table.values[0], 0.0)
    # with one step left the torque only costs: zero torque, reward -(θ² + 0.1 θ̇²)
    np.testing.assert_allclose(table.values[1], -(grid_states[:, 0] ** 2
                                                  + 0.1 * grid_states[:, 1] ** 2))
    np.testing.assert_array_equal(table.value(np.zeros((31, 2)), np.arange(31)), 0.0)


def test_more_steps_left_never_raise_the_value() -> None:
    table = PendulumValueTable(SYSTEM, PARAMS, steps=40, grid=StateGrid(64, 51, 11))
    # every reward is <= 0 and the backup is monotone, so V_{k+1} <= V_k everywhere
    assert np.all(np.diff(table.values, axis=0) <= 1e-12)
    hanging = table.value(np.array([[np.pi, 0.0]]), 40)[0]
    assert hanging < -100.0


def test_the_table_matches_exhaustive_search_over_three_step_plans() -> None:
    torques = 11
    table = PendulumValueTable(SYSTEM, PARAMS, steps=3, grid=StateGrid(256, 201, torques))
    rng = np.random.default_rng(0)
    starts = np.column_stack([rng.uniform(-np.pi, np.pi, 5), rng.uniform(-6.0, 6.0, 5)])
    plans = np.array(list(itertools.product(np.linspace(-2.0, 2.0, torques), repeat=3)))
    for start in starts:
        states = np.repeat(start[None], len(plans), axis=0)
        returns = np.zeros(len(plans))
        for step in range(3):
            actions = plans[:, step:step + 1]
            returns += SYSTEM.reward(states, actions)
            states = SYSTEM.step(states, actions, np.broadcast_to(PARAMS, (len(plans), 4)))
        assert table.value(start[None], 3)[0] == pytest.approx(returns.max(), abs=0.02)


def test_the_agent_earns_what_its_table_predicts_and_beats_oracle_mpc_from_hanging() -> None:
    env = vector_env()
    seed = 1022  # a start hanging almost at rest: MPC with a 20-step plan swings twice
    optimal = OptimalAgent(env)
    played = run_episodes(optimal, env, 1, seed, np.random.default_rng(0)).returns[0]
    env.reset(seed=[seed])
    start = env.unwrapped.states.copy()
    predicted = optimal.table(env.unwrapped.physical_parameters[0]).value(start, 200)[0]
    assert abs(start[0, 0]) > 2.5 and abs(start[0, 1]) < 1.0
    assert played == pytest.approx(predicted, rel=0.02)
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": 500, "horizon": 20, "temperature": 0.1,
                            "iterations": 2, "noise_beta": 2.0}, box.low, box.high)
    mpc = run_episodes(OracleAgent(env, planner), env, 1, seed,
                       np.random.default_rng(seed)).returns[0]
    assert played > mpc + 20.0


def test_each_episode_of_randomised_physics_gets_the_table_of_its_own_physics() -> None:
    env = vector_env("NoetherControl/PixelPendulumRandom-v0", num_envs=2)
    agent = OptimalAgent(env, StateGrid(32, 25, 9), candidates=9)
    env.reset(seed=[3, 4])
    agent.reset(np.ones(2, dtype=np.bool_))
    params = env.unwrapped.physical_parameters
    assert not np.array_equal(params[0], params[1])
    actions = agent.act(None, np.random.default_rng(0))
    for row in range(2):
        scores = agent.table(params[row]).action_values(env.unwrapped.states[row:row + 1],
                                                        agent.candidates, np.array([200]))
        assert actions[row, 0] == np.float32(agent.candidates[scores.argmax()])
    assert not np.array_equal(agent.table(params[0]).values, agent.table(params[1]).values)


def test_bad_inputs_are_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="single pendulum"):
        OptimalAgent(vector_env("NoetherControl/PixelDoublePendulum-v0"))
    with pytest.raises(TypeError, match="native noether-control vector env"):
        OptimalAgent(gym.make("NoetherControl/PixelPendulum-v0"))
    with pytest.raises(ValueError, match="angles"):
        StateGrid(angles=2)
    with pytest.raises(ValueError, match=r"params: expected shape \(4,\)"):
        PendulumValueTable(SYSTEM, PARAMS[:2], steps=3)
    table = PendulumValueTable(SYSTEM, PARAMS, steps=3, grid=StateGrid(16, 9, 3))
    with pytest.raises(ValueError, match=r"remaining: expected steps in \[0, 3\]"):
        table.value(np.zeros((1, 2)), 4)
    with pytest.raises(ValueError, match=r"agent\.grid_speeds"):
        AgentConfig(kind="optimal", grid_speeds=1).validate()


def test_plan_runs_the_optimal_agent(tmp_path: Path) -> None:
    config = PlanConfig(env=PENDULUM_32, agent=AgentConfig(kind="optimal", grid_angles=64,
                                                           grid_speeds=51, grid_torques=11),
                        episodes=2, num_envs=2, seed=1000, record=0, progress=False)
    document = plan_episodes(config, tmp_path)
    assert document["agent"]["kind"] == "optimal" and document["planner"] is None
    assert len(document["episode_returns"]) == 2 and document["mean_return"] > -400.0
