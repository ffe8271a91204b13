"""The ``noether-control`` command line, run as a user would: in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from noether_control.cli import COMMANDS
from noether_control.data.windows import split_episodes
from noether_control.experiments.demo import DemoConfig, world_model_config
from noether_control.runtime import compose_command, to_dataclass
from noether_control.training.config import DataConfig, TrainCommandConfig


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "SDL_VIDEODRIVER": "dummy",
        # a stray default root must never be written by the smoke presets
        "MINARI_DATASETS_PATH": str(cwd / "minari-root"),
    }
    return subprocess.run(
        [sys.executable, "-m", "noether_control", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("collect", "train", "evaluate", "discover", "demo"):
        assert name in COMMANDS
        assert f"  {name}" in result.stdout
    script = Path(sys.executable).with_name("noether-control")
    if script.exists():
        installed = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert installed.returncode == 0 and installed.stdout == result.stdout


def test_command_help_lists_shared_groups_and_the_overridden_config(tmp_path: Path) -> None:
    result = run_cli("train", "--help", "experiment=smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  model: dcgan64, svg_lp, vgg\n" in result.stdout
    noether_groups = "default, fast_embedding, frames_context, frames_work, off, scale_free"
    assert f"  noether: {noether_groups}\n" in result.stdout
    assert "steps: 6\n" in result.stdout  # the smoke preset's, not the default's
    assert not (tmp_path / "outputs").exists()  # help runs nothing
    demo = run_cli("demo", "--help", "env@collect.env=pendulum_random", cwd=tmp_path)
    assert "  env@collect.env: double_pendulum, pendulum, pendulum_random\n" in demo.stdout
    assert "id: NoetherControl/PixelPendulumRandom-v0" in demo.stdout


def test_sigterm_mid_collect_leaves_no_half_written_dataset(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "noether_control", "collect", "experiment=smoke",
         "episodes=2000", "episode_steps=100", f"hydra.run.dir={out}"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    datasets = out / "datasets"
    deadline = time.monotonic() + 60
    while not list(datasets.rglob(".*-v0.*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the staging directory of the dataset exists
    assert process.poll() is None, "collect ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert [p for p in datasets.rglob("*") if p.is_file()] == []


def test_unknown_command_exits_2_with_a_message(tmp_path: Path) -> None:
    result = run_cli("colect", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown command 'colect'" in result.stderr
    assert "collect" in result.stderr


def test_collect_smoke_writes_results_and_dataset_in_the_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_cli("collect", "experiment=smoke", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 4 and results["steps"] == 4 * 24
    assert np.isfinite(results["mean_return"]) and results["seconds"] > 0
    dataset = Path(results["path"])
    assert dataset.is_relative_to(out)
    assert (dataset / "data" / "main_data.hdf5").is_file()
    assert str(out / "results.json") in result.stdout
    assert not (tmp_path / "minari-root").exists()
    # the same command again refuses to overwrite the dataset it made
    again = run_cli("collect", "experiment=smoke", f"hydra.run.dir={out}", cwd=tmp_path)
    assert again.returncode != 0
    assert "overwrite=true" in again.stderr


def test_demo_smoke_writes_the_gif(tmp_path: Path) -> None:
    import imageio.v3 as iio

    out = tmp_path / "demo"
    result = run_cli("demo", "experiment=smoke", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    gif = out / "pendulums.gif"
    assert str(gif) in result.stdout
    frames = iio.imread(gif, index=None)
    # smoke: 12 steps + the first frame; 3 env rows x 2 sub-env columns of 64 px + 1 px borders
    assert frames.shape[:3] == (13, 3 * 66, 2 * 66)
    assert frames.std() > 0  # the pendulums are drawn, not a blank canvas
    assert not np.array_equal(frames[0], frames[-1])  # and they move
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"collect", "windows", "gif", "world_model", "noether", "planning",
                            "seconds"}
    # the planning stage ran MPC through the trained model and random actions on the same seeds
    planning = results["planning"]
    assert len(planning["mpc"]["episode_returns"]) == len(planning["random"]["episode_returns"])
    assert planning["mpc"]["ms_per_action"] > 0 and Path(planning["mpc"]["gif"]).is_file()
    assert str(planning["mpc"]["gif"]) in result.stdout
    assert "| mpc | mppi | 2 |" in Path(planning["table"]).read_text()
    assert results["windows"]["train"]["frames_shape"] == [6, 3, 64, 64]
    world_model = results["world_model"]
    evaluation = json.loads(Path(world_model["results"]).read_text())
    assert len(evaluation["per_horizon"]["mse"]) == 4 and 1 <= evaluation["n_sequences"] <= 4
    assert world_model["mse"]["h1"] == evaluation["per_horizon"]["mse"][0]
    assert world_model["mse"]["h4"] == evaluation["per_horizon"]["mse"][3]  # the last horizon
    # the windows stage opened the split the world model trained and was evaluated on
    data = DataConfig(path="unused")
    split = split_episodes(results["collect"]["episodes"], data.split_fractions, data.split_seed)
    assert {name: results["windows"][name]["episodes"] for name in split} == {
        name: len(ids) for name, ids in split.items()}
    assert set(world_model["references"]) == {"last_frame", "mean_frame"}
    best = min(evaluation["references"][name]["mse"][0] for name in ("last_frame", "mean_frame"))
    assert world_model["best_reference_over_model"]["h1"] == pytest.approx(
        best / evaluation["per_horizon"]["mse"][0])
    # the smoke world model had a dynamics phase (2 steps after its 2 joint steps)
    trained = json.loads((Path(world_model["run_dir"]) / "results.json").read_text())
    assert (trained["steps"], trained["dynamics_steps"]) == (6, 2)  # train's smoke preset
    # the Noether stage continued the trained world model: its baseline is that checkpoint
    compared = json.loads(Path(results["noether"]["results"]).read_text())
    assert Path(compared["runs"]["baseline"]["checkpoint"]).resolve() == (
        Path(world_model["run_dir"]) / "checkpoints" / "last.pt").resolve()


def test_demo_frame_grid_puts_each_env_and_sub_env_in_its_cell() -> None:
    from noether_control.experiments.demo import frame_grid

    rows, steps, cols, size = 3, 4, 2, 5
    codes = np.arange(rows * steps * cols, dtype=np.uint8).reshape(rows, steps, cols)
    frames = np.broadcast_to(codes[..., None, None, None], (rows, steps, cols, size, size, 3))
    grid = frame_grid(np.ascontiguousarray(frames), scale=2, border=1)
    cell = (size + 2) * 2
    assert grid.shape == (steps, rows * cell, cols * cell, 3)
    for row in range(rows):
        for col in range(cols):
            top, left = row * cell + 2, col * cell + 2
            inside = grid[:, top : top + cell - 4, left : left + cell - 4]
            assert np.all(inside == codes[row, :, col, None, None, None])
            assert np.all(grid[:, row * cell, col * cell] == 160)  # the grey border


def test_demo_checks_every_stage_before_the_first(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "experiment=smoke", "world_model.overrides=['train.steps=-1']",
                     f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode != 0
    assert "world_model stage: train.steps: expected ≥ 1, got -1" in result.stderr
    assert "[1/6]" not in result.stdout and not (out / "datasets").exists()  # nothing ran
    result = run_cli("demo", "experiment=smoke", "planning.episodes=0", f"hydra.run.dir={out}",
                     cwd=tmp_path)
    assert result.returncode != 0 and "planning stage: episodes: expected an int >= 1, got 0" \
        in result.stderr


def test_demo_trains_exactly_the_train_commands_demo_preset() -> None:
    demo = to_dataclass(DemoConfig, compose_command("demo", ["collect.dataset.root=ROOT"]))
    trained = world_model_config(demo, "DATASET")
    preset = to_dataclass(TrainCommandConfig, compose_command(
        "train", ["experiment=demo", "data.path=DATASET", f"seed={demo.seed}"]))
    assert trained == preset
    assert (trained.train.steps, trained.data.n_past, trained.train.dynamics_steps) == \
        (700, 4, 3000)
    # overrides of the stage reach the trained config, and nothing else differs
    longer = replace(demo, world_model=replace(demo.world_model, overrides=["train.steps=900"]))
    changed = world_model_config(longer, "DATASET")
    assert changed.train.steps == 900 and replace(changed.train, steps=700) == preset.train
