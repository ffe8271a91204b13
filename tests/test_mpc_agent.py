"""MPC and oracle agents, and the episode harness every agent is evaluated with."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.harness import run_episodes
from noether_control.agents.mpc import MPCAgent, MPCConfig, OracleAgent
from noether_control.agents.oracle import policy_rollout
from noether_control.agents.planners import make_planner
from noether_control.agents.policies import UniformPolicy
from noether_control.envs.dynamics import angle_normalize
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.tailoring import TailoringConfig

SIZE, P = 32, 3
ENV_ID = "NoetherControl/PixelPendulum-v0"


def tiny_model() -> SVGWorldModel:
    torch.manual_seed(0)
    config = SVGConfig(image_size=SIZE, channels=3, action_dim=1, width=4, g_dim=8, keypoints=4,
                       rnn_size=16, rnn_layers=1, action_embed_dim=2)
    model = SVGWorldModel(config).eval()
    # As after training: the change head starts at zero, hiding the LSTM from the prediction.
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model


def pixel_env(num_envs: int = 2, **kwargs: object) -> gym.vector.VectorEnv:
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        image_size=SIZE, **kwargs)


def mpc_agent(model: SVGWorldModel | None = None, planner: dict | None = None,
              num_envs: int = 2, **settings: object) -> MPCAgent:
    planner = planner or {"kind": "mppi", "samples": 16, "horizon": 4}
    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    return MPCAgent(model or tiny_model(), make_planner(planner, box.low, box.high), box,
                    num_envs, P, MPCConfig(**settings))  # type: ignore[arg-type]


def act_for(agent: MPCAgent, seeds: list[int], steps: int, rng_seed: int) -> np.ndarray:
    """Actions ``(steps, N, 1)`` of ``agent`` on fresh episodes of the given seeds."""
    env = pixel_env(len(seeds))
    rng = np.random.default_rng(rng_seed)
    observation, _ = env.reset(seed=seeds)
    agent.reset(np.ones(len(seeds), dtype=np.bool_), rng)
    actions = []
    for _ in range(steps):
        action = agent.act(observation, rng)
        actions.append(action)
        observation, *_ = env.step(action)
    env.close()
    return np.stack(actions)


def test_zero_warm_up_waits_for_the_context_then_plans_inside_the_bounds() -> None:
    actions = act_for(mpc_agent(warmup_action="zero"), [0, 1], 8, rng_seed=0)
    assert actions.dtype == np.float32 and actions.shape == (8, 2, 1)
    # the first P - 1 steps lack the model's context: the centre of the box
    assert np.all(actions[: P - 1] == 0)
    assert np.any(actions[P - 1 :] != 0)
    noisy = act_for(mpc_agent(exploration_std=5.0), [0, 1], 8, rng_seed=0)
    assert np.all(np.abs(noisy) <= 2.0) and np.any(np.abs(noisy) == 2.0)


def test_correlated_exploration_carries_the_push_and_restarts_with_the_episode() -> None:
    agent = mpc_agent(exploration_std=0.05, exploration_correlation=0.9)
    act_for(agent, [0, 1], 4, rng_seed=0)
    pushed = agent.noise.state.copy()
    # the next step's noise is the last one carried on (ρ = 0.9) plus a fresh innovation
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agent.loop, "step", lambda *args: agent.loop.centre.expand(2, -1))
        observation = np.zeros((2, SIZE, SIZE, 3), np.uint8)
        applied = agent.act(observation, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    rng.integers(2**62)  # the planner's seed for the step comes first
    innovation = rng.standard_normal((2, 1))
    expected = 0.9 * pushed + np.sqrt(1 - 0.81) * innovation
    np.testing.assert_allclose(applied, 0.05 * 2.0 * expected, rtol=1e-5)
    agent.reset(np.array([True, False]))
    assert agent.noise.fresh.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"agent.exploration_correlation: expected a number in"):
        mpc_agent(exploration_correlation=1.0)


def test_plan_warm_up_plans_from_the_first_frame_repeated() -> None:
    agent = mpc_agent(warmup_action="plan")
    env = pixel_env(2)
    rng = np.random.default_rng(0)
    observation, _ = env.reset(seed=[0, 1])
    agent.reset(np.ones(2, dtype=np.bool_), rng)
    first = agent.act(observation, rng)
    assert np.all(first != 0)  # planned, not the centre of the box
    context, past = agent.context(torch.arange(2))
    expected = torch.as_tensor(observation)[:, None].expand(-1, P, -1, -1, -1)
    torch.testing.assert_close(context, expected)
    # the actions between the repeated frames are the centre; the one just taken is recorded
    assert torch.all(past[:, :-1] == 0)
    torch.testing.assert_close(past[:, -1], torch.as_tensor(first))
    second, *_ = env.step(first)
    agent.act(second, rng)
    context, _ = agent.context(torch.arange(2))
    torch.testing.assert_close(context[:, :-1], expected[:, :-1])
    torch.testing.assert_close(context[:, -1], torch.as_tensor(second))
    env.close()


def test_reset_makes_a_second_episode_equal_a_fresh_agents() -> None:
    used = mpc_agent()
    act_for(used, [0, 1], 7, rng_seed=3)
    second = act_for(used, [5, 6], 7, rng_seed=4)
    fresh = act_for(mpc_agent(), [5, 6], 7, rng_seed=4)
    np.testing.assert_array_equal(second, fresh)


def test_actions_are_reproducible_by_seed() -> None:
    first = act_for(mpc_agent(), [0, 1], 6, rng_seed=1)
    np.testing.assert_array_equal(first, act_for(mpc_agent(), [0, 1], 6, rng_seed=1))
    assert not np.array_equal(first, act_for(mpc_agent(), [0, 1], 6, rng_seed=2))


def test_masked_reset_clears_only_those_episodes() -> None:
    agent = mpc_agent()
    act_for(agent, [0, 1], 5, rng_seed=0)
    kept_frames = agent.frames[1].clone()
    agent.reset(np.array([True, False]))
    assert agent.seen.tolist() == [0, 5]
    assert agent.frames[0].sum() == 0
    torch.testing.assert_close(agent.frames[1], kept_frames)
    assert torch.all(agent.loop.plans[0] == 0)


def test_replans_every_k_steps_and_follows_the_plan_in_between() -> None:
    calls: list[int] = []
    agent = mpc_agent(replan_every=3)
    plan = agent.loop.planner.plan

    def counting(objective, initial_mean, generator):  # type: ignore[no-untyped-def]
        calls.append(initial_mean.shape[0])
        return plan(objective, initial_mean, generator)

    agent.loop.planner.plan = counting  # type: ignore[method-assign]
    steps = P - 1 + 7
    act_for(agent, [0, 1], steps, rng_seed=0)
    assert calls == [2, 2, 2]  # steps P-1, P+2, P+5 of 9: both episodes in one batch


def test_sb3_predict_resets_at_episode_start() -> None:
    agent = mpc_agent(num_envs=1)
    env = pixel_env(1)
    observation, _ = env.reset(seed=0)
    for _ in range(4):
        actions, state = agent.predict(observation, None, np.array([False]))
        observation, *_ = env.step(actions)
    assert state is None and actions.shape == (1, 1) and agent.seen[0] == 4
    agent.predict(observation, None, np.array([True]))
    assert agent.seen[0] == 1


def noether_module(model: SVGWorldModel) -> NoetherModule:
    torch.manual_seed(1)
    config = NoetherConfig(enabled=True, embedding=EmbeddingConfig(input="hidden", dim=4, width=8),
                           inner=TailoringConfig(steps=2, lr=0.5, optimizer="normalized"))
    return NoetherModule(config, model.config)


@pytest.mark.parametrize("mode", ["once_per_step", "per_iteration"])
def test_tailoring_to_the_episode_changes_the_plan(mode: str) -> None:
    model = tiny_model()
    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    planner = {"kind": "mppi", "samples": 16, "horizon": 4, "iterations": 2}

    def agent(tailor: str) -> MPCAgent:
        return MPCAgent(model, make_planner(planner, box.low, box.high), box, 2, P,
                        MPCConfig(tailor=tailor, tailor_history=5), noether=noether_module(model))

    plain = act_for(agent("none"), [0, 1], 7, rng_seed=0)
    tailored = act_for(agent(mode), [0, 1], 7, rng_seed=0)
    # from the first step: a short history repeats its first frame and is tailored to as well
    assert not np.allclose(plain[0], tailored[0])
    assert not np.allclose(plain[P - 1 :], tailored[P - 1 :])


def test_tailoring_needs_a_noether_checkpoint_and_a_long_enough_plan() -> None:
    with pytest.raises(ValueError, match="baseline checkpoint"):
        mpc_agent(tailor="once_per_step")
    model = tiny_model()
    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    short = make_planner({"kind": "mppi", "horizon": 2}, box.low, box.high)
    with pytest.raises(ValueError, match=r"planner.horizon"):
        MPCAgent(model, short, box, 1, P, MPCConfig(tailor="once_per_step"),
                 noether=noether_module(model))
    with pytest.raises(ValueError, match=r"agent.tailor"):
        mpc_agent(tailor="always")
    with pytest.raises(ValueError, match=r"agent.replan_every"):
        mpc_agent(replan_every=0)


def test_observations_the_model_cannot_read_are_refused() -> None:
    agent = mpc_agent()
    with pytest.raises(ValueError, match="trained on 32px"):
        agent.act(np.zeros((2, 64, 64, 3), np.uint8), np.random.default_rng(0))
    box = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    planner = make_planner({"kind": "random"}, box.low, box.high)
    with pytest.raises(ValueError, match="1-dimensional actions"):
        MPCAgent(tiny_model(), planner, box, 1, P)


def test_oracle_swings_the_pendulum_up() -> None:
    env = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point",
                       obs_type="state")
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": 200, "horizon": 15}, box.low, box.high)
    agent = OracleAgent(env, planner)
    results = run_episodes(agent, env, 2, seed=0, rng=np.random.default_rng(0))
    states = env.unwrapped.states
    random = run_episodes(UniformPolicy(box, 2), env, 2, seed=0, rng=np.random.default_rng(0))
    env.close()
    assert np.all(np.abs(angle_normalize(states[:, 0])) < 0.2)
    assert np.all(np.abs(states[:, 1]) < 1.0)
    assert results.returns.mean() > -450 > random.returns.mean()


def spin_forward(states: np.ndarray) -> np.ndarray:
    """A terminal value that pays for ending the plan at speed."""
    return 100.0 * states[:, 1]


def first_actions(env: gym.vector.VectorEnv, agent: OracleAgent) -> np.ndarray:
    """The agent's actions at the start of episodes seeded 0 and 1."""
    observation, _ = env.reset(seed=[0, 1])
    agent.reset(np.ones(2, dtype=np.bool_))
    return agent.act(observation, np.random.default_rng(0))


def test_oracle_plans_toward_its_terminal_value() -> None:
    env = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point",
                       obs_type="state")
    box = env.single_action_space
    # one step: the velocity it ends at grows with the torque whatever the state
    planner = make_planner({"kind": "mppi", "samples": 200, "horizon": 1}, box.low, box.high)

    actions = {name: first_actions(env, OracleAgent(env, planner, terminal_value=value))
               for name, value in (("plain", None), ("valued", spin_forward))}
    env.close()
    assert np.all(actions["valued"] > 1.5) and np.all(actions["valued"] > actions["plain"] + 1.0)


def test_a_proposed_plan_replaces_the_warm_start_only_where_it_scores_higher() -> None:
    env = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point",
                       obs_type="state")
    box = env.single_action_space
    # random shooting with one sample returns its warm start: the action shows which it was
    planner = make_planner({"kind": "random", "samples": 1, "horizon": 5}, box.low, box.high)

    actions = {}
    for torque in (2.0, -2.0):
        agent = OracleAgent(env, planner, terminal_value=spin_forward,
                            proposal_policy=lambda states, u=torque: np.full((len(states), 1), u))
        actions[torque] = first_actions(env, agent)
    stepped = env.unwrapped.states
    # pushing forward ends faster than the zero warm start: taken; pushing back does not
    np.testing.assert_array_equal(actions[2.0], 2.0)
    np.testing.assert_array_equal(actions[-2.0], 0.0)
    rollout = policy_rollout(env.unwrapped.system, stepped, env.unwrapped.physical_parameters,
                             lambda states: np.full((len(states), 1), 3.0), 3)
    manual, states = [], stepped
    for _ in range(3):
        manual.append(np.full((2, 1), 2.0))  # clipped to the torque bound
        states = env.unwrapped.system.step(states, manual[-1], env.unwrapped.physical_parameters)
    np.testing.assert_array_equal(rollout, np.stack(manual, axis=1))
    with pytest.raises(ValueError, match=r"policy: expected actions of shape \(2, 1\)"):
        policy_rollout(env.unwrapped.system, stepped, env.unwrapped.physical_parameters,
                       lambda states: np.zeros(len(states)), 3)
    with pytest.raises(ValueError, match=r"proposal: expected plans of shape \(2, 5, 1\)"):
        agent.loop.step(np.ones(2, dtype=np.bool_), agent._objective, 0,
                        lambda indices: torch.zeros(len(indices), 4, 1))
    env.close()


def test_harness_pairs_episodes_by_seed_whatever_the_parallelism() -> None:
    env = pixel_env(3)
    policy = UniformPolicy(env.single_action_space, 3)
    first = run_episodes(policy, env, 5, seed=10, rng=np.random.default_rng(0), record=2)
    again = run_episodes(policy, env, 5, seed=10, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(first.returns, again.returns)
    assert first.seeds == [10, 11, 12, 13, 14] and len(first.returns) == 5
    assert first.lengths.tolist() == [200] * 5
    assert first.frames is not None and first.frames.shape == (201, 2, SIZE, SIZE, 3)
    assert first.imagined is None
    # episode 13 starts from the same frame in a round of 3 as alone
    single = pixel_env(1)
    alone = run_episodes(UniformPolicy(single.single_action_space, 1), single, 1, seed=13,
                         rng=np.random.default_rng(0), record=1)
    observation, _ = env.reset(seed=[12, 13, 14])
    np.testing.assert_array_equal(alone.frames[0, 0], observation[1])
    env.close()
    single.close()


def test_mpc_records_what_it_imagines_for_the_gif() -> None:
    env = pixel_env(2)
    agent = MPCAgent(tiny_model(), make_planner({"kind": "mppi", "samples": 8, "horizon": 4},
                                                env.single_action_space.low,
                                                env.single_action_space.high),
                     env.single_action_space, 2, P, record=1)
    results = run_episodes(agent, env, 2, seed=0, rng=np.random.default_rng(0), record=1)
    env.close()
    assert results.imagined is not None
    assert results.imagined.shape == (200, 1, 4, SIZE, SIZE, 3)
    # a plan from the first step (the first frame repeated as context): every step imagined
    assert results.imagined.reshape(200, -1).max(axis=1).min() > 0
    assert results.ms_per_call > 0 and results.ms_per_action == results.ms_per_call / 2
