"""An actor and critic trained in the world model guiding MPC through it: the plans the actor
proposes, the critic's value at the end of a plan, and the MPC agent and ``plan`` using both."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from support import PENDULUM_32, SIZE, collect_ou, tiny_checkpoint

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.guide import LatentGuide
from noether_control.agents.model_env import ContextSampler, WorldModelVecEnv
from noether_control.agents.mpc import MPCAgent, MPCConfig
from noether_control.agents.plan import (
    AgentConfig,
    PlanConfig,
    load_planning_checkpoint,
    plan_episodes,
)
from noether_control.agents.planners import make_planner
from noether_control.models.planning import plan_returns
from noether_control.models.svg import WorldState

P = 2
BOX = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    data = collect_ou(tmp_path_factory.mktemp("data"), 4, 2, 12)
    path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "checkpoints" / "last.pt",
                           data["path"], P, (0.5, 0.25, 0.25))
    model = load_planning_checkpoint(str(path), torch.device("cpu")).model
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    contexts = ContextSampler.from_dataset(data["path"], P, "train", (0.5, 0.25, 0.25), 0)
    env = WorldModelVecEnv(model, contexts, BOX, num_envs=2)
    agent = SAC("MlpPolicy", env, seed=0, learning_starts=8, buffer_size=64, device="cpu")
    agent.learn(16)
    zip_path = tmp_path_factory.mktemp("sac") / "policy.zip"
    agent.save(zip_path)
    return {"model": model, "contexts": contexts, "env": env, "agent": agent,
            "zip": zip_path, "checkpoint": path}


def context(setting: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Two copies of one drawn context: frames ``(2, P, C, S, S)``, actions ``(2, P − 1, A)``."""
    frames, actions = setting["contexts"].draw(np.random.default_rng(0))
    return frames[None].repeat(2, 1, 1, 1, 1), actions[None].repeat(2, 1, 1)


@torch.no_grad()
def start(setting: dict) -> WorldState:
    return setting["model"].encode_context(*context(setting))


@torch.no_grad()
def test_the_actor_proposes_what_sb3_would_do_along_the_models_own_steps(setting: dict) -> None:
    guide = LatentGuide(setting["agent"], setting["model"], BOX)
    assert guide.window is None
    state = start(setting)
    plan = guide.propose(*context(setting), 4)
    assert plan.shape == (2, 4, 1)
    for step in range(4):
        expected, _ = setting["agent"].predict(state.latent().numpy(), deterministic=True)
        np.testing.assert_allclose(plan[:, step].numpy(), expected, atol=1e-6)
        _, state = setting["model"].advance(state, plan[:, step:step + 1])


@torch.no_grad()
def test_the_value_is_the_critics_at_the_actors_action_and_ends_each_plans_return(
        setting: dict) -> None:
    agent = setting["agent"]
    guide = LatentGuide(agent, setting["model"], BOX, value_weight=0.5)
    state = start(setting)
    latent = state.latent()
    actions, _ = agent.predict(latent.numpy(), deterministic=True)
    with torch.no_grad():
        scaled = torch.as_tensor(agent.policy.scale_action(actions))
        critic = torch.min(*agent.critic(latent, scaled)).squeeze(1)
    torch.testing.assert_close(guide.value(latent), 0.5 * critic)
    candidates = torch.rand(2, 3, 4, 1, generator=torch.Generator().manual_seed(0)) * 4 - 2
    model = setting["model"]
    plain = plan_returns(model, state, candidates)
    valued = plan_returns(model, state, candidates, terminal_value=guide.value)
    _, after = model.advance(model.expand(state, 3), candidates.flatten(0, 1))
    torch.testing.assert_close(valued, plain + guide.value(after.latent()).reshape(2, 3))


@torch.no_grad()
def test_mpc_starts_from_the_actors_plan_where_the_model_scores_it_higher(
        setting: dict) -> None:
    model = setting["model"]
    # random shooting with one sample returns its warm start: the action shows which it was
    planner = make_planner({"kind": "random", "samples": 1, "horizon": 4}, BOX.low, BOX.high)
    draws = [setting["contexts"].draw(np.random.default_rng(seed))[0][0] for seed in range(4)]
    first = np.stack([(frame.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                      for frame in draws])
    taken = []
    for push in (3.0, -3.0):  # actors that push one way: one of them beats the zero plan
        sac = SAC.load(setting["zip"], device="cpu")
        sac.actor.mu.bias.fill_(push)
        guide = LatentGuide(sac, model, BOX, value_weight=0.0)
        agent = MPCAgent(model, planner, BOX, len(draws), P, MPCConfig(), guide=guide)
        agent.reset(np.ones(len(draws), dtype=np.bool_))
        actions = agent.act(first, np.random.default_rng(0))
        # the context it planned from: the first frame repeated, centre actions between
        frames, _ = agent.context(torch.arange(len(draws)))
        past = torch.zeros(len(draws), P - 1, 1)
        state = model.encode_context(frames, past)
        proposal = guide.propose(frames, past, 4)
        scores = plan_returns(model, state,
                              torch.stack([torch.zeros_like(proposal), proposal], 1))
        better = scores[:, 1] > scores[:, 0]
        expected = torch.where(better[:, None], proposal[:, 0], 0.0)
        np.testing.assert_allclose(actions, expected.numpy(), atol=1e-6)
        taken.append(better)
    assert torch.cat(taken).any() and not torch.cat(taken).all()


def test_guides_that_cannot_steer_this_model_are_refused(setting: dict,
                                                         tmp_path: Path) -> None:
    model = setting["model"]
    ppo = PPO("MlpPolicy", setting["env"], n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="expected a SAC agent"):
        LatentGuide(ppo, model, BOX)
    state_env = gym.make("NoetherControl/PixelPendulum-v0", obs_type="state")
    with pytest.raises(ValueError, match=r"observes vectors of shape \(3,\)"):
        LatentGuide(SAC("MlpPolicy", state_env, device="cpu"), model, BOX)
    ppo.save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match=r"expected a SAC policy\.zip"):
        LatentGuide.load(str(tmp_path / "ppo.zip"), model, BOX)
    planner = make_planner({"kind": "random", "samples": 1, "horizon": 4}, BOX.low, BOX.high)
    with pytest.raises(ValueError, match=r"agent\.tailor='once_per_step'"):
        MPCAgent(model, planner, BOX, 2, P, MPCConfig(tailor="once_per_step"),
                 guide=LatentGuide(setting["agent"], model, BOX))
    with pytest.raises(ValueError, match=r"agent\.guide_path: a guide steers MPC"):
        AgentConfig(kind="oracle", guide_path="policy.zip").validate()
    with pytest.raises(ValueError, match=r"agent\.guide_value_weight"):
        AgentConfig(guide_value_weight=-1.0).validate()


def test_plan_acts_with_a_guide(setting: dict, tmp_path: Path) -> None:
    env = PENDULUM_32
    assert env.kwargs["image_size"] == SIZE
    config = PlanConfig(env=env, agent=AgentConfig(kind="mpc", guide_path=str(setting["zip"])),
                        planner={"kind": "mppi", "samples": 8, "horizon": 3, "iterations": 1},
                        checkpoint=str(setting["checkpoint"]), episodes=1, num_envs=1,
                        device="cpu", record=0, progress=False)
    document = plan_episodes(config, tmp_path)
    assert document["agent"]["guide_path"] == str(setting["zip"])
    assert len(document["episode_returns"]) == 1
