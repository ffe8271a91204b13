"""``noether-control train`` end to end on a tiny collected dataset: Hydra config, CLI, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import noether_control as noether_control_package
from noether_control.models import SVGWorldModel
from noether_control.models.checkpoint import load_world_model, model_config_from, read_checkpoint
from noether_control.runtime import to_dataclass
from noether_control.training.config import TrainCommandConfig
from noether_control.training.train import run, train_world_model

TRAIN_CONFIG_DIR = Path(noether_control_package.__file__).resolve().parent / "conf/commands/train"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def noether_control(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noether_control", *args], cwd=cwd, env=ENV,
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """4 episodes of 24 steps of the pixel pendulum (collect's smoke preset)."""
    root = tmp_path_factory.mktemp("collect")
    done = noether_control("collect", "experiment=smoke", f"hydra.run.dir={root}", cwd=root)
    assert done.returncode == 0, done.stderr
    return json.loads((root / "results.json").read_text())["path"]


def composed(*overrides: str) -> TrainCommandConfig:
    return to_dataclass(TrainCommandConfig, composed_dict(*overrides))


def test_default_config_composes_and_validates() -> None:
    config = composed("data.path=somewhere")
    config.validate()
    assert config.model.encoder == "dcgan" and not config.model.stochastic
    assert config.train.rollout == "scheduled" and config.device == "auto"
    assert composed("data.path=x", "model=svg_lp").model.stochastic
    assert composed("data.path=x", "model=vgg").model.encoder == "vgg"
    with pytest.raises(ValueError, match="lr"):
        composed("data.path=x", "+train.lrr=1")


PRESETS = sorted(path.stem for path in (TRAIN_CONFIG_DIR / "experiment").glob("*.yaml"))
NOETHER_GROUPS = sorted(path.stem for path in (TRAIN_CONFIG_DIR.parent.parent / "noether").glob(
    "*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("noether", NOETHER_GROUPS)
def test_every_train_preset_composes_with_every_noether_config(preset: str, noether: str) -> None:
    config = composed("data.path=x", f"experiment={preset}", f"noether={noether}")
    if config.train.dynamics_steps and noether != "off":  # refused: a clear error, tested here
        with pytest.raises(ValueError, match=r"train\.dynamics_steps=0"):
            config.validate()
        return
    config.validate()
    assert config.noether.enabled == (noether != "off")
    if noether in ("frames_context", "frames_work"):
        assert config.noether.embedding.input == "frames" and config.noether.include_context
    assert config.noether.model_second_order == (noether not in ("frames_context", "frames_work"))
    assert config.noether.embedding.action_work == (noether == "frames_work")
    assert config.noether.scale_free == (noether == "scale_free")


def test_small_data_preset_keeps_the_baseline_checkpoint_at_the_end_of_pretraining() -> None:
    config = composed("data.path=x", "experiment=noether_small", "noether=default")
    e1 = config.noether.pretrain_steps
    assert e1 % config.train.checkpoint_every == 0 and e1 < config.train.steps
    assert config.train.lr_decay_steps == config.train.steps - e1  # both phases end decayed
    assert not config.train.amp  # the meta step runs in float32: so do baseline and control


def composed_dict(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(TRAIN_CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_run_trains_and_resumes_in_its_run_directory(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # outside a Hydra app the run directory is the cwd
    run(composed_dict("experiment=smoke", f"data.path={dataset}", "device=cpu"))
    assert f"checkpoint: {tmp_path / 'checkpoints' / 'last.pt'}" in capsys.readouterr().out
    model, config = load_world_model(tmp_path / "checkpoints" / "last.pt")
    assert config["data"]["path"] == dataset and config["data"]["n_past"] == 2
    assert (model.config.image_size, model.config.channels, model.config.action_dim) == (64, 3, 1)
    run(composed_dict("experiment=smoke", f"data.path={dataset}", "device=cpu", "train.steps=8"))
    assert "resuming from" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 8 and results["train"]["train/loss"] > 0
    # a finished run asked again: nothing to do, and its measurements stay as they were
    run(composed_dict("experiment=smoke", f"data.path={dataset}", "device=cpu", "train.steps=8"))
    assert "nothing to do" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text()) == results
    # lost after the last checkpoint (a crash before it was written): rebuilt from last.pt
    (tmp_path / "results.json").unlink()
    run(composed_dict("experiment=smoke", f"data.path={dataset}", "device=cpu", "train.steps=8"))
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_resume_accepts_a_moved_dataset_and_refuses_other_data(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run(composed_dict("experiment=smoke", f"data.path={dataset}", "device=cpu"))
    moved = tmp_path / "moved"
    shutil.copytree(dataset, moved)
    run(composed_dict("experiment=smoke", f"data.path={moved}", "device=cpu", "train.steps=8"))
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8
    other = tmp_path / "other"
    done = noether_control("collect", "experiment=smoke", "seed=1", f"hydra.run.dir={other}",
                           cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    other_path = json.loads((other / "results.json").read_text())["path"]
    with pytest.raises(ValueError, match=r"trained on other episodes than data.path="):
        run(composed_dict("experiment=smoke", f"data.path={other_path}", "device=cpu",
                          "train.steps=10"))
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8


def test_torchrun_two_processes_match_one_process(dataset: str, tmp_path: Path) -> None:
    overrides = ("experiment=smoke", f"data.path={dataset}", "device=cpu",
                 "train.dynamics_steps=4", "train.dynamics_horizon=6",
                 "train.dynamics_batch_size=8")
    single = tmp_path / "single"
    config = composed(*overrides)
    train_world_model(config, single)
    ddp = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "noether_control", "train", *overrides, f"hydra.run.dir={ddp}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = read_checkpoint(single / "checkpoints" / "last.pt")
    two = read_checkpoint(ddp / "checkpoints" / "last.pt")
    assert one["step"] == two["step"] == 6
    assert one["extra"]["dynamics_step"] == two["extra"]["dynamics_step"] == 4
    torch.manual_seed(config.seed)  # the initial parameters, as the training run builds them
    initial = SVGWorldModel(model_config_from(one["model_config"])).state_dict()
    moved = sum(((one["model"][k] - initial[k]) ** 2).sum() for k in initial) ** 0.5
    apart = sum(((one["model"][k] - two["model"][k]) ** 2).sum() for k in initial) ** 0.5
    # Same global batch: float-rounding differences only (Adam turns them into at most ~lr
    # per weight); different data on the ranks would put them O(1) of the update apart.
    assert apart < 1e-2 * moved
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=0, atol=1e-3, msg=name)
