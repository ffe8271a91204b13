"""benchmarks/reward_refit.py: the refit models keep every weight but the reward head, the
captured features are what the head reads, the fit lowers the head's error, and a saved refit
is a checkpoint that plans as the refit model."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from support import load_benchmark

from noether_control.agents.plan import load_planning_checkpoint
from noether_control.models.checkpoint import read_checkpoint, save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel

P = 2


@pytest.fixture(scope="module")
def reward_refit() -> object:
    return load_benchmark("reward_refit")


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


def test_the_refit_model_keeps_every_weight_but_the_reward_head(reward_refit) -> None:
    model = tiny_model()
    refit = reward_refit.with_reward_head(model, "hidden_code")
    assert refit.config.reward_input == "hidden_code"
    assert refit.reward_net[0].in_features == 16 + 8 + 1
    own = model.state_dict()
    for name, value in refit.state_dict().items():
        if not name.startswith("reward_net."):
            torch.testing.assert_close(value, own[name])


@pytest.mark.parametrize("reward_input", ["hidden", "hidden_code", "hidden_code_motion",
                                          "code_motion"])
def test_captured_features_are_what_the_head_reads(reward_refit, reward_input: str) -> None:
    model = reward_refit.with_reward_head(tiny_model(), reward_input)
    frames, actions = windows()
    features = reward_refit.reward_features(model, frames, actions, P, chunk=4)
    assert features.shape[:2] == (6, 5)
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        rollout = model.rollout(state, actions[:, P - 1 : -1])
        torch.testing.assert_close(model.reward_net(features).squeeze(-1), rollout.rewards)
    if reward_input == "hidden":
        torch.testing.assert_close(features, rollout.hidden)


def test_fitting_the_head_lowers_its_error(reward_refit) -> None:
    model = reward_refit.with_reward_head(tiny_model(), "hidden_code")
    frames, actions = windows(12)
    features = reward_refit.reward_features(model, frames, actions, P).flatten(0, 1)
    targets = -(actions[:, P - 1 : -1, 0] ** 2).flatten()  # a reward the features determine
    with torch.no_grad():
        before = (model.reward_net(features).squeeze(-1) - targets).pow(2).mean()
    reward_refit.fit_reward_head(model.reward_net, features, targets, steps=1000, seed=0,
                                 batch=32, lr=1e-2)
    with torch.no_grad():
        after = (model.reward_net(features).squeeze(-1) - targets).pow(2).mean()
    assert after < 0.2 * before


def test_a_square_root_cost_head_gives_non_positive_rewards_and_fits(reward_refit) -> None:
    model = reward_refit.with_reward_head(tiny_model(), "hidden_code", "root_cost")
    assert model.config.reward_output == "root_cost"
    frames, actions = windows(12)
    features = reward_refit.reward_features(model, frames, actions, P).flatten(0, 1)
    rewards = -(actions[:, P - 1 : -1, 0] ** 2).flatten()
    reward_refit.fit_reward_head(model.reward_net, features, (-rewards).sqrt(), steps=1000,
                                 seed=0, batch=32, lr=1e-2)
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        predicted = model.rollout(state, actions[:, P - 1 : -1]).rewards.flatten()
    assert torch.all(predicted <= 0)
    assert (predicted - rewards).pow(2).mean() < 0.2 * rewards.pow(2).mean()


def refit_args() -> argparse.Namespace:
    return argparse.Namespace(windows=6, horizon=5, fit_steps=10, dataset=None)


def test_a_saved_refit_plans_as_the_refit_model(reward_refit, tmp_path: Path) -> None:
    source = save_checkpoint(tmp_path / "source.pt", model=tiny_model(), optimizer=None, step=42,
                             config={"data": {"n_past": P}, "model": {"reward_input": "hidden"}},
                             rng={})
    model = reward_refit.with_reward_head(tiny_model(), "hidden_code", "root_cost")
    torch.nn.init.normal_(model.reward_net[-1].weight)
    reward_refit.save_refit(str(tmp_path / "refit.pt"), model, source, refit_args())
    loaded = load_planning_checkpoint(str(tmp_path / "refit.pt"), torch.device("cpu"))
    assert loaded.model.config.reward_output == "root_cost"
    assert loaded.train_config["model"] == {"reward_input": "hidden_code",
                                            "reward_output": "root_cost"}
    assert loaded.context_frames == P
    frames, actions = windows()
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        expected = model.rollout(state, actions[:, P - 1 : -1]).rewards
        state = loaded.model.encode_context(frames[:, :P], actions[:, : P - 1])
        torch.testing.assert_close(loaded.model.rollout(state, actions[:, P - 1 : -1]).rewards,
                                   expected)
    saved = read_checkpoint(tmp_path / "refit.pt")
    assert saved["step"] == 42
    assert saved["extra"]["reward_refit"]["source"] == str(source)


def test_a_refit_of_a_noether_checkpoint_is_refused(reward_refit, tmp_path: Path) -> None:
    source = save_checkpoint(tmp_path / "noether.pt", model=tiny_model(), optimizer=None, step=1,
                             config={}, rng={}, extra={"noether": {"config": {}, "state": {}}})
    with pytest.raises(ValueError, match="carries a Noether embedding"):
        reward_refit.save_refit(str(tmp_path / "refit.pt"), tiny_model(), source, refit_args())
    assert not (tmp_path / "refit.pt").exists()


def test_depth_errors_report_the_shrinkage_and_the_bias_near_upright(reward_refit) -> None:
    true = -torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * 8
    shrunk = true.clone()
    shrunk[:, 3] = 0.5 * true[:, 3] - 2.0  # the last step shrunk toward the mean and shifted
    cells = reward_refit.depth_errors(shrunk, true, (0, 3)).split()
    assert [float(cell) for cell in cells[:2]] == [1.0, 0.0]
    assert float(cells[2]) == pytest.approx(0.5, abs=1e-3)
    near = true[:, 3] > -1
    expected_bias = (shrunk[:, 3] - true[:, 3])[near].mean().item()
    assert float(cells[3]) == pytest.approx(expected_bias, abs=1e-3)
