"""The planning interface of world models: plain and tailored models give planners rewards."""

from __future__ import annotations

import pytest
import torch

from noether_control.models.planning import PlanningModel, plan_returns
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.planning import TailoredWorldModel, tailor_to_plan
from noether_control.noether.tailoring import TailoringConfig

P, H = 3, 5


def model_for(**changes: object) -> SVGWorldModel:
    torch.manual_seed(0)
    config = SVGConfig(image_size=32, channels=3, action_dim=1, width=4, g_dim=8, keypoints=4,
                       rnn_size=16, rnn_layers=2, action_embed_dim=2, z_dim=2,
                       posterior_rnn_size=8, **changes)  # type: ignore[arg-type]
    model = SVGWorldModel(config).eval()
    # As after training: the change head starts at zero, hiding the LSTM from the prediction.
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    return model


def episode(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, P + H, 3, 32, 32, generator=generator)
    actions = torch.rand(batch, P + H, 1, generator=generator) * 4 - 2
    return frames, actions


@pytest.mark.parametrize("feedback", ["latent", "pixels"])
def test_rollout_rewards_equal_imagine_on_the_same_actions(feedback: str) -> None:
    model = model_for(feedback=feedback)
    frames, actions = episode()
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        planned = model.rollout(state, actions[:, P - 1 : P - 1 + H], decode=True)
        observed = model.observe(frames[:, :P], actions[:, :P])
        imagined = model.imagine(observed, actions[:, P : P - 1 + H])
    assert planned.frames is not None and planned.frames.shape == (2, H, 3, 32, 32)
    torch.testing.assert_close(planned.rewards[:, 1:], imagined.rewards)
    torch.testing.assert_close(planned.frames[:, 1:], imagined.frames)
    # frame 0 of the plan's video is the observed frame's reconstruction from its code
    code, skips = model.encode(frames[:, P - 1])
    torch.testing.assert_close(planned.frames[:, 0], model.decode(code, skips))


def test_rollout_without_decoding_returns_no_frames_and_same_rewards() -> None:
    model = model_for()
    frames, actions = episode()
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        quiet = model.rollout(state, actions[:, P - 1 :])
        loud = model.rollout(state, actions[:, P - 1 :], decode=True)
    assert quiet.frames is None
    torch.testing.assert_close(quiet.rewards, loud.rewards)


def test_uint8_env_frames_equal_float_frames() -> None:
    model = model_for()
    frames, actions = episode()
    pixels = (frames * 255).round().to(torch.uint8)
    as_float = pixels.float() / 255
    with torch.no_grad():
        from_uint8 = model.encode_context(pixels[:, :P].permute(0, 1, 3, 4, 2),
                                          actions[:, : P - 1])
        from_float = model.encode_context(as_float[:, :P], actions[:, : P - 1])
    torch.testing.assert_close(from_uint8.code, from_float.code)


def test_expanded_candidates_are_scored_per_episode_in_one_batch() -> None:
    model = model_for()
    frames, actions = episode(batch=2)
    generator = torch.Generator().manual_seed(3)
    candidates = torch.rand(2, 4, H, 1, generator=generator) * 4 - 2
    with torch.no_grad():
        state = model.encode_context(frames[:, :P], actions[:, : P - 1])
        returns = plan_returns(model, state, candidates)
        for e in range(2):
            single = model.encode_context(frames[e : e + 1, :P], actions[e : e + 1, : P - 1])
            alone = model.rollout(single.expand(4), candidates[e]).rewards.sum(1)
            torch.testing.assert_close(returns[e], alone)
    assert returns.shape == (2, 4)


def test_returns_are_differentiable_in_the_actions() -> None:
    model = model_for()
    frames, actions = episode()
    plans = (torch.rand(2, 3, H, 1) * 2 - 1).requires_grad_(True)
    state = model.encode_context(frames[:, :P], actions[:, : P - 1])
    plan_returns(model, state, plans).sum().backward()
    assert plans.grad is not None and plans.grad.abs().sum() > 0


def test_stochastic_model_is_reproducible_by_generator() -> None:
    model = model_for(stochastic=True)
    frames, actions = episode()

    def rewards(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        state = model.encode_context(frames[:, :P], actions[:, : P - 1], generator=generator)
        return model.rollout(state, actions[:, P - 1 :], generator=generator).rewards

    with torch.no_grad():
        torch.testing.assert_close(rewards(0), rewards(0))
        assert not torch.equal(rewards(0), rewards(1))


def test_bad_context_is_refused_with_the_expected_shape() -> None:
    model = model_for()
    frames, actions = episode()
    with pytest.raises(ValueError, match="actions between 3 context frames"):
        model.encode_context(frames[:, :P], actions[:, :P])
    with pytest.raises(ValueError, match="trained on 32px"):
        model.encode_context(torch.zeros(2, P, 64, 64, 3, dtype=torch.uint8), actions[:, : P - 1])
    state = model.encode_context(frames[:, :P], actions[:, : P - 1])
    with pytest.raises(ValueError, match="state of batch 2"):
        model.rollout(state, torch.zeros(3, H, 1))
    with pytest.raises(ValueError, match="candidates per state"):
        state.expand(0)


def noether_for(model: SVGWorldModel, tailored: str = "lstm") -> NoetherModule:
    torch.manual_seed(1)
    config = NoetherConfig(enabled=True, embedding=EmbeddingConfig(input="hidden", dim=4, width=8),
                           tailored=tailored, inner=TailoringConfig(steps=1, lr=0.5,
                                                            optimizer="normalized"))
    return NoetherModule(config, model.config)


@pytest.mark.parametrize("tailored", ["lstm", "norm"])
def test_tailored_model_satisfies_the_same_interface(tailored: str) -> None:
    model = model_for()
    noether = noether_for(model, tailored)
    frames, actions = episode()
    plan = actions[:, P - 1 : P - 1 + H]
    with torch.no_grad():
        untouched = tailor_to_plan(noether, model, frames[:, :P], actions[:, : P - 1], plan, 0)
        tailored_model = tailor_to_plan(noether, model, frames[:, :P], actions[:, : P - 1], plan, 2)
        assert isinstance(tailored_model, PlanningModel)
        assert isinstance(model, PlanningModel)
        candidates = plan[:, None].expand(2, 3, H, 1)
        plain = plan_returns(model, model.encode_context(frames[:, :P], actions[:, : P - 1]),
                             candidates)
        identity = plan_returns(untouched, untouched.encode_context(frames[:, :P],
                                                                   actions[:, : P - 1]),
                                candidates)
        adapted = plan_returns(tailored_model, tailored_model.encode_context(
            frames[:, :P], actions[:, : P - 1]), candidates)
    # zero inner steps are the plain model exactly; two steps change the predicted returns
    torch.testing.assert_close(identity, plain)
    assert not torch.allclose(adapted, plain)
    # each episode's rows share its own parameters
    torch.testing.assert_close(adapted[:, 0], adapted[:, 2])


def test_tailored_model_rows_follow_their_episode() -> None:
    model = model_for()
    noether = noether_for(model)
    frames, actions = episode()
    plan = actions[:, P - 1 : P - 1 + H]
    with torch.no_grad():
        both = tailor_to_plan(noether, model, frames[:, :P], actions[:, : P - 1], plan, 2)
        second = tailor_to_plan(noether, model, frames[1:, :P], actions[1:, : P - 1], plan[1:], 2)
        state = both.encode_context(frames[:, :P], actions[:, : P - 1])
        rewards = both.rollout(state.expand(2), plan.repeat_interleave(2, 0)).rewards
        alone = second.rollout(second.encode_context(frames[1:, :P], actions[1:, : P - 1]),
                               plan[1:]).rewards
    torch.testing.assert_close(rewards[2:3], alone)
    torch.testing.assert_close(rewards[3:4], alone)
    with pytest.raises(ValueError, match="multiple of the 2 tailored episodes"):
        both.rollout(state.expand(2)._replace(code=torch.zeros(3, 8)), torch.zeros(3, H, 1))


def test_all_weights_checkpoint_cannot_plan_per_episode() -> None:
    model = model_for()
    noether = noether_for(model, "all")
    frames, actions = episode()
    with pytest.raises(ValueError, match="tailored=lstm or norm"):
        tailor_to_plan(noether, model, frames[:, :P], actions[:, : P - 1], actions[:, P - 1 :], 1)


def test_tailored_prediction_carries_the_tailored_rewards() -> None:
    model = model_for()
    noether = noether_for(model)
    frames, actions = episode()
    with torch.no_grad():
        untailored = noether.predict(model, frames[:, :P], actions, H, steps=0)
        imagined = model.imagine(model.observe(frames[:, :P], actions[:, :P]),
                                 actions[:, P : P + H - 1])
        tailored = noether.predict(model, frames[:, :P], actions, H, steps=2)
        adapted = TailoredWorldModel(model, tailored.params)
        rewards = adapted.rollout(adapted.encode_context(frames[:, :P], actions[:, : P - 1]),
                                  actions[:, P - 1 : P - 1 + H]).rewards
    assert untailored.rewards.shape == (2, H - 1)
    torch.testing.assert_close(untailored.rewards, imagined.rewards)
    torch.testing.assert_close(tailored.rewards, rewards[:, 1:])
    assert not torch.allclose(tailored.rewards, untailored.rewards)
