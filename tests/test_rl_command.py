"""``noether-control rl``: SAC trained inside a world model, evaluated on the real env, resumed
after a kill, and evaluated again through ``noether-control plan agent=sb3``."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from stable_baselines3 import SAC
from support import PENDULUM_32, SIZE, collect_ou, tiny_checkpoint

import noether_control as noether_control_package
from noether_control.agents.plan import AgentConfig, PlanConfig, plan_episodes
from noether_control.agents.policies import make_policy
from noether_control.agents.rl import RLConfig, latest_checkpoint, train_in_model
from noether_control.data.env_config import make_vector_env
from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.runtime import to_dataclass

CONF = Path(noether_control_package.__file__).resolve().parent / "conf/commands"
P = 2
ENV = PENDULUM_32
BOX = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = collect_ou(tmp_path_factory.mktemp("data"), 4, 2, 12)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "checkpoints" / "last.pt",
                           data["path"], P, (0.5, 0.25, 0.25))


def smoke_config(checkpoint: Path, *overrides: str) -> RLConfig:
    with initialize_config_dir(str(CONF / "rl"), version_base="1.3"):
        cfg = compose("rl", overrides=["experiment=smoke", f"checkpoint={checkpoint}",
                                       f"env.kwargs.image_size={SIZE}", "device=cpu",
                                       *overrides])
    return to_dataclass(RLConfig, cfg)


def test_sac_trains_in_the_model_and_is_evaluated_on_the_real_env(checkpoint: Path,
                                                                   tmp_path: Path) -> None:
    config = smoke_config(checkpoint)
    assert config.steps == 256 and config.model_env.horizon == 8 and config.algo == "sac"
    document = train_in_model(config, tmp_path)
    assert document["imagined_steps"] == 256 and document["resumed_from_steps"] == 0
    assert document["agent"]["kind"] == "sb3" and document["real_env_steps"] == 48
    assert len(document["episode_returns"]) == 2 and document["seeds"] == [0, 1]
    assert json.loads((tmp_path / "results.json").read_text()) == document
    assert (tmp_path / "policy.zip").is_file()
    assert latest_checkpoint(tmp_path / "checkpoints")[1] == 256  # type: ignore[index]
    assert any((tmp_path / "tensorboard").iterdir())
    # the replay buffer holds the run's own steps, not SB3's default million
    assert SAC.load(tmp_path / "policy.zip").buffer_size == 256
    # the saved policy, evaluated again by `plan agent=sb3`, acts exactly as at the end of rl
    again = plan_episodes(PlanConfig(env=config.env, agent=AgentConfig(
        kind="sb3", policy_path=str(tmp_path / "policy.zip")), checkpoint=str(checkpoint),
        episodes=2, num_envs=2, device="cpu", record=0, progress=False), tmp_path / "plan")
    assert again["episode_returns"] == document["episode_returns"]


def test_a_killed_run_resumes_from_its_last_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    first = smoke_config(checkpoint, "steps=128")
    train_in_model(first, tmp_path)
    saved = latest_checkpoint(tmp_path / "checkpoints")
    assert saved is not None and saved[1] == 128
    assert (tmp_path / "checkpoints" / "policy_replay_buffer_128_steps.pkl").is_file()
    resumed = train_in_model(smoke_config(checkpoint, "steps=256"), tmp_path)
    assert resumed["resumed_from_steps"] == 128 and resumed["imagined_steps"] == 256
    assert latest_checkpoint(tmp_path / "checkpoints")[1] == 256  # type: ignore[index]
    # only the newest replay buffer is kept: each is a full copy of the preallocated arrays
    buffers = sorted(path.name for path in (tmp_path / "checkpoints").glob("*buffer*"))
    assert buffers == ["policy_replay_buffer_256_steps.pkl"]


def test_bad_settings_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint: expected the world model to train in"):
        train_in_model(RLConfig(), tmp_path)
    with pytest.raises(ValueError, match=r"algo: expected one of \('sac', 'ppo'\), got 'dqn'"):
        train_in_model(smoke_config(checkpoint, "algo=dqn"), tmp_path)
    with pytest.raises(ValueError, match=r"model_env\.horizon: expected an int >= 1, got 0"):
        train_in_model(smoke_config(checkpoint, "model_env.horizon=0"), tmp_path)
    with pytest.raises(ValueError, match=r"the checkpoint's model reads \(32, 32, 3\) frames"):
        train_in_model(smoke_config(checkpoint, "env.kwargs.image_size=64"), tmp_path)
    with pytest.raises(ValueError, match=r"agent\.policy_path: agent\.kind=sb3 expected"):
        plan_episodes(PlanConfig(env=ENV, agent=AgentConfig(kind="sb3"),
                                 checkpoint=str(checkpoint), progress=False), tmp_path / "p")
    with pytest.raises(FileNotFoundError, match=r"SB3 checkpoint: expected a \.zip file"):
        plan_episodes(PlanConfig(env=ENV, agent=AgentConfig(kind="sb3", policy_path="none.zip"),
                                 checkpoint=str(checkpoint), progress=False), tmp_path / "p")


def test_a_policy_trained_in_a_model_collects_through_it_and_no_other(checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    train_in_model(smoke_config(checkpoint, "steps=128", "episodes=1", "eval_num_envs=1"),
                   tmp_path)
    settings = {"kind": "sb3", "path": str(tmp_path / "policy.zip"), "algo": "sac",
                "checkpoint": str(checkpoint), "exploration_std": 0.2, "device": "cpu"}
    policy = make_policy(settings, BOX, 2)
    env = make_vector_env(ENV, 2, obs_type="pixels_state")
    observation, _ = env.reset(seed=[0, 1])
    env.close()
    actions = policy.act(observation, np.random.default_rng(0))
    assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 2)
    # a model whose latent state is another size: the policy's observations do not fit it
    other = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=6, keypoints=4, rnn_size=8,
                                    rnn_layers=1, action_embed_dim=2))
    config = torch.load(checkpoint, weights_only=False)["config"]
    wrong = save_checkpoint(tmp_path / "other" / "last.pt", model=other, optimizer=None, step=0,
                            config=config, rng={})
    with pytest.raises(ValueError, match=r"the policy observes vectors of shape \(40,\), the "
                                         r"checkpoint's latent state has shape \(22,\)"):
        make_policy({**settings, "checkpoint": str(wrong)}, BOX, 2)
    with pytest.raises(ValueError, match=r"policy\.deterministic: an agent trained in a world"):
        make_policy({**settings, "deterministic": False}, BOX, 2)
    with pytest.raises(ValueError, match=r"policy\.exploration_std: expected a number >= 0"):
        make_policy({**settings, "checkpoint": "", "exploration_std": -0.1}, BOX, 2)
