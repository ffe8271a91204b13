"""``noether-control plan`` and ``plan_table``, collecting on top of a base dataset, and the
reward head's evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
from support import PENDULUM_32, SIZE, collect_ou, tiny_checkpoint

from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.agents.plan import AgentConfig, PlanConfig, plan_episodes
from noether_control.agents.plan_table import (
    learning_curves,
    merge_plan_results,
    paired_difference,
    read_agent_results,
    read_plan_results,
    table_rows,
)
from noether_control.data.env_config import EnvConfig
from noether_control.data.minari_io import dataset_metadata
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import EvaluateConfig, evaluate_checkpoint

P = 2
ENV = PENDULUM_32


def small_collect(root: Path, episodes: int = 6, **dataset: object) -> dict:
    return collect_ou(root, episodes, 3, 20, **dataset)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return small_collect(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def checkpoint(dataset: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "checkpoints" / "last.pt",
                           dataset["path"], P, (0.6, 0.2, 0.2))


def plan_config(checkpoint: Path | None, **changes: object) -> PlanConfig:
    agent = AgentConfig(kind="mpc" if checkpoint else "random")
    base = dict(env=ENV, agent=agent, planner={"kind": "mppi", "samples": 8, "horizon": 4},
                checkpoint=str(checkpoint) if checkpoint else None, episodes=3, num_envs=2,
                device="cpu", record=2, progress=False)
    base.update(changes)
    return PlanConfig(**base)  # type: ignore[arg-type]


def test_plan_through_a_checkpoint_writes_results_and_the_gif(checkpoint: Path,
                                                              tmp_path: Path) -> None:
    document = plan_episodes(plan_config(checkpoint), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == document
    assert len(document["episode_returns"]) == 3 and document["seeds"] == [0, 1, 2]
    assert document["mean_return"] == pytest.approx(np.mean(document["episode_returns"]))
    assert document["real_env_steps"] == 6 * 20
    assert document["planner"]["kind"] == "mppi" and document["agent"]["kind"] == "mpc"
    assert document["ms_per_action"] > 0 and document["checkpoint"] == str(checkpoint)
    gif = iio.imread(tmp_path / "episodes.gif", index=None)
    # 200 steps; 2 recorded episodes as rows; the real frame and the model's frame 1 step ahead
    assert gif.shape[:3] == (200, 2 * (SIZE + 2) * 2, 2 * (SIZE + 2) * 2)
    # the same seed gives the same episodes
    again = plan_episodes(plan_config(checkpoint, record=0), tmp_path / "again")
    assert again["episode_returns"] == document["episode_returns"]


def test_plan_refuses_what_the_model_cannot_act_in(checkpoint: Path, tmp_path: Path) -> None:
    big = EnvConfig(name="pixel-pendulum", id=ENV.id, kwargs={"image_size": 64})
    with pytest.raises(ValueError, match=r"env.kwargs.image_size=32"):
        plan_episodes(plan_config(checkpoint, env=big), tmp_path)
    with pytest.raises(ValueError, match="expected checkpoint=PATH"):
        plan_episodes(plan_config(None, agent=AgentConfig(kind="mpc")), tmp_path)
    with pytest.raises(ValueError, match="baseline checkpoint"):
        plan_episodes(plan_config(checkpoint, agent=AgentConfig(tailor="once_per_step")),
                      tmp_path)
    with pytest.raises(ValueError, match=r"agent.kind"):
        plan_episodes(plan_config(None, agent=AgentConfig(kind="planner")), tmp_path)
    with pytest.raises(ValueError, match=r"correlated noise is for the mpc and oracle agents, "
                                         r"got agent.kind='random'"):
        plan_episodes(plan_config(None, agent=AgentConfig(kind="random",
                                                          exploration_correlation=0.9)), tmp_path)
    with pytest.raises(ValueError, match=r"planner.elites"):
        plan_episodes(plan_config(checkpoint, planner={"kind": "cem", "samples": 4,
                                                       "elites": 8}), tmp_path)
    other = EnvConfig(name="random", id="NoetherControl/PixelPendulumRandom-v0",
                      kwargs={"image_size": SIZE})
    with pytest.warns(UserWarning, match="trained on 'NoetherControl/PixelPendulum-v0'"):
        plan_episodes(plan_config(checkpoint, env=other, episodes=1, record=0), tmp_path)


def test_paired_differences_match_a_hand_computation() -> None:
    runs = {
        "random": {"seeds": [0, 1, 2], "episode_returns": [-10.0, -20.0, -30.0]},
        "mpc": {"seeds": [2, 1, 0], "episode_returns": [-5.0, -12.0, -4.0], "ms_per_action": 3},
        "elsewhere": {"seeds": [7, 8], "episode_returns": [-1.0, -2.0]},
    }
    rows = {row["agent"]: row for row in table_rows(runs, "random")}
    differences = np.array([6.0, 8.0, 25.0])
    assert rows["mpc"]["difference"]["mean"] == pytest.approx(differences.mean())
    assert rows["mpc"]["difference"]["stderr"] == pytest.approx(differences.std(ddof=1) / 3**0.5)
    assert rows["mpc"]["difference"]["low"] < differences.mean() < rows["mpc"]["difference"][
        "high"]
    assert rows["mpc"]["difference"]["median"] == 8.0 and rows["mpc"]["difference"]["better"] == 3
    assert rows["elsewhere"]["difference"] is None and rows["random"]["difference"] is None
    assert paired_difference(np.array([1.0]), np.array([0.0]))["low"] is None
    assert paired_difference(np.array([1.0, -3.0]), np.array([0.0, 0.0]))["better"] == 1


def test_runs_of_one_agent_on_other_seeds_join_into_one_row() -> None:
    agent = {"kind": "mpc"}
    first = {"seeds": [0, 1], "episode_returns": [-10.0, -20.0], "agent": agent,
             "ms_per_action": 4.0, "mean_return": -15.0}
    second = {"seeds": [2, 3, 4], "episode_returns": [-30.0, -40.0, -50.0], "agent": agent,
              "ms_per_action": 9.0, "mean_return": -40.0}
    joined = merge_plan_results([first, second], "mpc")
    assert joined["seeds"] == [0, 1, 2, 3, 4] and joined["episodes"] == 5
    assert joined["mean_return"] == pytest.approx(-30.0)
    assert joined["stderr_return"] == pytest.approx(np.std([10, 20, 30, 40, 50], ddof=1) / 5**0.5)
    assert joined["ms_per_action"] == pytest.approx((2 * 4.0 + 3 * 9.0) / 5)
    reference = {"seeds": [4, 3, 2, 1, 0], "episode_returns": [-45.0, -45.0, -35.0, -15.0, -5.0]}
    row = table_rows({"reference": reference, "mpc": joined}, "reference")[1]
    assert row["paired_episodes"] == 5
    assert row["difference"]["mean"] == pytest.approx(np.mean([-5.0, 5.0, 5.0, -5.0, -5.0]))
    with pytest.raises(ValueError, match=r"runs\.mpc: expected runs on different episode seeds, "
                                         r"got seeds \[1\]"):
        merge_plan_results([first, {**second, "seeds": [1, 5, 6]}], "mpc")
    with pytest.raises(ValueError, match=r"runs\.mpc: expected runs of one agent, got agent"):
        merge_plan_results([first, {**second, "agent": {"kind": "oracle"}}], "mpc")
    with pytest.raises(ValueError, match=r"runs\.mpc: expected a plan run directory or a list"):
        read_agent_results("mpc", [])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy"}
    return subprocess.run([sys.executable, "-m", "noether_control", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240, check=False)


def test_plan_and_plan_table_smoke_from_the_command_line(tmp_path: Path) -> None:
    smoke = tmp_path / "runs" / "plan-smoke"
    result = run_cli("plan", "experiment=smoke", f"hydra.run.dir={smoke}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    document = read_plan_results(smoke)
    assert document["agent"]["kind"] == "oracle" and len(document["episode_returns"]) == 2
    assert (smoke / "episodes.gif").is_file()
    table = tmp_path / "table"
    result = run_cli("plan_table", "experiment=smoke", "+runs.again=runs/plan-smoke",
                     f"hydra.run.dir={table}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (table / "table.md").read_text()
    assert "| smoke | cem | 2 |" in markdown and "+0.0 [" in markdown
    assert (table / "table.csv").read_text().count("\n") == 3
    assert iio.imread(table / "returns.png").ndim == 3
    twice = run_cli("plan_table", "+runs.twice=[runs/plan-smoke,runs/plan-smoke]",
                    f"hydra.run.dir={tmp_path / 'twice'}", cwd=tmp_path)
    assert twice.returncode != 0 and "expected runs on different episode seeds" in twice.stderr
    bad = run_cli("plan", "agent=cem", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode != 0 and "expected checkpoint=PATH" in bad.stderr


def test_collect_on_a_base_dataset_copies_it_first(dataset: dict, tmp_path: Path) -> None:
    grown = small_collect(tmp_path, episodes=3, id="noether-control/pixel-pendulum/grown-v0",
                          base=dataset["path"])
    assert (grown["episodes"], grown["base_episodes"]) == (3, 6)
    assert (grown["steps"], grown["total_steps"]) == (60, 180)
    assert dataset_metadata(grown["path"])["total_steps"] == 180
    assert dataset_metadata(dataset["path"])["total_steps"] == 120  # the base is untouched
    with h5py.File(Path(dataset["path"]) / "data" / "main_data.hdf5") as old, h5py.File(
            Path(grown["path"]) / "data" / "main_data.hdf5") as new:
        for name in ("observations/pixels", "actions", "rewards", "infos/state"):
            np.testing.assert_array_equal(old[f"episode_5/{name}"][()],
                                          new[f"episode_5/{name}"][()])
        assert new["episode_8/actions"].shape == (20, 1)
    random_env = EnvConfig(name="random", id="NoetherControl/PixelPendulumRandom-v0",
                           kwargs={"image_size": SIZE})
    config = CollectConfig(episodes=1, num_envs=1, episode_steps=5, progress=False,
                           env=random_env, dataset=DatasetConfig(root=str(tmp_path),
                                                                 base=dataset["path"]))
    with pytest.raises(ValueError, match=r"dataset.base: expected a dataset of"):
        collect(config)


def test_evaluate_reports_the_reward_heads_error(checkpoint: Path, tmp_path: Path) -> None:
    config = EvaluateConfig(checkpoint=str(checkpoint), horizon=3, device="cpu", lpips=False,
                            gif_sequences=0)
    document = evaluate_checkpoint(config, tmp_path)
    reward = document["reward"]
    assert len(reward["model"]["mse"]) == 3 and len(reward["mean_reward"]["mse"]) == 3
    # the reference predicts the training mean: its error is the test rewards' spread about it
    assert all(value > 0 for value in reward["mean_reward"]["mse"])
    assert reward["mean_reward"]["mse"] != reward["model"]["mse"]
    assert reward["mean_reward"]["mse_stderr"] is not None
    # aligned with the actions a planner scores: reward k is that of the action at frame P-1+k
    split = {"split_fractions": (0.6, 0.2, 0.2), "seed": 0}
    train = EpisodeWindows(document["data"], 1, "train", **split)
    mean = np.concatenate([train.columns(int(e))["rewards"] for e in train.episode_ids]).astype(
        np.float64).mean()
    test = EpisodeWindows(document["data"], P + 3, "test", stride=P + 3, **split)
    rewards = np.stack([test[i]["rewards"].numpy() for i in range(len(test))]).astype(np.float64)
    expected = ((rewards[:, P - 1 : P + 2] - mean) ** 2).mean(axis=0)
    np.testing.assert_allclose(reward["mean_reward"]["mse"], expected, rtol=1e-6)
    assert reward["training_mean_reward"] == pytest.approx(mean)


def test_learning_curves_join_runs_by_name_and_sort_by_real_steps() -> None:
    runs = {
        "loop_14000": {"seeds": [0, 1], "episode_returns": [-10.0, -20.0],
                       "real_env_steps": 14000},
        "loop": {"seeds": [0, 1], "episode_returns": [-4.0, -6.0], "real_env_steps": 20000},
        "loop_8000": {"seeds": [0, 1], "episode_returns": [-30.0, -50.0], "real_env_steps": 8000},
        "sac_pixels": {"seeds": [0, 1], "episode_returns": [-1.0, -3.0], "real_env_steps": 20000},
        "oracle": {"seeds": [0, 1], "episode_returns": [-2.0, -2.0]},
    }
    curves = learning_curves(table_rows(runs, "oracle"))
    assert list(curves) == ["loop", "sac_pixels"]
    assert [(steps, mean) for steps, mean, _ in curves["loop"]] == [
        (8000, -40.0), (14000, -15.0), (20000, -5.0)]
    assert curves["loop"][0][2] == pytest.approx(10.0)  # std 14.14 / sqrt(2)
