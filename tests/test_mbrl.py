"""``noether-control mbrl``: the model-based loop end to end, and resuming a killed loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from noether_control.agents.mbrl import MBRLConfig, model_based_loop
from noether_control.data.minari_io import read_episodes
from noether_control.runtime import compose_command, to_dataclass

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_mbrl(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "noether_control", "mbrl", "experiment=smoke",
                           *overrides, f"hydra.run.dir={out}"], cwd=out.parent, env=ENV,
                          capture_output=True, text=True, timeout=600, check=False)


def episodes(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(e.actions), np.asarray(e.rewards)) for e in read_episodes(path)]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mbrl") / "run"
    done = run_mbrl(out, "exploration_correlation=0.5", "refit_reward=true")
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_loop_grows_the_data_continues_the_model_and_evaluates(loop: Path) -> None:
    document = json.loads((loop / "results.json").read_text())
    rows = document["iterations"]
    # 4 OU episodes of 20 steps, then 2 MPC episodes on top: nothing overwritten
    assert [row["real_env_steps"] for row in rows] == [80, 120]
    assert [row["episodes"] for row in rows] == [4, 6]
    first = episodes(loop / "datasets/noether-control/mbrl/iter0-v0")
    grown = episodes(loop / "datasets/noether-control/mbrl/iter1-v0")
    assert len(first) == 4 and len(grown) == 6
    for (a, r), (b, s) in zip(first, grown[:4], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(r, s)
    # the second model continued the first (its step count goes on from it)
    trained = json.loads((loop / "iter1/train/results.json").read_text())
    assert trained["steps"] == 8
    assert "continuing" in (loop / "iter1/train/stage.log").read_text()
    # the MPC agent collected with the loop's correlated noise
    policy = OmegaConf.load(loop / "iter1/collect/.hydra/config.yaml").policy
    assert (policy.exploration_std, policy.exploration_correlation) == (0.3, 0.5)
    evaluation = json.loads((loop / "iter1/plan/results.json").read_text())
    assert evaluation["seeds"] == [1000, 1001] and evaluation["real_env_steps"] == 120
    assert (loop / "progress.csv").read_text().count("\n") == 3


def test_with_refit_reward_the_agents_read_the_refit_and_the_model_continues_the_trained(
        loop: Path) -> None:
    for iteration in (0, 1):
        refit = json.loads((loop / f"iter{iteration}/refit/results.json").read_text())
        assert refit["checkpoint"] == str(loop / f"iter{iteration}/train/checkpoints/last.pt")
        assert refit["config"]["reward_output"] == "root_cost"
        evaluation = json.loads((loop / f"iter{iteration}/plan/results.json").read_text())
        assert evaluation["checkpoint"] == str(loop / f"iter{iteration}/refit/checkpoints/last.pt")
    policy = OmegaConf.load(loop / "iter1/collect/.hydra/config.yaml").policy
    assert policy.checkpoint == str(loop / "iter0/refit")
    train = OmegaConf.load(loop / "iter1/train/.hydra/config.yaml").train
    assert train.init_from == str(loop / "iter0/train/checkpoints/last.pt")
    rows = json.loads((loop / "results.json").read_text())["iterations"]
    assert [row["model"] for row in rows] == [str(loop / "iter0/refit"), str(loop / "iter1/refit")]
    assert (loop / "progress.png").stat().st_size > 0


def test_a_loop_killed_while_collecting_resumes_to_the_same_dataset(loop: Path,
                                                                    tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(loop, killed)
    # as if killed during iteration 1's collection: its dataset (written atomically) and every
    # later stage never happened
    for stale in ("iter1/collect", "iter1/train", "iter1/refit", "iter1/plan",
                  "datasets/noether-control/mbrl/iter1-v0"):
        shutil.rmtree(killed / stale)
    for stale in ("results.json", "progress.csv", "progress.png"):
        (killed / stale).unlink()
    done = run_mbrl(killed, "exploration_correlation=0.5", "refit_reward=true")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "iter0/collect" not in done.stdout  # finished stages are not redone
    for (a, r), (b, s) in zip(episodes(loop / "datasets/noether-control/mbrl/iter1-v0"),
                              episodes(killed / "datasets/noether-control/mbrl/iter1-v0"),
                              strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(r, s)
    before = json.loads((loop / "results.json").read_text())["iterations"]
    after = json.loads((killed / "results.json").read_text())["iterations"]
    assert [row["mean_return"] for row in after] == [row["mean_return"] for row in before]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"episodes: expected an int >= 1, got 0"):
        model_based_loop(MBRLConfig(episodes=0), tmp_path)
    with pytest.raises(ValueError, match=r"train_overrides: expected key=value overrides"):
        model_based_loop(MBRLConfig(train_overrides=["hydra.run.dir=x"]), tmp_path)
    with pytest.raises(ValueError, match=r"iterations: expected an int >= 0"):
        model_based_loop(MBRLConfig(iterations=-1), tmp_path)
    with pytest.raises(ValueError, match=r"agent: expected one of \('mpc', 'sac'\), got 'ppo'"):
        model_based_loop(MBRLConfig(agent="ppo"), tmp_path)
    with pytest.raises(ValueError, match=r"exploration_correlation: expected a number in"):
        model_based_loop(MBRLConfig(exploration_correlation=1.0), tmp_path)
    with pytest.raises(ValueError, match=r"correlated noise is for agent=mpc, got 0.9 with "
                                         r"agent=sac"):
        model_based_loop(MBRLConfig(agent="sac", exploration_correlation=0.9), tmp_path)


def test_the_sac_loop_trains_in_each_model_and_collects_with_that_policy(tmp_path: Path) -> None:
    out = tmp_path / "sac"
    done = run_mbrl(out, "agent=sac")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((out / "results.json").read_text())["iterations"]
    assert [row["real_env_steps"] for row in rows] == [80, 120]
    for iteration, real_steps in ((0, 80), (1, 120)):
        trained = json.loads((out / f"iter{iteration}/rl/results.json").read_text())
        # SAC trained in this iteration's model and evaluated on the seeded real episodes
        assert trained["checkpoint"].startswith(str(out / f"iter{iteration}/train"))
        assert trained["real_env_steps"] == real_steps and trained["seeds"] == [1000, 1001]
        assert trained["mean_return"] == rows[iteration]["mean_return"]
    assert not (out / "iter0/plan").exists()
    # the second collection acted with the first SAC policy on its model's latent state
    assert json.loads((out / "iter1/collect/results.json").read_text())["policy"] == "sb3"
    policy = OmegaConf.load(out / "iter1/collect/.hydra/config.yaml").policy
    assert policy.path == str(out / "iter0/rl/policy.zip")
    assert policy.checkpoint == str(out / "iter0/train")
    assert policy.exploration_std == 0.3
    grown = episodes(out / "datasets/noether-control/mbrl/iter1-v0")
    assert len(grown) == 6


def test_a_guided_loop_learns_sac_from_its_real_steps_and_plans_with_it(tmp_path: Path) -> None:
    out = tmp_path / "guided"
    done = run_mbrl(out, "guide_steps=64", "guide_value_weight=0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((out / "results.json").read_text())["iterations"]
    for iteration, real_steps in ((0, 80), (1, 120)):
        guide = json.loads((out / f"iter{iteration}/guide/results.json").read_text())
        # SAC learned from every real transition behind this iteration's model, alone
        assert guide["experience"] == "real" and guide["gradient_steps"] == 64
        assert guide["checkpoint"].startswith(str(out / f"iter{iteration}/train"))
        assert guide["real_env_steps"] == real_steps
        assert rows[iteration]["guide_return"] == guide["mean_return"]
        # and it guided this iteration's MPC evaluation
        agent = OmegaConf.load(out / f"iter{iteration}/plan/.hydra/config.yaml").agent
        assert agent.guide_path == str(out / f"iter{iteration}/guide/policy.zip")
        assert agent.guide_value_weight == 0.5
    # the next collection planned with the previous iteration's guide
    policy = OmegaConf.load(out / "iter1/collect/.hydra/config.yaml").policy
    assert policy.guide_path == str(out / "iter0/guide/policy.zip")
    with pytest.raises(ValueError, match=r"guide_steps: a guide steers MPC, got 64 with "
                                         r"agent=sac"):
        model_based_loop(MBRLConfig(agent="sac", guide_steps=64), tmp_path)


def test_the_20k_preset_spends_20000_real_steps() -> None:
    config = to_dataclass(MBRLConfig, compose_command("mbrl", ["experiment=pendulum_20k"]))
    config.validate()
    episodes = config.initial_episodes + config.iterations * config.episodes
    assert episodes * 200 == 20_000  # PixelPendulum-v0's 200-step episodes
    assert config.train_steps * (config.iterations + 1) == 9900  # the last model's joint steps
    # its models read the frame's code in the reward head (the better planner of the two heads)
    train = compose_command("train", list(config.train_overrides))
    assert train.model.reward_input == "hidden_code"
    # its MPC collections push with correlated noise (the models learn that upright is unstable)
    assert (config.exploration_std, config.exploration_correlation) == (0.3, 0.9)


def test_env_and_planner_presets_are_set_on_the_command_line() -> None:
    # they name presets handed to the stages, not config groups of the loop's own config
    config = to_dataclass(MBRLConfig, compose_command("mbrl", ["env=pendulum_random",
                                                               "planner=cem"]))
    config.validate()
    assert (config.env, config.planner) == ("pendulum_random", "cem")
