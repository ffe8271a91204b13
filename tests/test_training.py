"""The training loop: batching, resume equivalence, non-finite losses, logs and config checks."""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from noether_control.models.checkpoint import load_world_model, read_checkpoint
from noether_control.models.svg import SVGConfig
from noether_control.runtime import resolve_device
from noether_control.training import distributed
from noether_control.training.config import (
    DataConfig,
    OptimConfig,
    TrainCommandConfig,
    dynamics_learning_rate,
    learning_rate,
    resume_mismatches,
)
from noether_control.training.dynamics import dynamics_losses, encode_episodes
from noether_control.training.logs import strip_image
from noether_control.training.train import (
    NonFiniteLossError,
    StepBatches,
    _train,
    compute_losses,
    global_batch_indices,
    train_world_model,
)


class MovingDot(Dataset):
    """Windows of a dot moving on a 32 px canvas, pushed by the actions (in-memory, exact).

    Same item layout and attributes as ``EpisodeWindows``; ``poison`` puts NaNs in the frames
    of every window, to provoke a non-finite loss.
    """

    image_size, channels, action_dim, state_dim = 32, 3, 1, 2

    def __init__(self, n_items: int = 12, window: int = 5, poison: bool = False) -> None:
        generator = torch.Generator().manual_seed(0)
        actions = torch.rand(n_items, window, 1, generator=generator) * 2 - 1
        start = torch.rand(n_items, 2, generator=generator) * 20 + 6
        velocity = torch.cumsum(actions[..., 0], dim=1)[..., None] * torch.tensor([1.0, 0.5])
        position = start[:, None] + torch.cat(
            [torch.zeros(n_items, 1, 2), torch.cumsum(velocity, 1)[:, :-1]], dim=1
        )
        grid = torch.arange(32.0)
        ys = ((grid[None, None, :] - position[..., 0:1]) ** 2)  # (N, T, 32)
        xs = ((grid[None, None, :] - position[..., 1:2]) ** 2)
        blob = torch.exp(-(ys[..., :, None] + xs[..., None, :]) / 8.0)  # (N, T, 32, 32)
        self.frames = torch.stack([blob, 0.5 * blob, 1 - blob], dim=2).clamp(0, 1)
        if poison:
            self.frames[:, 1] = math.nan
        self.actions = actions
        self.states = position
        self.rewards = -position.norm(dim=-1) / 10

    @property
    def episode_ids(self) -> list[int]:
        """Each window doubles as an episode, for the dynamics phase."""
        return list(range(len(self.frames)))

    @property
    def episode_lengths(self) -> list[int]:
        return [self.frames.shape[1]] * len(self.frames)

    def episode(self, episode_id: int) -> dict[str, torch.Tensor]:
        return self[episode_id]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "frames": self.frames[index],
            "actions": self.actions[index],
            "states": self.states[index],
            "rewards": self.rewards[index],
            "energy": torch.zeros(self.frames.shape[1]),
        }


def tiny_config(steps: int, stochastic: bool = False, **train: object) -> TrainCommandConfig:
    options = dict(
        steps=steps, batch_size=4, log_every=2, checkpoint_every=2, image_every=2,
        val_windows=4, progress=False, tensorboard=False, schedule_steps=5,
    )
    options.update(train)
    return TrainCommandConfig(
        data=DataConfig(path="in-memory", n_past=2, n_future=3),
        model=SVGConfig(width=8, g_dim=16, rnn_size=32, rnn_layers=1, action_embed_dim=4,
                        state_head=True, stochastic=stochastic, z_dim=4, posterior_rnn_size=16),
        train=OptimConfig(**options),  # type: ignore[arg-type]
        device="cpu",
    )


def parameters(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def test_global_batches_cover_each_epoch_and_split_over_processes() -> None:
    n, batch = 10, 4
    seen = torch.cat([global_batch_indices(n, batch, seed=3, step=s) for s in range(5)])
    # 20 positions = two epochs, each a permutation of all 10 windows
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])
    torch.testing.assert_close(global_batch_indices(n, batch, 3, 2), seen[8:12])
    cpu = torch.device("cpu")
    halves = [list(StepBatches(n, batch, 3, 1, 3, distributed.Distributed(r, 2, cpu)))
              for r in range(2)]
    for step, (first, second) in enumerate(zip(*halves, strict=True), start=1):
        assert first + second == global_batch_indices(n, batch, 3, step).tolist()


def test_training_writes_checkpoints_logs_strips_and_learns(tmp_path: Path) -> None:
    data = MovingDot()
    results = train_world_model(tiny_config(6, lr=3e-3), tmp_path, train_set=data,
                                val_set=data)
    assert results["steps"] == 6
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert checkpoints == ["last.pt", "step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    model, config = load_world_model(tmp_path / "checkpoints" / "last.pt")
    assert config["data"]["n_past"] == 2 and config["data"]["path"] == "in-memory"
    assert (model.config.image_size, model.config.action_dim, model.config.state_dim) == (32, 1, 2)
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert any(r["eval/mse"] for r in rows)
    assert len(list((tmp_path / "predictions").glob("*.png"))) == 3
    assert (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("rollout", "stochastic"),
                         [("scheduled", False), ("closed", False), ("scheduled", True)])
def test_resumed_run_matches_uninterrupted_run(
    tmp_path: Path, rollout: str, stochastic: bool
) -> None:
    data = MovingDot()
    straight = tmp_path / "straight"
    train_world_model(tiny_config(6, stochastic, rollout=rollout), straight, train_set=data,
                      val_set=data)
    resumed = tmp_path / "resumed"
    train_world_model(tiny_config(4, stochastic, rollout=rollout), resumed, train_set=data,
                      val_set=data)
    # a checkpoint at step 4, then "crash" and rerun with the full step count
    train_world_model(tiny_config(6, stochastic, rollout=rollout), resumed, train_set=data,
                      val_set=data)
    expected = read_checkpoint(straight / "checkpoints" / "last.pt")
    got = read_checkpoint(resumed / "checkpoints" / "last.pt")
    assert got["step"] == 6
    for name, value in expected["model"].items():
        assert torch.equal(got["model"][name], value), name  # bit-exact on the CPU
    with (resumed / "metrics.csv").open() as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r["train/loss"]]
    assert steps == [2, 4, 6]


def test_resumed_metrics_rows_equal_the_uninterrupted_ones(tmp_path: Path) -> None:
    data = MovingDot()
    config = tiny_config(6, log_every=4, checkpoint_every=3, keep_checkpoints=5)
    straight = tmp_path / "straight"
    train_world_model(config, straight, train_set=data, val_set=data)
    # "crash" after step 3's checkpoint, inside the logging window that ends at step 4
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copyfile(straight / "checkpoints" / "step_0000003.pt",
                    resumed / "checkpoints" / "last.pt")
    train_world_model(config, resumed, train_set=data, val_set=data)

    def rows(run: Path) -> dict[int, str]:
        with (run / "metrics.csv").open() as handle:
            return {int(r["step"]): r["train/frame_mse"] for r in csv.DictReader(handle)
                    if r["train/loss"]}

    assert sorted(rows(straight)) == [3, 4, 6]  # log_every, plus every checkpoint
    assert rows(resumed) == {step: value for step, value in rows(straight).items() if step > 3}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    train_world_model(tiny_config(2), tmp_path, train_set=MovingDot(), val_set=MovingDot())
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 3.*untouched"):
        train_world_model(tiny_config(6), tmp_path, train_set=MovingDot(poison=True),
                          val_set=MovingDot())
    assert last.read_bytes() == before
    assert read_checkpoint(last)["step"] == 2


def test_resume_with_other_settings_names_the_mismatch(tmp_path: Path) -> None:
    train_world_model(tiny_config(2), tmp_path, train_set=MovingDot(), val_set=MovingDot())
    with pytest.raises(ValueError, match=r"train\.lr: checkpoint 0\.001, now 0\.01"):
        train_world_model(tiny_config(4, lr=1e-2), tmp_path, train_set=MovingDot(),
                          val_set=MovingDot())
    assert resume_mismatches({"train": {"steps": 2}}, {"train": {"steps": 9}}) == []
    # a setting added after the checkpoint was written: fine at its default, not otherwise
    assert resume_mismatches({"train": {}}, {"train": {"kl_weight": 1e-4}}) == []
    assert resume_mismatches({"train": {}}, {"train": {"kl_weight": 0.5}}) == [
        "train.kl_weight: checkpoint None, now 0.5"]


def test_a_missing_required_setting_is_named() -> None:
    from omegaconf import OmegaConf

    from noether_control.runtime import to_dataclass

    cfg = OmegaConf.structured(TrainCommandConfig)
    with pytest.raises(ValueError, match=r"^data\.path: a required setting has no value; give "
                                         r"it on the command line, e\.g\. data\.path=\.\.\.$"):
        to_dataclass(TrainCommandConfig, cfg)


def test_bad_configs_raise_value_errors() -> None:
    config = tiny_config(2, rollout="sometimes")
    with pytest.raises(ValueError, match=r"train\.rollout"):
        config.validate()
    with pytest.raises(ValueError, match="batch_size"):
        tiny_config(2, batch_size=0).validate()
    for decay in (-1, 3):
        with pytest.raises(ValueError, match=r"train\.lr_decay_steps: expected 0 ≤ .* got"):
            tiny_config(2, lr_decay_steps=decay).validate()
    for name in ("image_every", "grad_clip", "val_windows"):
        with pytest.raises(ValueError, match=rf"train\.{name}: expected ≥ 0 \(0: off\), got -1"):
            tiny_config(2, **{name: -1}).validate()
    for device in ("mps", "meta", "gpu"):
        with pytest.raises(ValueError, match=rf"device: expected 'auto', 'cpu', .* got '{device}'"):
            resolve_device(device)


def test_learning_rate_decays_linearly_over_the_last_steps() -> None:
    decayed = OptimConfig(steps=10, lr=2.0, lr_decay_steps=4)
    assert [learning_rate(decayed, s) for s in range(10)] == [2.0] * 6 + [2.0, 1.5, 1.0, 0.5]
    assert {learning_rate(OptimConfig(steps=10, lr=2.0), s) for s in range(10)} == {2.0}


def test_training_applies_the_decayed_learning_rate(tmp_path: Path) -> None:
    train_world_model(tiny_config(4, lr=1e-3, lr_decay_steps=4), tmp_path, train_set=MovingDot(),
                      val_set=MovingDot())
    with (tmp_path / "metrics.csv").open() as handle:
        logged = [float(r["train/lr"]) for r in csv.DictReader(handle) if r["train/loss"]]
    assert logged == pytest.approx([0.875e-3, 0.375e-3])  # means over steps (1, .75), (.5, .25)
    optimizer = read_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizer"]
    assert all(g["lr"] == pytest.approx(0.25e-3) for g in optimizer["param_groups"])


def test_strip_image_puts_truth_over_prediction() -> None:
    truth = torch.zeros(2, 5, 3, 8, 8)
    predicted = torch.ones(2, 3, 3, 8, 8)
    image = strip_image(truth, predicted, n_past=2)
    assert image.shape == (2 * (16 + 2), 40, 3) and image.dtype.name == "uint8"
    assert image[:8].max() == 0  # truth row
    assert image[8:16, :16].max() == 0 and image[8:16, 16:].min() == 255  # context, prediction


def test_recon_weight_adds_the_autoencoding_mse_to_the_loss() -> None:
    from noether_control.models.svg import SVGWorldModel

    data = MovingDot()
    config = tiny_config(1, recon_weight=0.5, latent_weight=0.0)
    torch.manual_seed(0)
    model = SVGWorldModel(
        SVGConfig(image_size=32, channels=3, action_dim=1, state_dim=2, width=8, g_dim=16,
                  rnn_size=32, rnn_layers=1, action_embed_dim=4, state_head=True)
    )
    batch = {key: value[:3] for key, value in vars(data).items()}
    out = model(batch["frames"], batch["actions"], 2, reconstruct=True)
    total, metrics = compute_losses(out, batch, config)
    plain, plain_metrics = compute_losses(out, batch,
                                          tiny_config(1, recon_weight=0.0, latent_weight=0.0))
    assert out.reconstructions is not None
    recon = ((out.reconstructions - batch["frames"]) ** 2).mean()
    torch.testing.assert_close(metrics["train/recon_mse"], recon.detach())
    torch.testing.assert_close(total, plain + 0.5 * recon)
    assert "train/recon_mse" not in plain_metrics


def test_latent_weight_adds_code_consistency_with_a_stop_gradient_target() -> None:
    from noether_control.models.svg import SVGWorldModel

    data = MovingDot()
    torch.manual_seed(0)
    model = SVGWorldModel(
        SVGConfig(image_size=32, channels=3, action_dim=1, state_dim=2, width=8, g_dim=16,
                  rnn_size=32, rnn_layers=1, action_embed_dim=4, state_head=True)
    )
    batch = {key: value[:3] for key, value in vars(data).items()}
    out = model(batch["frames"], batch["actions"], 2)
    assert out.codes is not None and out.predicted_codes is not None
    assert out.codes.shape == (3, batch["frames"].shape[1], 16)
    assert out.predicted_codes.shape == (3, batch["frames"].shape[1] - 1, 16)
    total, metrics = compute_losses(out, batch, tiny_config(1, recon_weight=0.0,
                                                            latent_weight=2.0))
    plain, _ = compute_losses(out, batch, tiny_config(1, recon_weight=0.0, latent_weight=0.0))
    latent = ((out.predicted_codes - out.codes[:, 1:]) ** 2).mean()
    torch.testing.assert_close(metrics["train/latent_mse"], latent.detach())
    torch.testing.assert_close(total, plain + 2.0 * latent)
    # The target codes are a stop-gradient: the encoder gets the term's gradient only through
    # the predictor's inputs, as if the targets were constants.
    weight = model.encoder.head.out.weight
    through_loss = torch.autograd.grad(total - plain, weight, retain_graph=True)[0]
    constant_targets = 2.0 * ((out.predicted_codes - out.codes[:, 1:].detach()) ** 2).mean()
    torch.testing.assert_close(through_loss, torch.autograd.grad(constant_targets, weight)[0])


def test_a_root_cost_head_is_trained_on_the_square_roots_in_both_phases() -> None:
    from noether_control.models.svg import SVGWorldModel, reward_loss

    data = MovingDot()
    config = tiny_config(1, recon_weight=0.0, latent_weight=0.0)
    config.model = dataclasses.replace(config.model, state_head=False, reward_output="root_cost")
    torch.manual_seed(0)
    model = SVGWorldModel(dataclasses.replace(config.model, image_size=32, channels=3,
                                              action_dim=1, state_dim=2))
    batch = {key: value[:3] for key, value in vars(data).items()}
    batch["rewards"] = -batch["actions"][..., 0].pow(2)  # a cost, as the pendulum's
    out = model(batch["frames"], batch["actions"], 2)
    total, metrics = compute_losses(out, batch, config)
    root = reward_loss(out.rewards, batch["rewards"][:, :-1], "root_cost")
    torch.testing.assert_close(metrics["train/reward_mse"], root.detach())
    assert not torch.isclose(root, ((out.rewards - batch["rewards"][:, :-1]) ** 2).mean())
    torch.testing.assert_close(total,
                               metrics["train/frame_mse"] + config.train.reward_weight * root)
    episodes = encode_episodes(model, data, 4, torch.device("cpu"))
    window = episodes.windows(torch.arange(3))
    window["rewards"] = -window["actions"][..., 0].pow(2)
    _, metrics = dynamics_losses(model, window, 2, reward_weight=1.0, state_weight=0.0)
    unrolled = model.unroll_codes(window["codes"], window["actions"], 2, closed_loop=True)
    torch.testing.assert_close(
        metrics["train/reward_mse"],
        reward_loss(unrolled.rewards, window["rewards"][:, :-1], "root_cost").detach())


def test_negative_loss_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"train\.latent_weight: expected ≥ 0, got -1"):
        tiny_config(1, latent_weight=-1.0).validate()


DYNAMICS = dict(dynamics_horizon=3, dynamics_batch_size=8, dynamics_lr=3e-4)


def test_dynamics_phase_trains_only_the_predictor_and_lowers_its_closed_loop_loss(
    tmp_path: Path,
) -> None:
    data = MovingDot()
    train_world_model(tiny_config(4, dynamics_steps=6, **DYNAMICS), tmp_path, train_set=data,
                      val_set=data)
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*.pt")) == [
        "step_0000004_dynamics_0000002.pt", "step_0000004_dynamics_0000004.pt",
        "step_0000004_dynamics_0000006.pt"]
    last = read_checkpoint(checkpoints / "last.pt")
    assert last["step"] == 4 and last["extra"]["dynamics_step"] == 6
    # the joint phase's end, rebuilt by training the same 4 joint steps alone
    joint_dir = tmp_path / "joint"
    train_world_model(tiny_config(4), joint_dir, train_set=data, val_set=data)
    joint = read_checkpoint(joint_dir / "checkpoints" / "last.pt")["model"]
    for name, value in last["model"].items():
        frozen = name.startswith(("encoder.", "decoder."))
        assert torch.equal(value, joint[name]) == frozen, name

    def code_loss(path: Path) -> float:
        model, _ = load_world_model(path)
        episodes = encode_episodes(model, data, 5, torch.device("cpu"))
        with torch.no_grad():
            loss, _ = dynamics_losses(model, episodes.windows(torch.arange(len(episodes.starts))),
                                      2, reward_weight=0.001, state_weight=0.1)
        return float(loss)

    assert code_loss(checkpoints / "last.pt") < code_loss(joint_dir / "checkpoints" / "last.pt")
    with (tmp_path / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["train/loss"]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    assert all(r["train/dynamics_code_mse"] for r in rows[2:])
    assert [float(r["train/lr"]) for r in rows[2:]] == pytest.approx(
        [3e-4 * (6 + 5) / 12, 3e-4 * (4 + 3) / 12, 3e-4 * (2 + 1) / 12])


def test_dynamics_phase_resumes_exactly_and_is_not_redone_by_more_joint_steps(
    tmp_path: Path,
) -> None:
    data = MovingDot()
    straight = tmp_path / "straight"
    train_world_model(tiny_config(4, dynamics_steps=4, **DYNAMICS), straight, train_set=data,
                      val_set=data)
    # "crash" after dynamics step 2: its checkpoint is all the resumed run has
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copyfile(straight / "checkpoints" / "step_0000004_dynamics_0000002.pt",
                    resumed / "checkpoints" / "last.pt")
    train_world_model(tiny_config(4, dynamics_steps=4, **DYNAMICS), resumed, train_set=data,
                      val_set=data)
    expected = read_checkpoint(straight / "checkpoints" / "last.pt")
    got = read_checkpoint(resumed / "checkpoints" / "last.pt")
    assert got["extra"]["dynamics_step"] == 4
    for name, value in expected["model"].items():
        assert torch.equal(got["model"][name], value), name
    # more joint steps afterwards (the demo's more-steps control): no second dynamics phase
    results = train_world_model(tiny_config(6, dynamics_steps=0, **DYNAMICS), resumed,
                                train_set=data, val_set=data)
    after = read_checkpoint(resumed / "checkpoints" / "last.pt")
    assert (results["steps"], after["step"], after["extra"]["dynamics_step"]) == (6, 6, 4)
    assert (resumed / "checkpoints" / "step_0000006_dynamics_0000004.pt").exists()


def test_dynamics_phase_bad_settings_raise_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train\.dynamics_steps: .* model\.stochastic=True"):
        tiny_config(2, stochastic=True, dynamics_steps=2).validate()
    with pytest.raises(ValueError, match=r"train\.dynamics_horizon: expected ≥ 1, got 0"):
        tiny_config(2, dynamics_steps=2, dynamics_horizon=0).validate()
    with pytest.raises(ValueError, match=r"train\.dynamics_steps and train\.dynamics_lr"):
        tiny_config(2, dynamics_steps=-1).validate()
    data = MovingDot()
    with pytest.raises(ValueError, match=r"n_past \+ dynamics_horizon = 6 steps .* longest has 5"):
        train_world_model(tiny_config(2, dynamics_steps=2, dynamics_horizon=4), tmp_path / "a",
                          train_set=data, val_set=data)
    assert not list((tmp_path / "a").glob("checkpoints/*.pt"))  # refused before any joint step
    windows_only = torch.utils.data.Subset(data, range(len(data)))
    windows_only.image_size, windows_only.channels = 32, 3  # type: ignore[attr-defined]
    windows_only.action_dim, windows_only.state_dim = 1, 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError,
                       match=r"episode_ids, episode_lengths and episode\(\) .* got Subset"):
        train_world_model(tiny_config(2, dynamics_steps=2, **DYNAMICS), tmp_path / "b",
                          train_set=windows_only, val_set=data)


@pytest.mark.parametrize("key", ["batch_size", "dynamics_batch_size"])
def test_batches_must_split_evenly_over_the_processes(tmp_path: Path, key: str) -> None:
    config = tiny_config(2, dynamics_steps=2,
                         **(DYNAMICS | {"batch_size": 6, "dynamics_batch_size": 9, key: 7}))
    three = distributed.Distributed(0, 3, torch.device("cpu"))
    with pytest.raises(ValueError, match=rf"train\.{key}: expected a multiple of the 3 .* got 7"):
        _train(config, tmp_path, three, MovingDot(), MovingDot())


def test_dynamics_learning_rate_decays_linearly_to_zero() -> None:
    optim = OptimConfig(dynamics_steps=4, dynamics_lr=2.0)
    assert [dynamics_learning_rate(optim, d) for d in range(4)] == [2.0, 1.5, 1.0, 0.5]
