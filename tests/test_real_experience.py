"""SAC learned from a dataset's real transitions on the model's latent state: the transitions
are the latent observations a policy sees on the real env, SAC learns their rewards, ``rl
experience=real`` trains, resumes and refuses what it cannot use, and its agent guides MPC
reading every state along a plan as the encoding of the plan's last P frames."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from support import PENDULUM_32, SIZE, collect_ou, load_benchmark, tiny_checkpoint
from test_rl_command import smoke_config

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.agents.guide import LatentGuide
from noether_control.agents.model_env import (
    ContextSampler,
    LatentHistory,
    WorldModelVecEnv,
    episode_latents,
)
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.real_experience import (
    fill_replay_buffer,
    real_transitions,
    train_offline,
)
from noether_control.agents.rl import latest_checkpoint, train_in_model
from noether_control.data.env_config import EnvConfig
from noether_control.data.windows import EpisodeWindows
from noether_control.models.planning import plan_returns, window_latent

P = 3
STEPS = 12
BOX = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
CENTRE = torch.zeros(1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    data = collect_ou(tmp_path_factory.mktemp("data"), 4, 2, STEPS)
    path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "checkpoints" / "last.pt",
                           data["path"], P, (0.5, 0.25, 0.25))
    model = load_planning_checkpoint(str(path), torch.device("cpu")).model
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    transitions = real_transitions(model, data["path"], P, BOX, PENDULUM_32.id)
    return {"model": model, "data": data["path"], "checkpoint": path,
            "transitions": transitions}


def an_agent(setting: dict, **kwargs: object) -> SAC:
    contexts = ContextSampler.from_dataset(setting["data"], P, "train", (0.5, 0.25, 0.25), 0)
    env = WorldModelVecEnv(setting["model"], contexts, BOX, num_envs=1)
    return SAC("MlpPolicy", env, seed=0, buffer_size=len(setting["transitions"]),
               device="cpu", **kwargs)


@torch.no_grad()
def test_episode_latents_are_what_the_real_env_side_sees_step_by_step(setting: dict) -> None:
    model = setting["model"]
    episode = EpisodeWindows(setting["data"], 1, "all").episode(1)
    frames, actions = episode["frames"], episode["actions"]
    codes, _ = model.encode(frames)
    at_once = episode_latents(model, codes, actions[:-1], P, CENTRE)
    history = LatentHistory(model, P, 1, CENTRE)
    history.reset(np.ones(1, dtype=np.bool_))
    pixels = (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    for step in range(len(frames)):
        history.push(pixels[step:step + 1])
        torch.testing.assert_close(at_once[step], history.latent()[0], atol=1e-4, rtol=1e-4)
        history.record(actions[step:step + 1])
    with pytest.raises(ValueError, match="expected 11 actions between 12 frames"):
        episode_latents(model, codes, actions, P, CENTRE)


def test_the_transitions_are_the_datasets_steps_between_latent_observations(
        setting: dict) -> None:
    transitions = setting["transitions"]
    windows = EpisodeWindows(setting["data"], 1, "all")
    assert len(transitions) == windows.num_dataset_episodes * (STEPS - 1)
    rewards = np.concatenate([windows.columns(i)["rewards"][:-1] for i in windows.episode_ids])
    actions = np.concatenate([windows.columns(i)["actions"][:-1] for i in windows.episode_ids])
    np.testing.assert_array_equal(transitions.rewards, rewards)
    np.testing.assert_array_equal(transitions.actions, actions)
    # within an episode, a transition starts where the one before it ended
    first, second = slice(0, STEPS - 2), slice(1, STEPS - 1)
    np.testing.assert_array_equal(transitions.next_observations[first],
                                  transitions.observations[second])
    assert transitions.observations.shape[1] == setting["model"].config.latent_size


def test_sac_learns_the_real_rewards_from_the_transitions(setting: dict,
                                                          tmp_path: Path) -> None:
    # with γ = 0 the critic's target is the reward itself
    agent = an_agent(setting, gamma=0.0, batch_size=64, learning_rate=3e-3)
    transitions = setting["transitions"]
    fill_replay_buffer(agent, transitions)
    buffer = agent.replay_buffer
    assert buffer.full and buffer.size() == len(transitions)
    np.testing.assert_array_equal(buffer.rewards[:, 0], transitions.rewards)
    np.testing.assert_array_equal(buffer.next_observations[:, 0], transitions.next_observations)
    np.testing.assert_allclose(agent.policy.unscale_action(buffer.actions[:, 0]),
                               transitions.actions, atol=1e-6)
    observations = torch.as_tensor(transitions.observations)
    actions = torch.as_tensor(agent.policy.scale_action(transitions.actions))

    def fit() -> float:
        with torch.no_grad():
            predicted = agent.critic(observations, actions)[0].squeeze(1).numpy()
        return float(np.corrcoef(predicted, transitions.rewards)[0, 1])

    before = fit()
    train_offline(agent, 1500, 0, 750, tmp_path / "checkpoints", P)
    assert fit() > 0.9 > before
    assert latest_checkpoint(tmp_path / "checkpoints")[1] == 1500  # type: ignore[index]
    assert SAC.load(tmp_path / "checkpoints" / "policy_1500_steps.zip").latent_window == P
    small = an_agent(setting)
    small.replay_buffer.buffer_size = len(transitions) - 1
    with pytest.raises(ValueError, match=f"room for {len(transitions)} transitions"):
        fill_replay_buffer(small, transitions)


def test_a_dataset_the_model_cannot_read_or_of_another_env_is_refused(
        setting: dict, tmp_path: Path) -> None:
    model = setting["model"]
    with pytest.raises(ValueError, match="expected transitions of 'NoetherControl/Other-v0'"):
        real_transitions(model, setting["data"], P, BOX, "NoetherControl/Other-v0")
    other = collect(CollectConfig(episodes=2, num_envs=2, episode_steps=STEPS, progress=False,
                                  env=EnvConfig(name="pixel-pendulum", id=PENDULUM_32.id,
                                                kwargs={"image_size": 64}),
                                  policy={"kind": "ou"},  # type: ignore[arg-type]
                                  dataset=DatasetConfig(root=str(tmp_path))))
    with pytest.raises(ValueError, match=f"expected {SIZE} px frames .* got 64 px"):
        real_transitions(model, other["path"], P, BOX)


def test_rl_learns_from_real_experience_resumes_and_refuses_ppo(setting: dict,
                                                                tmp_path: Path) -> None:
    checkpoint = setting["checkpoint"]
    first = train_in_model(smoke_config(checkpoint, "experience=real", "steps=128",
                                        "checkpoint_every=64"), tmp_path)
    assert first["experience"] == "real" and first["gradient_steps"] == 128
    assert "imagined_steps" not in first and len(first["episode_returns"]) == 2
    resumed = train_in_model(smoke_config(checkpoint, "experience=real", "steps=192",
                                          "checkpoint_every=64"), tmp_path)
    assert resumed["resumed_from_steps"] == 128 and resumed["gradient_steps"] == 192
    assert SAC.load(tmp_path / "policy.zip").latent_window == P
    with pytest.raises(ValueError, match=r"experience=real .* needs algo=sac, got 'ppo'"):
        train_in_model(smoke_config(checkpoint, "experience=real", "algo=ppo"), tmp_path)
    with pytest.raises(ValueError, match=r"experience: expected one of \('model', 'real'\)"):
        train_in_model(smoke_config(checkpoint, "experience=dream"), tmp_path)


@torch.no_grad()
def test_a_real_experience_guide_reads_plans_as_their_last_p_frames(setting: dict) -> None:
    model = setting["model"]
    agent = an_agent(setting)
    agent.latent_window = P
    guide = LatentGuide(agent, model, BOX, value_weight=0.5)
    assert guide.window == P
    contexts = ContextSampler.from_dataset(setting["data"], P, "train", (0.5, 0.25, 0.25), 0)
    frames, actions = contexts.draw(np.random.default_rng(0))
    frames, actions = frames[None].repeat(2, 1, 1, 1, 1), actions[None].repeat(2, 1, 1)
    plan = guide.propose(frames, actions, 5)
    # step by step: the actor reads the encoding of the last P codes and P − 1 actions
    codes = list(model.encode(frames.flatten(0, 1))[0].unflatten(0, (2, P)).unbind(1))
    taken = list(actions.unbind(1))
    state = model.encode_context(frames, actions)
    for step in range(5):
        window = model.context_from_codes(torch.stack(codes[-P:], 1),
                                          torch.stack(taken[-(P - 1):], 1))
        expected, _ = agent.predict(window.latent().numpy(), deterministic=True)
        np.testing.assert_allclose(plan[:, step].numpy(), expected, atol=1e-6)
        taken.append(plan[:, step])
        _, state = model.advance(state, plan[:, step:step + 1])
        codes.append(state.code)
    # the value ends each plan at the encoding of its last P predicted codes
    candidates = torch.rand(2, 3, 5, 1, generator=torch.Generator().manual_seed(0)) * 4 - 2
    rows = model.expand(model.encode_context(frames, actions), 3)
    rewards, latent = window_latent(model, rows, candidates.flatten(0, 1), P)
    flat = candidates.flatten(0, 1)
    stepped, end = model.advance(rows, flat)
    torch.testing.assert_close(rewards, stepped)
    assert not torch.allclose(latent, end.latent())
    valued = plan_returns(model, model.encode_context(frames, actions), candidates,
                          terminal_value=guide.value, value_window=P)
    torch.testing.assert_close(valued, (stepped.sum(1) + guide.value(latent)).reshape(2, 3))
    with pytest.raises(ValueError, match="value window: expected 1 to 5 frames"):
        window_latent(model, rows, flat, 6)


def test_the_critic_benchmark_compares_the_value_and_the_return_at_plan_ends(
        setting: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent = an_agent(setting)
    agent.latent_window = P
    agent.save(tmp_path / "policy.zip")
    argv = ["guide_critic.py", str(setting["checkpoint"]), str(tmp_path / "policy.zip"),
            setting["data"], "--horizon", "4", "--episodes", "3", "--starts", "2"]
    with mock.patch.object(sys, "argv", argv):
        load_benchmark("guide_critic").main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "6 starts, horizon 4, the guide reads the last 3 frames"
    value, rewards = (line.split("|") for line in lines[-2:])
    assert value[1].strip() == "critic's value of the plan's end"
    assert rewards[1].strip() == "4-step return"
    # the starts' true 4-step returns are the dataset's: pendulum costs, all negative
    assert float(rewards[2]) < 0
