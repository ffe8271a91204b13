"""Bad inputs a user can give, per command: each ends with a non-zero exit and one line that
names the setting at fault (no traceback), and the checks behind those lines.

The command line runs in-process (``noether_control.cli.main``), as ``python -m
noether_control`` would run it, so that the whole table takes seconds rather than a Python and
torch start-up per case.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

import noether_control.envs  # noqa: F401 (registers the envs)
from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.cli import main
from noether_control.data.env_config import EnvConfig
from noether_control.data.minari_io import DatasetError
from noether_control.data.windows import EpisodeWindows
from noether_control.discovery.discover import DiscoverConfig, SearchConfig, discover
from noether_control.evaluation.evaluate import check_compatible, warn_other_env
from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.runtime import (
    UnwritablePathError,
    atomic_torch_save,
    require_at_least,
    require_choice,
    write_json,
)
from noether_control.training.config import TrainCommandConfig
from tests.support import PENDULUM_32, SIZE, collect_ou

DOUBLE_32 = EnvConfig(name="pixel-double-pendulum", id="NoetherControl/PixelDoublePendulum-v0",
                      kwargs={"image_size": SIZE})


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pendulum and a double-pendulum dataset, a pendulum checkpoint, data files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    single = Path(collect_ou(root / "single", episodes=4, num_envs=4, episode_steps=24)["path"])
    double = Path(collect(CollectConfig(
        episodes=4, num_envs=4, episode_steps=24, progress=False, env=DOUBLE_32,
        policy={"kind": "ou"},  # type: ignore[arg-type]
        dataset=DatasetConfig(root=str(root / "double"))))["path"])
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, action_embed_dim=2, state_dim=2))
    config = {"data": {"path": str(single), "n_past": 2, "n_future": 3,
                       "split_fractions": [0.5, 0.25, 0.25], "split_seed": 0}}
    checkpoint = save_checkpoint(root / "single.pt", model=model, optimizer=None, step=0,
                                 config=config, rng={})
    binary = root / "binary.dat"
    binary.write_bytes(bytes(range(256)) * 8)
    measured = root / "measured.csv"
    constant = root / "constant.csv"
    rows, still = ["trial,t,q,p"], ["trial,t,q,p"]
    for trial in range(4):
        for step in range(20):
            time = step * 0.1
            rows.append(f"{trial},{time:.2f},{math.cos(time + trial):.6f},"
                        f"{-math.sin(time + trial):.6f}")
            still.append(f"{trial},{time:.2f},0.5,0.0")
    measured.write_text("\n".join(rows) + "\n")
    constant.write_text("\n".join(still) + "\n")
    return {"single": single, "double": double, "checkpoint": checkpoint, "binary": binary,
            "measured": measured, "constant": constant, "root": root}


@pytest.fixture(autouse=True)
def keep_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``main`` installs its SIGINT/SIGTERM handlers and sets ``sys.argv``: undo both."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    # `--debug` sets it in this process: setenv makes the teardown restore the original
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    yield
    for number, handler in handlers.items():
        signal.signal(number, handler)


def run_cli(args: list[str], run_dir: Path, capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, str]:
    """``noether-control ARGS hydra.run.dir=RUN_DIR`` in-process: (exit status, stderr)."""
    try:
        main([*args, f"hydra.run.dir={run_dir}"])
        status = 0
    except SystemExit as exit_info:
        status = 1 if exit_info.code is None else int(exit_info.code)
    return status, capsys.readouterr().err


#: (command line with {placeholders} from the `data` fixture, words the one line must hold)
CASES: list[tuple[str, str]] = [
    ("collect experiment=smoke seed=-1", "seed: expected an int in [0, 2**32)"),
    ("collect experiment=smoke episodes=0", "episodes: expected"),
    ("collect experiment=smoke num_envs=0", "num_envs: expected"),
    ("collect experiment=smoke episode_steps=0", "episode_steps"),
    ("collect experiment=smoke +env.kwargs.mass=1 +env.kwargs.mass_range=[0.5,2]", "mass"),
    ("train experiment=smoke", "data.path"),
    ("train experiment=smoke data.path={single} train.lr=nan", "train.lr: expected a finite"),
    ("train experiment=smoke data.path={single} train.lr=-1", "train.lr: expected > 0"),
    ("train experiment=smoke data.path={single} train.steps=0", "train.steps: expected"),
    ("train experiment=smoke data.path={single} data.n_past=0", "data.n_past"),
    ("train experiment=smoke data.path={single} seed=-1", "seed: expected"),
    ("train experiment=smoke data.path={single} device=tpu", "device: expected"),
    ("train experiment=smoke data.path={root}/nowhere", "nowhere"),
    ("evaluate experiment=smoke checkpoint={root}/nowhere.pt", "nowhere.pt"),
    ("evaluate experiment=smoke checkpoint={checkpoint} horizon=0", "horizon"),
    ("evaluate experiment=smoke checkpoint={binary}",
     "binary.dat' is corrupt or not a torch file (Unsupported operand 0); expected a file"),
    ("evaluate experiment=smoke checkpoint={checkpoint} data_path={double}",
     "state dimension (another system): the model expects 2, the data has 4"),
    ("compare experiment=smoke", "runs"),
    ("compare experiment=smoke +runs.baseline={root}/nowhere.pt +runs.noether={checkpoint}",
     "nowhere.pt"),
    ("plan agent=random episodes=0", "episodes"),
    ("plan agent=random env.kwargs.image_size=0", "image_size"),
    ("plan agent=cem", "checkpoint"),
    ("rl", "checkpoint"),
    ("rl checkpoint={checkpoint} algo=dqn", "algo"),
    ("mbrl iterations=-1", "iterations"),
    ("mbrl train_overrides=[nokey]", "train_overrides"),
    ("discover experiment=smoke top_formulas=0", "top_formulas: expected >= 1"),
    ("discover experiment=smoke threads=0", "threads: expected >= 1"),
    ("discover experiment=smoke search.fit_lr=nan", "search.fit_lr: expected finite"),
    ("discover experiment=smoke search.fit_lr=0", "search.fit_lr: expected a learning rate"),
    ("discover experiment=smoke test_fraction=1", "test_fraction: expected a fraction in (0, 1)"),
    ("discover experiment=smoke test_fraction=0", "test_fraction: expected a fraction in (0, 1)"),
    ("discover experiment=smoke test_fraction=-0.5", "test_fraction: expected a fraction"),
    ("discover experiment=smoke data.path={binary} data.units={{q:rad}}",
     "data.path: expected a UTF-8 text file"),
    ("discover experiment=smoke data.path={measured} data.trajectory=trial "
     "data.units={{q:rad,p:rad/s,x:m}}", "data.units: column(s) ['x'] are not in"),
    ("discover experiment=smoke data.path={constant} data.trajectory=trial "
     "data.units={{q:rad,p:rad/s}}", "every state column (q, p) has one value"),
    ("demo world_model.overrides=['train.steps=-1']",
     "world_model stage: train.steps: expected ≥ 1, got -1"),
]


@pytest.mark.parametrize(("command", "expected"), CASES, ids=[c for c, _ in CASES])
def test_a_bad_input_is_one_line_naming_the_setting(
        command: str, expected: str, data: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    args = command.format(**{key: str(value) for key, value in data.items()}).split()
    status, stderr = run_cli(args, tmp_path / "run", capsys)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status != 0, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"noether-control {args[0]}: "), stderr
    assert expected in lines[0], stderr


def test_debug_shows_the_traceback(data: dict[str, Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--debug", "experiment=smoke", f"data.path={data['single']}",
            "train.lr=nan"]
    with pytest.raises(ValueError, match=r"train\.lr: expected a finite number, got nan"):
        main([*args, f"hydra.run.dir={tmp_path / 'run'}"])


def test_the_installed_command_prints_one_line_or_with_debug_the_traceback(
        tmp_path: Path) -> None:
    """The table above, once as a user runs it: a separate ``python -m noether_control``."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "noether_control", "collect", "experiment=smoke", "seed=-1",
               f"hydra.run.dir={tmp_path / 'run'}"]
    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                           check=False)
    assert plain.returncode == 1
    assert plain.stderr == ("noether-control collect: seed: expected an int in [0, 2**32), "
                            "got -1\n")
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True,
                           text=True, env=env, timeout=120, check=False)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith("ValueError: seed: expected an int in [0, 2**32), got -1")


def test_a_failed_mbrl_stage_shows_the_stages_own_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage is a child command: its output, already one line or a traceback, is the report."""
    import importlib

    mbrl = importlib.import_module("noether_control.agents.mbrl")
    stage_output = "noether-control train: train.lr: expected a finite number, got nan"

    def failing_stage(*_: object) -> None:
        raise mbrl.StageError(f"mbrl: stage X failed (exit 1); the end of its log:\n"
                              f"{stage_output}\n\nfix the cause and run the same command again")

    monkeypatch.setattr(mbrl, "model_based_loop", failing_stage)
    status, stderr = run_cli(["mbrl"], tmp_path / "run", capsys)
    assert status == 1
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr
    assert stderr.splitlines()[1] == stage_output


def test_an_unexpected_error_keeps_its_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError raised outside this package's checks (here: in a library NumPy) is input we
    failed to check, or a bug: it keeps the traceback that lets it be reported."""
    collect_module = sys.modules["noether_control.agents.collect"]

    def seeded_by_a_library(_: object) -> None:
        np.random.seed(-1)

    monkeypatch.setattr(collect_module, "collect", seeded_by_a_library)
    status, stderr = run_cli(["collect", "experiment=smoke"], tmp_path / "run", capsys)
    assert status != 0
    assert "Seed must be between 0 and 2**32 - 1" in stderr
    assert "Traceback" in stderr and "HYDRA_FULL_ERROR" in stderr, stderr


def test_a_foreign_checkpoint_names_the_cause_not_torchs_advice(data: dict[str, Path]) -> None:
    """torch's weights-only error suggests weights_only=False (running the file's code)."""
    from noether_control.models.checkpoint import read_checkpoint

    with pytest.raises(ValueError) as error:
        read_checkpoint(data["binary"])
    assert str(error.value) == (f"checkpoint {str(data['binary'])!r} is corrupt or not a torch "
                                "file (Unsupported operand 0); expected a file written by "
                                "`noether-control train`")


# --- Writes on a read-only or full disk -------------------------------------------------------

def test_a_checkpoint_under_a_file_names_the_path_and_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "checkpoints"
    blocker.write_text("not a folder")
    target = blocker / "last.pt"
    with pytest.raises(UnwritablePathError) as error:
        atomic_torch_save({"step": 1}, target)
    assert str(error.value) == (f"cannot write checkpoint to {str(target)!r}: a part of the "
                                "path is a file, not a folder; give a writable hydra.run.dir")


def test_a_full_disk_under_torch_save_is_named(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_: object, **__: object) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UnwritablePathError, match=r"cannot write checkpoint to '.*last\.pt': "
                       r"the write failed part-way \(\d+ MiB free: is the disk full\?\)"):
        atomic_torch_save({"step": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []  # nothing half-written stays behind


def test_a_full_disk_under_results_json_is_named(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(UnwritablePathError, match=r"cannot write results to '.*results\.json': "
                       "no space left on the device; free space on that disk or give another "
                       r"hydra\.run\.dir"):
        write_json(tmp_path / "results.json", {"a": 1})


def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the other tests fake the OS error")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UnwritablePathError, match="permission denied; give a writable"):
            write_json(folder / "results.json", {})
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("error_type", [OSError, RuntimeError])
def test_a_full_disk_under_a_dataset_names_dataset_root(
        error_type: type[Exception], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """h5py reports a full disk as an OSError while writing, a RuntimeError when closing."""
    import noether_control.data.minari_io as minari_io

    def full_disk(*_: object, **__: object) -> None:
        raise error_type("Can't write data (file write failed: errno = 28, error message = "
                         "'No space left on device')")

    monkeypatch.setattr(minari_io, "_create_frame_datasets", full_disk)
    with pytest.raises(UnwritablePathError, match=r"cannot write dataset to '.*ou-v0': no space "
                       r"left on the device; free space on that disk or give another "
                       r"dataset\.root"):
        collect_ou(tmp_path, episodes=2, num_envs=2, episode_steps=5)


def test_a_run_directory_under_a_file_is_one_line(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, stderr = run_cli(["collect", "experiment=smoke"], blocker / "run", capsys)
    assert status == 1
    assert stderr.strip() == (
        f"noether-control collect: cannot write the run's files to {str(blocker / 'run')!r}: "
        "a part of the path is a file, not a folder; give a writable hydra.run.dir")


def test_a_read_only_run_directory_is_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def read_only(*_: object, **__: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    status, stderr = run_cli(["collect", "experiment=smoke"], tmp_path, capsys)
    assert status == 1
    assert stderr == (f"noether-control collect: cannot write the run's files to "
                      f"{str(tmp_path)!r}: read-only file system; give a writable "
                      "hydra.run.dir\n")


# --- Raw library errors, now checked up front ----------------------------------------------

def test_train_refuses_nan_settings_before_training() -> None:
    config = TrainCommandConfig()
    config.train.lr = float("nan")
    with pytest.raises(ValueError, match=r"train\.lr: expected a finite number, got nan"):
        config.validate()
    config.train.lr = 1e-3
    config.train.kl_weight = float("inf")
    with pytest.raises(ValueError, match=r"train\.kl_weight: expected a finite number"):
        config.validate()


def test_a_later_episode_without_energy_is_refused_up_front(data: dict[str, Path],
                                                            tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data["single"], copy)
    with h5py.File(copy / "data" / "main_data.hdf5", "a") as handle:
        del handle["episode_3/infos/energy"]
    with pytest.raises(DatasetError, match="episode_3 lacks infos/energy"):
        EpisodeWindows(copy, 3, "train", split_fractions=(0.5, 0.25, 0.25))


@pytest.mark.parametrize("bound", [float("nan"), -1.0, "wide", float("inf"), 1e308])
@pytest.mark.parametrize("env_id", ["NoetherControl/PixelPendulum-v0",
                                    "NoetherControl/PixelDoublePendulum-v0"])
def test_reset_refuses_bad_bounds(env_id: str, bound: object) -> None:
    env = gym.make(env_id, image_size=SIZE)
    for name in ("x_init", "y_init"):
        with pytest.raises(ValueError, match=rf"options\['{name}'\]: expected a finite number "
                           r">= 0"):
            env.reset(seed=0, options={name: bound})
    env.reset(seed=0, options={"x_init": 0.0, "y_init": 0.5})  # a fixed angle is fine
    env.close()


@pytest.mark.parametrize(("setting", "value", "words"), [
    ("top_formulas", 0, "top_formulas: expected >= 1"),
    ("threads", 0, "threads: expected >= 1"),
    ("test_fraction", 1.0, r"test_fraction: expected a fraction in \(0, 1\)"),
    ("test_fraction", 0.0, r"test_fraction: expected a fraction in \(0, 1\)"),
    ("test_fraction", -0.5, r"test_fraction: expected a fraction in \(0, 1\)"),
])
def test_discover_refuses_before_searching(setting: str, value: float, words: str,
                                           tmp_path: Path) -> None:
    config = DiscoverConfig(score=False, plot=False, search=SearchConfig(max_size=3))
    setattr(config, setting, value)
    with pytest.raises(ValueError, match=words):
        discover(config, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_discover_refuses_a_nan_learning_rate(tmp_path: Path) -> None:
    config = DiscoverConfig(score=False, plot=False,
                            search=SearchConfig(max_size=3, fit_lr=float("nan")))
    with pytest.raises(ValueError, match=r"search\.fit_lr: expected finite numbers, got nan"):
        discover(config, tmp_path)


def test_discover_refuses_a_binary_file(data: dict[str, Path], tmp_path: Path) -> None:
    config = DiscoverConfig(score=False, plot=False)
    config.data.path = str(data["binary"])
    config.data.units = {"q": "rad"}
    with pytest.raises(ValueError, match=r"data\.path: expected a UTF-8 text file"):
        discover(config, tmp_path)


# --- Accepted silently, wrongly, before -----------------------------------------------------

@pytest.mark.parametrize("file, units, message", [
    ("measured", {"q": "rad", "p": "rad/s", "x": "m"},
     r"data\.units: column\(s\) \['x'\] are not in"),
    ("constant", {"q": "rad", "p": "rad/s"},
     r"every state column \(q, p\) has one value in all 4 trajectories; expected states that "
     "change over time"),
])
def test_discover_refuses_units_of_missing_columns_and_states_that_never_change(
        data: dict[str, Path], tmp_path: Path, file: str, units: dict[str, str],
        message: str) -> None:
    config = DiscoverConfig(score=False, plot=False, search=SearchConfig(max_size=3))
    config.data.path = str(data[file])
    config.data.trajectory = "trial"
    config.data.units = units
    with pytest.raises(ValueError, match=message):
        discover(config, tmp_path)


def test_a_model_of_another_system_is_refused(data: dict[str, Path]) -> None:
    """A pendulum model and double-pendulum data agree in frames and actions; not in states."""
    double = EpisodeWindows(data["double"], 3, "all")
    single = EpisodeWindows(data["single"], 3, "all")
    config = SVGConfig(image_size=SIZE, state_dim=2)
    check_compatible(config, single, str(data["single"]))
    with pytest.raises(ValueError, match=r"state dimension \(another system\): the model "
                       "expects 2, the data has 4"):
        check_compatible(config, double, str(data["double"]))
    assert PENDULUM_32.id != DOUBLE_32.id


def test_data_of_another_env_of_the_same_system_is_evaluated_with_a_warning(
        data: dict[str, Path], tmp_path: Path) -> None:
    random_physics = EnvConfig(name="pixel-pendulum-random",
                               id="NoetherControl/PixelPendulumRandom-v0",
                               kwargs={"image_size": SIZE})
    other = collect(CollectConfig(
        episodes=2, num_envs=2, episode_steps=5, progress=False, env=random_physics,
        policy={"kind": "ou"},  # type: ignore[arg-type]
        dataset=DatasetConfig(root=str(tmp_path))))["path"]
    trained = {"data": {"path": str(data["single"])}}
    with pytest.warns(UserWarning, match=r"trained on 'NoetherControl/PixelPendulum-v0' "
                      r"episodes, .* holds 'NoetherControl/PixelPendulumRandom-v0' episodes: "
                      "these metrics measure how it generalises"):
        warn_other_env(trained, other)
    warn_other_env(trained, str(data["single"]))  # the same env: nothing to say


@pytest.mark.parametrize("value, integer, optional, ok", [
    (1, True, False, True), (0, True, False, False), (True, True, False, False),
    (1.5, True, False, False), (None, True, True, True), (None, True, False, False),
    (0.5, False, False, True), (float("nan"), False, False, False), ("3", False, False, False),
])
def test_require_at_least_names_the_setting(value, integer, optional, ok) -> None:
    if ok:
        require_at_least("agent.steps", value, 0.5 if not integer else 1, integer=integer,
                         optional=optional)
        return
    with pytest.raises(ValueError, match=r"^agent\.steps: expected (an int|a number) >= "):
        require_at_least("agent.steps", value, 1, integer=integer, optional=optional)


def test_require_choice_lists_the_choices() -> None:
    require_choice("planner.kind", "cem", ("cem", "mppi"))
    with pytest.raises(ValueError, match=r"planner\.kind: expected one of \('cem', 'mppi'\), "
                                         r"got 'ga'"):
        require_choice("planner.kind", "ga", ("cem", "mppi"))
