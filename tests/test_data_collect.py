"""``collect``: config composition, dataset contents against the true dynamics, seeding, safety."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import noether_control
from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.data.env_config import EnvConfig
from noether_control.data.minari_io import DatasetExistsError, dataset_path
from noether_control.data.windows import EpisodeWindows
from noether_control.envs.dynamics import pendulum_reward, pendulum_step
from noether_control.runtime import to_dataclass

CONF = Path(noether_control.__file__).parent / "conf" / "commands" / "collect"
PENDULUM_RANDOM = EnvConfig(
    name="pixel-pendulum-random", id="NoetherControl/PixelPendulumRandom-v0", kwargs={}
)


def small_config(root: Path, **overrides) -> CollectConfig:
    values = {
        "episodes": 5,
        "num_envs": 3,
        "episode_steps": 10,
        "seed": 7,
        "progress": False,
        "env": PENDULUM_RANDOM,
        "policy": {"kind": "ou"},
        "dataset": DatasetConfig(root=str(root)),
    }
    return CollectConfig(**(values | overrides))


def hdf5_arrays(path: str) -> dict[str, np.ndarray]:
    """Every dataset in a Minari HDF5 file, by its full name."""
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(Path(path) / "data" / "main_data.hdf5", "r") as handle:
        handle.visititems(
            lambda name, node: arrays.__setitem__(name, node[()])
            if isinstance(node, h5py.Dataset)
            else None
        )
    return arrays


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return collect(small_config(tmp_path_factory.mktemp("root")))


@pytest.mark.parametrize("env", ["pendulum", "pendulum_random", "double_pendulum"])
@pytest.mark.parametrize("policy", ["uniform", "ou", "sb3"])
def test_every_env_and_policy_group_composes_into_the_config(env: str, policy: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("collect", overrides=[f"env={env}", f"policy={policy}", "episodes=3"])
    config = to_dataclass(CollectConfig, cfg)
    assert config.episodes == 3
    assert config.env.id.startswith("NoetherControl/") and config.policy["kind"] == policy
    assert config.dataset.root is None and config.dataset.overwrite is False


def test_mistyped_override_names_the_key() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("collect", overrides=["episodes=many"])
    with pytest.raises(ValueError, match="episodes"):
        to_dataclass(CollectConfig, cfg)


def test_dataset_matches_the_true_dynamics(collected: dict) -> None:
    import minari

    assert collected["episodes"] == 5 and collected["steps"] == 50
    path = Path(collected["path"])
    assert collected["dataset_id"] == "noether-control/pixel-pendulum-random/ou-v0"
    assert path.parts[-3:] == ("noether-control", "pixel-pendulum-random", "ou-v0")
    metadata = json.loads((path / "data" / "metadata.json").read_text())
    spec = json.loads(metadata["env_spec"])
    assert spec["id"] == "NoetherControl/PixelPendulumRandom-v0"
    assert spec["kwargs"]["obs_type"] == "pixels_state"
    assert metadata["noether_control"]["seed"] == 7
    dataset = minari.MinariDataset(path / "data")
    returns = []
    gravities = []
    for episode in dataset.iterate_episodes():
        states, actions, infos = episode.infos["state"], episode.actions, episode.infos
        assert episode.observations["pixels"].shape == (11, 64, 64, 3)
        assert episode.observations["pixels"].dtype == np.uint8
        assert actions.shape == (10, 1) and np.all(np.abs(actions) <= 2.0)
        assert episode.truncations.tolist() == [False] * 9 + [True]
        assert not episode.terminations.any()
        # parameters are drawn per episode and constant within it
        for name in ("gravity", "mass", "length", "damping"):
            assert infos[name].shape == (11,) and np.all(infos[name] == infos[name][0])
        gravities.append(infos["gravity"][0])
        # action t acts on state t: replaying it through the dynamics gives state t + 1
        predicted = pendulum_step(
            states[:-1],
            actions,
            infos["gravity"][:-1],
            infos["mass"][:-1],
            infos["length"][:-1],
            infos["damping"][:-1],
            dt=0.05,
            max_speed=8.0,
            max_torque=2.0,
        )
        np.testing.assert_allclose(predicted, states[1:], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(
            episode.rewards, pendulum_reward(states[:-1], actions, max_torque=2.0), rtol=1e-6
        )
        # the energy column is the rod's mechanical energy of each state
        inertia = infos["mass"] * infos["length"] ** 2 / 3
        energy = 0.5 * inertia * states[:, 1] ** 2 + (
            infos["mass"] * infos["gravity"] * infos["length"] / 2 * np.cos(states[:, 0])
        )
        np.testing.assert_allclose(infos["energy"], energy, rtol=1e-9)
        returns.append(episode.rewards.sum())
    assert len(set(gravities)) == 5
    np.testing.assert_allclose(collected["mean_return"], np.mean(returns), rtol=1e-9)


def test_frames_show_the_recorded_state(collected: dict) -> None:
    import gymnasium as gym

    with h5py.File(Path(collected["path"]) / "data" / "main_data.hdf5", "r") as handle:
        episode = handle["episode_3"]
        pixels = episode["observations/pixels"][()]
        states = episode["infos/state"][()]
    env = gym.make("NoetherControl/PixelPendulum-v0", obs_type="pixels")
    np.testing.assert_array_equal(env.unwrapped.system.render_pixels(states), pixels)
    env.close()
    # and the pendulum moves from frame to frame
    assert np.abs(np.diff(pixels.astype(np.int16), axis=0)).sum(axis=(1, 2, 3)).min() > 0


def test_same_seed_same_dataset(collected: dict, tmp_path: Path) -> None:
    again = collect(small_config(tmp_path / "a"))
    first, second = hdf5_arrays(collected["path"]), hdf5_arrays(again["path"])
    assert first.keys() == second.keys()
    assert {"episode_4/observations/pixels", "episode_4/infos/energy"} <= first.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    other = hdf5_arrays(collect(small_config(tmp_path / "b", seed=8))["path"])
    assert not np.array_equal(first["episode_0/actions"], other["episode_0/actions"])
    assert not np.array_equal(first["episode_0/infos/state"], other["episode_0/infos/state"])


def test_existing_dataset_is_refused_before_collecting(collected: dict) -> None:
    root = Path(collected["path"]).parents[2]
    before = hdf5_arrays(collected["path"])
    with pytest.raises(DatasetExistsError, match="overwrite=true"):
        collect(small_config(root, seed=9))
    np.testing.assert_array_equal(
        hdf5_arrays(collected["path"])["episode_0/actions"], before["episode_0/actions"]
    )


def test_overwrite_replaces_the_dataset(tmp_path: Path) -> None:
    first = collect(small_config(tmp_path, episodes=2, num_envs=2))
    second = collect(
        small_config(tmp_path, episodes=3, seed=1, dataset=DatasetConfig(str(tmp_path), None, True))
    )
    assert first["path"] == second["path"]
    assert EpisodeWindows(second["path"], 10, "all").episode_ids.tolist() == [0, 1, 2]


class InterruptingPolicy:
    """Uniform actions until step ``stop``, then the user presses Ctrl-C."""

    def __init__(self, num_envs: int, stop: int) -> None:
        self.num_envs = num_envs
        self.stop = stop
        self.steps = 0

    def reset(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        pass

    def act(self, observation, rng: np.random.Generator) -> np.ndarray:
        self.steps += 1
        if self.steps > self.stop:
            raise KeyboardInterrupt
        return rng.uniform(-2.0, 2.0, (self.num_envs, 1)).astype(np.float32)


def test_interrupted_collection_leaves_no_dataset(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    # interrupted in the second round, after the first round was already written
    with pytest.raises(KeyboardInterrupt):
        collect(config, policy=InterruptingPolicy(3, stop=15))
    target = dataset_path("noether-control/pixel-pendulum-random/ou-v0", tmp_path)
    assert not target.exists()
    assert [p for p in target.parent.iterdir() if not p.name.startswith(".")] == []
    assert list(target.parent.iterdir()) == []  # the staging directory is cleaned up too


def test_full_length_episodes_end_at_the_env_time_limit(tmp_path: Path) -> None:
    summary = collect(
        small_config(
            tmp_path,
            episodes=2,
            num_envs=2,
            episode_steps=None,
            env=EnvConfig("pixel-double-pendulum", "NoetherControl/PixelDoublePendulum-v0"),
            policy={"kind": "uniform"},
        )
    )
    windows = EpisodeWindows(summary["path"], 200, "all")
    assert windows.episode_lengths.tolist() == [200, 200]
    assert windows.state_dim == 4 and windows.action_dim == 1
    arrays = hdf5_arrays(summary["path"])
    assert arrays["episode_1/truncations"][-1] and arrays["episode_1/truncations"].sum() == 1


def test_bad_collect_configs_raise_clear_errors(tmp_path: Path) -> None:
    for steps in (0, -3):
        # the env has a time limit: the message gives it rather than claiming there is none
        with pytest.raises(ValueError, match=rf"episode_steps: expected a positive int \(or "
                                             rf"null: the env's time limit, 200\), got {steps}"):
            collect(small_config(tmp_path, episode_steps=steps))
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*32\), got -1"):
        collect(small_config(tmp_path, seed=-1))
    with pytest.raises(ValueError, match="at most the env's time limit 200"):
        collect(small_config(tmp_path, episode_steps=500))
    with pytest.raises(ValueError, match="episodes: expected a positive int"):
        collect(small_config(tmp_path, episodes=0))
    with pytest.raises(ValueError, match=r"env\.id: expected a registered"):
        collect(small_config(tmp_path, env=EnvConfig("x", "NoetherControl/Nope-v0")))
    with pytest.raises(ValueError, match="dataset id: expected"):
        collect(small_config(tmp_path, dataset=DatasetConfig(str(tmp_path), "no version")))


def test_sb3_agent_trained_on_states_collects_pixels_and_states(tmp_path: Path) -> None:
    import gymnasium as gym
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", gym.make("NoetherControl/PixelPendulum-v0", obs_type="state"), seed=0)
    agent.save(tmp_path / "agent.zip")
    summary = collect(
        small_config(
            tmp_path / "root",
            episodes=2,
            num_envs=2,
            episode_steps=6,
            env=EnvConfig(),
            policy={"kind": "sb3", "path": str(tmp_path / "agent.zip"), "device": "cpu"},
        )
    )
    arrays = hdf5_arrays(summary["path"])
    for episode in range(2):
        states = arrays[f"episode_{episode}/observations/state"]
        assert states.shape == (7, 3)  # Pendulum-v1's (cos θ, sin θ, θ̇) observation
        assert arrays[f"episode_{episode}/observations/pixels"].shape == (7, 64, 64, 3)
        expected, _ = agent.predict(states[:-1], deterministic=True)
        np.testing.assert_allclose(
            arrays[f"episode_{episode}/actions"], np.clip(expected, -2.0, 2.0), rtol=1e-6
        )
