"""Noether end to end on a tiny dataset: Algorithm 1 in train, checkpoints, evaluate, compare."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import noether_control as noether_control_package
from noether_control.evaluation.evaluate import EvaluateConfig, evaluate_checkpoint
from noether_control.evaluation.tailored import NoetherEvalConfig
from noether_control.experiments.compare import CompareConfig, compare
from noether_control.models.checkpoint import load_world_model, read_checkpoint
from noether_control.noether.meta import load_noether
from noether_control.runtime import to_dataclass
from noether_control.training.config import TrainCommandConfig
from noether_control.training.train import train_world_model

CONF = Path(noether_control_package.__file__).resolve().parent / "conf/commands"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
#: A tiny model on 32 px frames: seconds per run.
TINY = ("model.width=4", "model.rnn_size=16", "model.action_embed_dim=2", "train.val_windows=2",
        "train.image_every=0", "train.tensorboard=false", "device=cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """10 episodes of 24 steps of 32 px pendulum frames (train/val/test 8/1/1)."""
    root = tmp_path_factory.mktemp("collect")
    done = subprocess.run(
        [sys.executable, "-m", "noether_control", "collect", "experiment=smoke", "episodes=10",
         "num_envs=5", "env.kwargs.image_size=32", f"hydra.run.dir={root}"],
        cwd=root, env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((root / "results.json").read_text())["path"]


def train_config(*overrides: str) -> TrainCommandConfig:
    with initialize_config_dir(str(CONF / "train"), version_base="1.3"):
        return to_dataclass(TrainCommandConfig, compose("train", overrides=list(overrides)))


@pytest.fixture(scope="module")
def runs(dataset: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Baseline (6 plain steps) and Noether (3 plain + 3 meta steps), same seed and batches."""
    root = tmp_path_factory.mktemp("runs")
    common = (f"data.path={dataset}", *TINY)
    train_world_model(train_config("experiment=smoke", *common), root / "baseline")
    train_world_model(train_config("experiment=noether_smoke", *common), root / "noether")
    return {"baseline": root / "baseline", "noether": root / "noether"}


def test_noether_config_composes() -> None:
    off = train_config("data.path=x")
    assert not off.noether.enabled and off.noether.inner.steps == 1
    on = train_config("data.path=x", "experiment=noether_smoke")
    assert on.noether.enabled and on.noether.pretrain_steps == 3
    assert on.noether.embedding.input == "hidden" and on.noether.tailored == "lstm"
    with pytest.raises(ValueError, match="tailored"):
        train_config("data.path=x", "noether=default", "noether.tailored=encoder").validate()
    # refused before any step: too short a rollout for the loss; `all` without teacher forcing
    with pytest.raises(ValueError, match=r"data\.n_future: .* expected >= 3 .* got 2"):
        train_config("data.path=x", "noether=default", "data.n_future=2").validate()
    train_config("data.path=x", "noether=default", "data.n_future=1",
                 "noether.include_context=true", "noether.embedding.input=frames").validate()
    with pytest.raises(ValueError, match=r"expected train\.rollout=teacher, got 'scheduled'"):
        train_config("data.path=x", "noether=default", "noether.tailored=all").validate()


def test_pretraining_matches_the_baseline_then_meta_training_departs(runs: dict[str, Path]
                                                                     ) -> None:
    base_e1 = read_checkpoint(runs["baseline"] / "checkpoints" / "step_0000003.pt")
    noether_e1 = read_checkpoint(runs["noether"] / "checkpoints" / "step_0000003.pt")
    for name, value in base_e1["model"].items():  # E1: the same plain steps
        assert torch.equal(noether_e1["model"][name], value), name
    base = read_checkpoint(runs["baseline"] / "checkpoints" / "last.pt")
    noether = read_checkpoint(runs["noether"] / "checkpoints" / "last.pt")
    assert noether["step"] == base["step"] == 6
    assert any(not torch.equal(noether["model"][k], v) for k, v in base["model"].items())
    # g_φ and its learned inner lr were trained by the meta steps only.
    stored = noether["extra"]["noether"]
    e1_state = noether_e1["extra"]["noether"]["state"]
    assert any(not torch.equal(stored["state"][k], v) for k, v in e1_state.items())
    assert "noether" not in base["extra"]
    metrics = (runs["noether"] / "metrics.csv").read_text()
    assert "train/conservation" in metrics.splitlines()[0]
    # meta steps log each group's share of the gradient: the groups partition the parameters
    rows = [row for row in csv.DictReader(metrics.splitlines()) if row["train/grad_norm"]]
    meta_rows = [row for row in rows if row.get("train/grad_norm_embedding")]
    assert meta_rows and all(not row.get("train/grad_norm_model") for row in rows
                             if row not in meta_rows)
    for row in meta_rows:
        groups = [float(row[f"train/grad_norm_{name}"])
                  for name in ("model", "embedding", "inner_lr")]
        assert min(groups) > 0
        assert math.hypot(*groups) == pytest.approx(float(row["train/grad_norm"]), rel=1e-4)
        # and the inner loop's scale: g's spread, the tailored step, the learned inner lr
        assert float(row["train/embedding_variance"]) > 0
        assert float(row["train/inner_step"]) > 0
        assert float(row["train/inner_lr"]) > 0
    assert "train/grad_norm_model" not in (runs["baseline"] / "metrics.csv").read_text()


def test_resume_and_init_from_baseline(runs: dict[str, Path], dataset: str, tmp_path: Path
                                       ) -> None:
    common = (f"data.path={dataset}", *TINY)
    # init_from: meta-train from the baseline's step-3 checkpoint instead of pre-training.
    start = runs["baseline"] / "checkpoints" / "step_0000003.pt"
    result = train_world_model(
        train_config("experiment=noether_smoke", *common, f"noether.init_from={start}"),
        tmp_path / "from_baseline",
    )
    assert result["steps"] == 6
    here = read_checkpoint(tmp_path / "from_baseline" / "checkpoints" / "last.pt")
    scratch = read_checkpoint(runs["noether"] / "checkpoints" / "last.pt")
    for name, value in scratch["model"].items():  # same E1 model, batches and Adam state
        torch.testing.assert_close(here["model"][name], value, rtol=0, atol=1e-6)
    # Resume extends the run and restores g_φ.
    result = train_world_model(
        train_config("experiment=noether_smoke", *common, f"noether.init_from={start}",
                     "train.steps=7"),
        tmp_path / "from_baseline",
    )
    assert result["steps"] == 7
    with pytest.raises(ValueError, match="architecture"):
        train_world_model(train_config("experiment=noether_smoke", *common, "model.g_dim=8",
                                       f"noether.init_from={start}"), tmp_path / "other")


def test_embedding_lr_scale_steps_g_phi_alone_faster(runs: dict[str, Path], dataset: str,
                                                     tmp_path: Path) -> None:
    common = (f"data.path={dataset}", *TINY)
    start = runs["baseline"] / "checkpoints" / "step_0000003.pt"
    runs_by_scale = {}
    for scale in (1.0, 10.0):
        out = tmp_path / f"scale{scale:g}"
        train_world_model(train_config("experiment=noether_smoke", *common,
                                       f"noether.init_from={start}",
                                       f"noether.embedding_lr_scale={scale}"), out)
        runs_by_scale[scale] = read_checkpoint(out / "checkpoints" / "last.pt")
    plain, fast = runs_by_scale[1.0], runs_by_scale[10.0]
    model_lr, embedding_lr = (group["lr"] for group in fast["optimizer"]["param_groups"])
    assert embedding_lr == pytest.approx(10 * model_lr)
    # Adam's first step has about unit size per coordinate: g_φ moves about 10x as far.
    fast_g, plain_g = (run["extra"]["noether"]["state"] for run in (fast, plain))
    assert any(not torch.allclose(fast_g[name], value) for name, value in plain_g.items())
    with pytest.raises(ValueError, match=r"noether\.embedding_lr_scale: expected a finite"):
        train_config("experiment=noether_smoke", *common,
                     "noether.embedding_lr_scale=0").validate()


def test_train_init_from_continues_a_checkpoint_as_if_never_stopped(
        runs: dict[str, Path], dataset: str, tmp_path: Path) -> None:
    common = (f"data.path={dataset}", *TINY)
    start = runs["baseline"] / "checkpoints" / "step_0000003.pt"
    smoke = train_config("experiment=smoke", *common)
    assert smoke.train.steps == 6
    result = train_world_model(train_config("experiment=smoke", *common,
                                            f"train.init_from={start}"), tmp_path / "continued")
    assert result["steps"] == 6
    # batches are drawn from (seed, step): steps 4-6 from step 3's weights and Adam state are
    # the uninterrupted run's steps 4-6 (the dynamics phase after them too)
    here = read_checkpoint(tmp_path / "continued" / "checkpoints" / "last.pt")
    whole = read_checkpoint(runs["baseline"] / "checkpoints" / "last.pt")
    for name, value in whole["model"].items():
        torch.testing.assert_close(here["model"][name], value, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"train\.init_from .* expected the architecture"):
        train_world_model(train_config("experiment=smoke", *common, "model.g_dim=8",
                                       f"train.init_from={start}"), tmp_path / "other")
    # the feedback path is how the weights run, not which exist: a latent-feedback checkpoint
    # continues with pixel feedback, and the pixels change the training from there on
    assert read_checkpoint(start)["model_config"]["feedback"] == "latent"
    for feedback in ("latent", "pixels"):
        train_world_model(train_config("experiment=smoke", *common, f"model.feedback={feedback}",
                                       "train.rollout=closed", f"train.init_from={start}"),
                          tmp_path / feedback)
    latent = read_checkpoint(tmp_path / "latent" / "checkpoints" / "last.pt")
    pixels = read_checkpoint(tmp_path / "pixels" / "checkpoints" / "last.pt")
    assert pixels["model_config"]["feedback"] == "pixels"
    assert any(not torch.allclose(pixels["model"][name], value)
               for name, value in latent["model"].items())
    with pytest.raises(ValueError, match="expected at most one checkpoint to start from"):
        train_config("experiment=noether_smoke", *common, f"train.init_from={start}",
                     f"noether.init_from={start}").validate()


def test_evaluate_with_test_time_tailoring(runs: dict[str, Path], tmp_path: Path) -> None:
    options = {"horizon": 4, "lpips": False, "gif_sequences": 0, "device": "cpu",
               "batch_size": 4}
    plain = evaluate_checkpoint(EvaluateConfig(checkpoint=str(runs["noether"]), **options,
                                               noether=NoetherEvalConfig(0)), tmp_path / "k0")
    tailored = evaluate_checkpoint(EvaluateConfig(checkpoint=str(runs["noether"]), **options,
                                                  noether=NoetherEvalConfig(3)), tmp_path / "k3")
    assert plain["inner_steps"] == 0 and tailored["inner_steps"] == 3
    conservation = tailored["conservation_loss"]
    assert conservation["after"] < conservation["before"]
    assert plain["conservation_loss"]["before"] == plain["conservation_loss"]["after"]
    assert plain["conservation_loss"]["before"] == pytest.approx(conservation["before"])
    assert tailored["per_horizon"]["mse"] != plain["per_horizon"]["mse"]
    assert plain["n_sequences"] == tailored["n_sequences"]
    # the motion of the prediction before and after tailoring, beside the true frames' motion
    moved, moved_plain = tailored["predicted_motion"], plain["predicted_motion"]
    assert moved_plain["before"] == moved_plain["after"]
    assert moved["before"] == pytest.approx(moved_plain["after"])
    assert moved["after"] == pytest.approx(np.mean(tailored["per_horizon"]["motion"]))
    assert moved["after"] != moved["before"]
    assert plain["true_motion"] == tailored["true_motion"] and min(plain["true_motion"]) > 0
    # K = 0 on the Noether checkpoint predicts exactly what the un-tailored model predicts.
    model, _ = load_world_model(runs["noether"] / "checkpoints" / "last.pt")
    assert load_noether(read_checkpoint(runs["noether"] / "checkpoints" / "last.pt"), model)
    with pytest.raises(ValueError, match="baseline checkpoint"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(runs["baseline"]), **options,
                                           noether=NoetherEvalConfig(2)), tmp_path / "bad")


def test_compare_report(runs: dict[str, Path], tmp_path: Path) -> None:
    config = CompareConfig(
        runs={"baseline": str(runs["baseline"]), "noether": str(runs["noether"])},
        horizon=4, batch_size=4, sweep_steps=[0, 1, 3], sweep_sequences=4, probe_windows=8,
        max_sequences=3, device="cpu",
    )
    document = compare(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["reference"] == "noether" and saved["horizons"] == [1, 2, 3, 4]
    assert saved["n_sequences"] == 3  # max_sequences of the 4 test windows
    diff = saved["paired"]["mse"]["noether − baseline"]
    assert len(diff["mean"]) == 4 and all(lo <= m <= hi for lo, m, hi in
                                          zip(diff["low"], diff["mean"], diff["high"],
                                              strict=True))
    baseline, noether = saved["runs"]["baseline"], saved["runs"]["noether"]
    for h in range(4):
        assert diff["mean"][h] == pytest.approx(noether["mse"][h] - baseline["mse"][h], abs=1e-9)
    assert noether["inner_steps"] == 1 and baseline["inner_steps"] == 0
    sweep = saved["sweep"]
    assert sweep["steps"] == [0, 1, 3] and sweep["conservation"][2] < sweep["conservation"][0]
    assert len(sweep["motion"]) == 3 and sweep["true_motion"] > 0
    assert len(saved["true_motion"]) == 4 and len(noether["motion"]) == 4
    assert noether["motion"] != baseline["motion"]
    assert noether["predicted_motion"]["after"] == pytest.approx(np.mean(noether["motion"]))
    assert "motion_within_10pct_of_true" in saved["targets"]
    paths = saved["inner_gradient"]
    assert paths["sequences"] == 4 and paths["total"] > 0 and paths["through_dynamics"] > 0
    assert saved["probe"]["n_test"] > 0 and saved["probe"]["input"] == "hidden"
    assert 0 <= saved["probe"]["variance"]["within_fraction"] <= 1
    assert 0 <= saved["probe"]["energy_variance"]["within_fraction"] <= 1
    explained = saved["probe"]["explained_by"]
    # fixed physics: every episode stores the same constants, so there is no physics group
    assert set(explained) == {"angle", "velocity", "energy", "torque", "torque_sum",
                              "state_basis", "step", "all"}
    assert all(group["r2"] <= 1 for group in explained.values())
    # g reads the LSTM outputs: the loss's first is the one after the first predicted frame
    assert saved["probe"]["explained_from_step"] == saved["n_past"]
    assert 0 <= saved["probe"]["variance_from_step"]["within_fraction"] <= 1
    assert explained["step"]["within_fraction"] == pytest.approx(1.0)
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert document["targets"] == saved["targets"]
    with pytest.raises(ValueError, match="reference"):
        compare(CompareConfig(runs=config.runs, reference="control"), tmp_path / "bad")
    with pytest.raises(ValueError, match=r"test_inner_steps \(reference run 'baseline'\)=2: "
                       r"expected a checkpoint trained with Noether"):
        compare(replace(config, reference="baseline", test_inner_steps=2), tmp_path / "bad")


@pytest.mark.slow
def test_torchrun_two_processes_meta_train_like_one(dataset: str, runs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    overrides = ("experiment=noether_smoke", f"data.path={dataset}", *TINY)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "noether_control", "train", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    e1 = read_checkpoint(runs["noether"] / "checkpoints" / "step_0000003.pt")
    one = read_checkpoint(runs["noether"] / "checkpoints" / "last.pt")
    two = read_checkpoint(tmp_path / "checkpoints" / "last.pt")

    def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)

    # The meta steps moved the weights; two processes (each half of every global batch, the
    # gradients averaged) land where one process does, up to float rounding.
    for key in ("model", "noether"):
        def state(payload: dict, key: str = key) -> dict[str, torch.Tensor]:
            return payload[key] if key == "model" else payload["extra"]["noether"]["state"]

        moved = distance(state(one), state(e1))
        assert moved > 0
        assert distance(state(two), state(one)) < 1e-2 * moved, key


def test_action_aware_frame_embedding_meta_trains_and_compares(
    runs: dict[str, Path], dataset: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "frames_work"
    train_world_model(train_config("experiment=noether_smoke", "noether=frames_work",
                                   f"data.path={dataset}", *TINY), run_dir)
    payload = read_checkpoint(run_dir / "checkpoints" / "last.pt")
    work = payload["extra"]["noether"]["state"]["embedding.work.weight"]
    assert work.abs().sum() > 0  # meta-training moved the work head off its zero start
    config = CompareConfig(
        runs={"baseline": str(runs["baseline"]), "noether": str(run_dir)}, horizon=4,
        batch_size=4, sweep_steps=[0, 3], sweep_sequences=4, probe_windows=8, device="cpu",
    )
    saved = compare(config, tmp_path / "compare")
    assert saved["probe"]["input"] == "frames" and saved["probe"]["n_test"] > 0
    assert saved["sweep"]["conservation"][1] < saved["sweep"]["conservation"][0]
