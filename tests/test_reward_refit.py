"""Refitting a world model's reward head (``training.reward_head`` and ``noether-control
refit_reward``): the refit keeps every weight but the head, the captured features are what the
head reads, the fit lowers the head's error, the saved refit plans as the refit model, and the
benchmark's diagnosis tables measure what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from support import collect_ou, load_benchmark, tiny_checkpoint

import noether_control as noether_control_package
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.refit_reward import (
    RefitRewardConfig,
    refit_reward,
    reward_errors,
    sample_windows,
)
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import training_data_settings
from noether_control.models.checkpoint import read_checkpoint, save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.runtime import to_dataclass
from noether_control.training.reward_head import (
    fit_reward_head,
    head_targets,
    refit_reward_head,
    reward_features,
    rollout_rewards,
    with_reward_head,
)

CONF = Path(noether_control_package.__file__).resolve().parent / "conf/commands"
P = 2


def tiny_model() -> SVGWorldModel:
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=32, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, action_embed_dim=2)).eval()
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model


def windows(count: int = 6, steps: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(count, P + steps, 3, 32, 32, generator=generator),
            torch.randn(count, P + steps, 1, generator=generator))


def test_the_refit_model_keeps_every_weight_but_the_reward_head() -> None:
    model = tiny_model()
    refit = with_reward_head(model, "hidden_code")
    assert refit.config.reward_input == "hidden_code"
    assert refit.reward_net[0].in_features == 16 + 8 + 1
    own = model.state_dict()
    for name, value in refit.state_dict().items():
        if not name.startswith("reward_net."):
            torch.testing.assert_close(value, own[name])


@pytest.mark.parametrize("reward_input", ["hidden", "hidden_code", "hidden_code_motion",
                                          "code_motion"])
def test_captured_features_are_what_the_head_reads(reward_input: str) -> None:
    model = with_reward_head(tiny_model(), reward_input)
    frames, actions = windows()
    features = reward_features(model, frames, actions, P, chunk=4)
    assert features.shape[:2] == (6, 5)
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        rollout = model.rollout(state, actions[:, P - 1 : -1])
        torch.testing.assert_close(model.reward_net(features).squeeze(-1), rollout.rewards)
    torch.testing.assert_close(rollout_rewards(model, frames, actions, P), rollout.rewards)
    if reward_input == "hidden":
        torch.testing.assert_close(features, rollout.hidden)


def test_uint8_windows_give_the_features_and_rewards_of_their_float_frames() -> None:
    model = with_reward_head(tiny_model(), "hidden_code_motion")
    frames, actions = windows()
    stored = (frames * 255).round().to(torch.uint8)
    exact = stored.float() / 255
    # as a dataset's (H, W, C) pixels arrive: channels last in memory, which must not matter
    stored = stored.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(reward_features(model, stored, actions, P, chunk=4),
                               reward_features(model, exact, actions, P, chunk=4),
                               rtol=0, atol=0)
    torch.testing.assert_close(rollout_rewards(model, stored, actions, P),
                               rollout_rewards(model, exact, actions, P), rtol=0, atol=0)


def test_fitting_the_head_lowers_its_error() -> None:
    model = with_reward_head(tiny_model(), "hidden_code")
    frames, actions = windows(12)
    features = reward_features(model, frames, actions, P).flatten(0, 1)
    targets = -(actions[:, P - 1 : -1, 0] ** 2).flatten()  # a reward the features determine
    with torch.no_grad():
        before = (model.reward_net(features).squeeze(-1) - targets).pow(2).mean()
    fit_reward_head(model.reward_net, features, targets, steps=1000, seed=0, batch=32, lr=1e-2)
    with torch.no_grad():
        after = (model.reward_net(features).squeeze(-1) - targets).pow(2).mean()
    assert after < 0.2 * before


def test_a_square_root_cost_refit_gives_non_positive_rewards_and_fits() -> None:
    frames, actions = windows(12)
    rewards = -(actions[..., 0] ** 2)  # (B, P + H): a negated cost the features determine
    assert torch.equal(head_targets(rewards, "root_cost"), actions[..., 0].abs())
    assert torch.equal(head_targets(rewards, "reward"), rewards)
    model = refit_reward_head(tiny_model(), frames, actions, rewards, P, "hidden_code",
                              "root_cost", steps=1000, seed=0, batch=32, lr=1e-2)
    assert model.config.reward_output == "root_cost"
    predicted = rollout_rewards(model, frames, actions, P)
    true = rewards[:, P - 1 : -1]
    assert torch.all(predicted <= 0)
    assert (predicted - true).pow(2).mean() < 0.2 * true.pow(2).mean()


def test_a_refit_is_reproduced_by_its_seed_and_changed_by_another() -> None:
    frames, actions = windows(8)
    rewards = -(actions[..., 0] ** 2)
    first, again, other = (refit_reward_head(tiny_model(), frames, actions, rewards, P,
                                             "hidden_code_motion", "root_cost", steps=20,
                                             seed=seed, batch=16)
                           for seed in (3, 3, 4))
    for name, value in first.reward_net.state_dict().items():
        torch.testing.assert_close(again.reward_net.state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(other.reward_net[0].weight, first.reward_net[0].weight)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = collect_ou(tmp_path_factory.mktemp("data"), 8, 4, 20)
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "checkpoints" / "last.pt",
                           data["path"], P, (0.5, 0.25, 0.25))


def smoke_config(checkpoint: Path, *overrides: str) -> RefitRewardConfig:
    with initialize_config_dir(str(CONF / "refit_reward"), version_base="1.3"):
        cfg = compose("refit_reward", overrides=["experiment=smoke", f"checkpoint={checkpoint}",
                                                 *overrides])
    return to_dataclass(RefitRewardConfig, cfg)


def test_the_command_saves_a_refit_that_plans_as_fitted(checkpoint: Path, tmp_path: Path
                                                        ) -> None:
    run = checkpoint.parent.parent  # a train run directory, as the loop passes it
    document = refit_reward(smoke_config(run, "fit_steps=300", "lr=0.01"), tmp_path)
    errors = document["reward_errors"]
    # the untrained head predicts about 0 for rewards of about -5: the fit must beat it by far
    assert errors["refit"]["rmse"] < 0.5 * errors["checkpoint's head"]["rmse"]
    # 40 asked, all there are: 4 training episodes of 20 steps, windows of 6 every 3 steps
    assert document["scored_on"] == "val" and document["train_windows"] == 4 * 5
    assert json.loads((tmp_path / "results.json").read_text()) == document
    assert (tmp_path / "rewards.png").stat().st_size > 0
    # the run directory reads as the refitted model's checkpoint
    loaded = load_planning_checkpoint(str(tmp_path), torch.device("cpu"))
    source = load_planning_checkpoint(str(checkpoint), torch.device("cpu"))
    assert loaded.model.config.reward_input == "hidden_code_motion"
    assert loaded.model.config.reward_output == "root_cost"
    assert loaded.context_frames == P and loaded.real_steps == source.real_steps
    own = source.model.state_dict()
    for name, value in loaded.model.state_dict().items():
        if not name.startswith("reward_net."):
            torch.testing.assert_close(value, own[name])
    # the saved head is the one scored: recomputing the refit gives its weights
    refit = refit_reward_head(source.model, *refit_windows(checkpoint), P, "hidden_code_motion",
                              "root_cost", steps=300, seed=0, batch=64, lr=0.01)
    for name, value in refit.reward_net.state_dict().items():
        torch.testing.assert_close(loaded.model.reward_net.state_dict()[name], value)
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["extra"]["reward_refit"]["source"] == str(checkpoint)
    assert saved["config"]["data"] == read_checkpoint(checkpoint)["config"]["data"]


def refit_windows(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    data = training_data_settings(read_checkpoint(checkpoint)["config"], None)
    drawn = sample_windows(data, P + 4, "train", 40, 3, 0)
    return drawn["frames"], drawn["actions"], drawn["rewards"]


def test_sampled_windows_hold_the_dataset_bytes(checkpoint: Path) -> None:
    data = training_data_settings(read_checkpoint(checkpoint)["config"], None)
    drawn = sample_windows(data, P + 4, "train", 5, 3, 0)
    assert drawn["frames"].dtype == torch.uint8
    windows_of_split = EpisodeWindows(data.path, P + 4, split="train", stride=3,
                                      split_fractions=data.split_fractions, seed=data.split_seed)
    chosen = np.random.default_rng(0).choice(len(windows_of_split), 5, replace=False)
    for index, item in zip(chosen, drawn["frames"], strict=True):
        torch.testing.assert_close(item.float() / 255, windows_of_split[int(index)]["frames"],
                                   rtol=0, atol=0)


def test_without_validation_episodes_the_refit_is_scored_on_its_training_windows(
        checkpoint: Path, tmp_path: Path) -> None:
    data = read_checkpoint(checkpoint)["config"]["data"]["path"]
    no_val = tiny_checkpoint(tmp_path / "model.pt", data, P, (1.0, 0.0, 0.0))
    document = refit_reward(smoke_config(no_val), tmp_path / "out")
    assert document["scored_on"] == "train"
    assert document["scored_windows"] == document["train_windows"]


def test_bad_settings_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checkpoint: expected the world model whose reward"):
        refit_reward(RefitRewardConfig(), tmp_path)
    with pytest.raises(ValueError, match=r"reward_input: expected one of \('hidden'"):
        refit_reward(smoke_config(checkpoint, "reward_input=frames"), tmp_path)
    with pytest.raises(ValueError, match=r"reward_output: expected one of \('reward', "
                                         r"'root_cost'\), got 'cost'"):
        refit_reward(smoke_config(checkpoint, "reward_output=cost"), tmp_path)
    with pytest.raises(ValueError, match="windows: expected an int >= 1, got 0"):
        refit_reward(smoke_config(checkpoint, "windows=0"), tmp_path)
    with pytest.raises(ValueError, match=r"lr: expected a number > 0, got 0\.0"):
        refit_reward(smoke_config(checkpoint, "lr=0.0"), tmp_path)
    model = tiny_model()
    embedding = EmbeddingConfig(dim=4, width=8)
    conserved = NoetherModule(NoetherConfig(enabled=True, embedding=embedding), model.config)
    noether = save_checkpoint(tmp_path / "noether.pt", model=model, optimizer=None, step=1,
                              config=read_checkpoint(checkpoint)["config"], rng={},
                              extra={"noether": conserved.checkpoint_state()})
    unsplit = save_checkpoint(tmp_path / "unsplit.pt", model=tiny_model(), optimizer=None, step=1,
                              config={"data": {"path": "somewhere", "n_past": P}}, rng={})
    with pytest.raises(ValueError, match=r"expected data\.split_fractions, data\.split_seed"):
        refit_reward(smoke_config(unsplit), tmp_path)
    with pytest.raises(ValueError, match="carries a Noether embedding"):
        refit_reward(smoke_config(noether), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_reward_errors_score_the_steps_near_the_goal_apart() -> None:
    true = torch.tensor([[-4.0, -2.0], [-0.1, -0.3]])
    predicted = true + torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    errors = reward_errors(predicted, true, true >= -0.3)
    assert errors["rmse"] == pytest.approx((2.25 / 4) ** 0.5)
    assert errors["bias"] == pytest.approx(0.125)
    assert errors["rmse_near_goal"] == pytest.approx((0.25 / 2) ** 0.5)


def test_depth_errors_report_the_shrinkage_and_the_bias_near_upright() -> None:
    depth_errors = load_benchmark("reward_refit").depth_errors
    true = -torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * 8
    shrunk = true.clone()
    shrunk[:, 3] = 0.5 * true[:, 3] - 2.0  # the last step shrunk toward the mean and shifted
    cells = depth_errors(shrunk, true, (0, 3)).split()
    assert [float(cell) for cell in cells[:2]] == [1.0, 0.0]
    assert float(cells[2]) == pytest.approx(0.5, abs=1e-3)
    near = true[:, 3] > -1
    expected_bias = (shrunk[:, 3] - true[:, 3])[near].mean().item()
    assert float(cells[3]) == pytest.approx(expected_bias, abs=1e-3)
