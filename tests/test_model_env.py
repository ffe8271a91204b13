"""Imagined environments inside a world model (SB3 VecEnv and gymnasium Env), and the real-env
side of their latent observation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from support import PENDULUM_32, SIZE, collect_ou

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.model_env import (
    ContextSampler,
    LatentHistory,
    LatentPolicyAgent,
    ModelEnvConfig,
    WorldModelEnv,
    WorldModelVecEnv,
)
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.tailoring import TailoringConfig

P = 3
ENV = PENDULUM_32
BOX = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> ContextSampler:
    result = collect_ou(tmp_path_factory.mktemp("data"), 4, 2, 12)
    return ContextSampler.from_dataset(result["path"], P, "train", (0.5, 0.25, 0.25), 0)


def tiny_model(**changes: object) -> SVGWorldModel:
    torch.manual_seed(0)
    settings: dict[str, object] = dict(image_size=SIZE, channels=3, action_dim=1, width=4,
                                       g_dim=8, keypoints=4, rnn_size=16, rnn_layers=1,
                                       action_embed_dim=2)
    config = SVGConfig(**{**settings, **changes})  # type: ignore[arg-type]
    model = SVGWorldModel(config).eval()
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model


def roll(env: WorldModelVecEnv, actions: np.ndarray) -> tuple[list, list, list, list]:
    observations, rewards, dones, infos = [env.reset()], [], [], []
    for action in actions:
        observation, reward, done, info = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        dones.append(done)
        infos.append(info)
    return observations, rewards, dones, infos


def test_vector_env_equals_single_envs_and_the_models_rollout(contexts: ContextSampler) -> None:
    model = tiny_model()
    config = ModelEnvConfig(horizon=4)
    vector = WorldModelVecEnv(model, contexts, BOX, 3, config, seed=10)
    actions = np.random.default_rng(0).uniform(-3, 3, (9, 3, 1)).astype(np.float32)
    observations, rewards, dones, infos = roll(vector, actions)
    assert observations[0].shape == (3, vector.observation_space.shape[0])
    assert vector.observation_space.shape == (8 + 2 * 16,)
    # truncated every 4 steps, with the last observation kept, then restarted
    assert [bool(d.all()) for d in dones] == [False, False, False, True] * 2 + [False]
    assert infos[3][0]["TimeLimit.truncated"] and "terminal_observation" in infos[3][0]
    for i in range(3):
        single = WorldModelEnv(model, contexts, BOX, config, seed=10 + i)
        observation, _ = single.reset()
        np.testing.assert_allclose(observation, observations[0][i], rtol=1e-5, atol=1e-6)
        for t in range(9):
            observation, reward, terminated, truncated, _ = single.step(actions[t, i])
            after = observations[t + 1][i]
            expected = infos[t][i]["terminal_observation"] if dones[t][i] else after
            np.testing.assert_allclose(observation, expected, rtol=1e-5, atol=1e-6)
            assert reward == pytest.approx(float(rewards[t][i]), rel=1e-5, abs=1e-6)
            assert truncated == bool(dones[t][i]) and not terminated
            if truncated:
                observation, _ = single.reset()
    # an imagined episode is the model's rollout of the (clipped) actions from its context
    fresh = WorldModelVecEnv(model, contexts, BOX, 3, config, seed=10)
    fresh.reset()
    start = fresh.state
    with torch.no_grad():
        expected = model.rollout(start, torch.as_tensor(actions[:4]).clamp(-2, 2).transpose(0, 1))
    np.testing.assert_allclose(np.stack(rewards[:4], 1), expected.rewards.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_starts_from_cached_codes_equal_starts_from_frames(contexts: ContextSampler) -> None:
    model = tiny_model()
    # the codes path (latent observations) and the frames path (frame observations) draw the
    # same contexts from the same seeds and reach the same states
    cached = WorldModelVecEnv(model, contexts, BOX, 3, ModelEnvConfig(horizon=3), seed=5)
    encoded = WorldModelVecEnv(model, contexts, BOX, 3,
                               ModelEnvConfig(horizon=3, observation="frames"), seed=5)
    assert cached._from_codes() and not encoded._from_codes()
    cached.reset()
    encoded.reset()
    for _ in range(7):  # through two restarts
        actions = np.full((3, 1), 1.5, np.float32)
        cached.step(actions)
        encoded.step(actions)
        torch.testing.assert_close(cached.state.latent(), encoded.state.latent(), rtol=1e-5,
                                   atol=1e-6)


def test_seeding_reproduces_and_differs(contexts: ContextSampler) -> None:
    model = tiny_model()
    first = WorldModelVecEnv(model, contexts, BOX, 2, seed=3).reset()
    again = WorldModelVecEnv(model, contexts, BOX, 2, seed=3).reset()
    other = WorldModelVecEnv(model, contexts, BOX, 2, seed=4).reset()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    np.testing.assert_allclose(first[1], other[0], rtol=1e-5, atol=1e-6)  # env i: seed + i


def test_frame_observations_and_env_checkers(contexts: ContextSampler) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    model = tiny_model()
    frames = WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(observation="frames",
                                                                      frame_stack=2))
    observation = frames.reset()
    assert observation.dtype == np.uint8 and observation.shape == (2, SIZE, SIZE, 6)
    assert frames.step(np.zeros((2, 1), np.float32))[0].shape == (2, SIZE, SIZE, 6)
    for config in (ModelEnvConfig(horizon=5), ModelEnvConfig(observation="frames", horizon=5)):
        gym_check_env(WorldModelEnv(model, contexts, BOX, config), skip_render_check=True)
        sb3_check_env(WorldModelEnv(model, contexts, BOX, config), warn=False)


def test_noether_checkpoints_tailor_each_imagined_episode(contexts: ContextSampler) -> None:
    model = tiny_model()
    torch.manual_seed(1)
    noether = NoetherModule(NoetherConfig(enabled=True, embedding=EmbeddingConfig(dim=2, width=4),
                                          inner=TailoringConfig(steps=1, lr=5.0)), model.config)
    plain = WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(horizon=6), seed=1)
    tailored = WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(horizon=6), seed=1,
                                noether=noether)
    untailored = WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(horizon=6,
                                                                          tailor_steps=0),
                                  seed=1, noether=noether)
    actions = np.ones((3, 2, 1), np.float32)
    assert tailored.tailor_steps == 1 and tailored.adapt is None
    _, tailored_rewards, *_ = roll(tailored, actions)
    _, plain_rewards, *_ = roll(plain, actions)
    _, untailored_rewards, *_ = roll(untailored, actions)
    assert tailored.adapt is not None and untailored.adapt is None
    np.testing.assert_array_equal(np.stack(plain_rewards), np.stack(untailored_rewards))
    assert not np.allclose(np.stack(tailored_rewards), np.stack(plain_rewards))
    with pytest.raises(ValueError, match=r"model_env\.tailor_steps=2: expected a Noether"):
        WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(tailor_steps=2))


def test_bad_settings_are_refused(contexts: ContextSampler) -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"model_env\.horizon: expected an int >= 1, got 0"):
        WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(horizon=0))
    with pytest.raises(ValueError, match=r"model_env\.observation: expected one of"):
        WorldModelVecEnv(model, contexts, BOX, 2, ModelEnvConfig(observation="state"))
    with pytest.raises(ValueError, match="expected a world model with a reward head"):
        WorldModelVecEnv(tiny_model(reward_head=False), contexts, BOX, 2)
    with pytest.raises(ValueError, match="2-dimensional actions, got 1"):
        WorldModelVecEnv(tiny_model(action_dim=2), contexts, BOX, 2)
    with pytest.raises(RuntimeError, match="reset"):
        WorldModelVecEnv(model, contexts, BOX, 2).step(np.zeros((2, 1), np.float32))


def test_real_latent_is_the_imagined_start_of_the_last_frames_at_every_step() -> None:
    model = tiny_model()
    env = gym.make_vec(ENV.id, num_envs=2, vectorization_mode="vector_entry_point",
                       image_size=SIZE)
    observation, _ = env.reset(seed=[0, 1])
    frames, actions = [observation], []
    rng = np.random.default_rng(0)
    for _ in range(P + 3):
        action = rng.uniform(-2, 2, (2, 1)).astype(np.float32)
        actions.append(action)
        observation, *_ = env.step(action)
        frames.append(observation)
    env.close()
    history = LatentHistory(model, P, 2, torch.zeros(1))
    for t in range(P + 3):
        history.push(frames[t])
        if t >= P - 1:
            # the encoding of the last P frames and the P - 1 actions between: the state an
            # imagined episode starts from, never a state advanced through the whole episode
            window = torch.as_tensor(np.stack(frames[t - P + 1 : t + 1], 1))
            between = torch.as_tensor(np.stack(actions[t - P + 1 : t], 1))
            with torch.no_grad():
                start = model.encode_context(window, between)
            torch.testing.assert_close(history.latent(), start.latent())
        history.record(torch.as_tensor(actions[t]))
    history.reset(np.array([True, False]))
    history.push(frames[0])  # a restarted episode begins from its first frame repeated
    assert history.seen.tolist() == [1, P + 4]
    repeated = torch.as_tensor(np.stack([frames[0]] * P, 1))
    with torch.no_grad():
        start = model.encode_context(repeated, torch.zeros(2, P - 1, 1))
    torch.testing.assert_close(history.latent()[0], start.latent()[0])


def test_latent_policy_agent_acts_on_pixels_within_bounds() -> None:
    from noether_control.agents.harness import run_episodes

    class Constant:
        def predict(self, observation: np.ndarray, deterministic: bool = True
                    ) -> tuple[np.ndarray, None]:
            assert observation.shape == (2, 8 + 2 * 16)
            return np.full((2, 1), 5.0, np.float32), None

    model = tiny_model()
    env = gym.make_vec(ENV.id, num_envs=2, vectorization_mode="vector_entry_point",
                       image_size=SIZE, max_episode_steps=6)
    agent = LatentPolicyAgent(Constant(), model, BOX, 2, P)
    results = run_episodes(agent, env, 2, 0, np.random.default_rng(0))
    env.close()
    assert results.lengths.tolist() == [6, 6]
    # a torque clipped to 2 every step: the same return as the env's own under that torque
    reference = gym.make_vec(ENV.id, num_envs=2, vectorization_mode="vector_entry_point",
                             image_size=SIZE, max_episode_steps=6)
    reference.reset(seed=[0, 1])
    total = np.zeros(2)
    for _ in range(6):
        total += reference.step(np.full((2, 1), 2.0, np.float32))[1]
    reference.close()
    np.testing.assert_allclose(results.returns, total, rtol=1e-6)


def test_latent_policy_agent_explores_with_seeded_noise_and_remembers_what_it_applied() -> None:
    class Zero:
        def predict(self, observation: np.ndarray, deterministic: bool = True
                    ) -> tuple[np.ndarray, None]:
            return np.zeros((2, 1), np.float32), None

    model = tiny_model()
    env = gym.make_vec(ENV.id, num_envs=2, vectorization_mode="vector_entry_point",
                       image_size=SIZE)
    observation, _ = env.reset(seed=[0, 1])
    env.close()
    applied = []
    for _ in range(2):
        agent = LatentPolicyAgent(Zero(), model, BOX, 2, P, exploration_std=0.5)
        applied.append(agent.act(observation, np.random.default_rng(7)))
    np.testing.assert_array_equal(applied[0], applied[1])  # the rng alone decides the noise
    expected = np.clip(0.5 * 2.0 * np.random.default_rng(7).standard_normal((2, 1)), -2, 2)
    np.testing.assert_allclose(applied[0], expected, rtol=1e-6)
    # the context of the next state holds the noisy action that was applied
    torch.testing.assert_close(agent.history.actions[:, -1], torch.as_tensor(applied[1]))
    with pytest.raises(ValueError, match=r"exploration_std: expected a number >= 0"):
        LatentPolicyAgent(Zero(), model, BOX, 2, P, exploration_std=-0.1)
