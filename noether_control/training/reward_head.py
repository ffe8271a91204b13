"""Refitting a trained world model's reward head on the features a planner's rollouts give it.

Training fits the reward head jointly with the dynamics, at each step's input as the training
objective forms it; a planner reads the head along the model's own closed-loop rollouts, where
the predicted codes and LSTM states drift from those. Near a goal the true rewards of
neighbouring states differ by hundredths, which a head fitted under the training loss does not
resolve. A refit freezes every other weight, rolls the model out from real contexts under the
recorded actions, and fits a fresh head (of any ``model.reward_input`` and
``model.reward_output``) on exactly what it reads there against the recorded rewards.

    refit = refit_reward_head(model, frames, actions, rewards, context=2,
                              reward_input="hidden_code_motion", reward_output="root_cost",
                              steps=6000, seed=0)

Shapes: windows ``frames (B, P + H, C, S, S)``, float in ``[0, 1]`` or uint8 (a quarter of the
memory for thousands of windows; only the context frames are converted, chunk by chunk),
``actions (B, P + H, A)`` and
``rewards (B, P + H)``, where the rollout from the ``P`` context frames under actions
``P − 1 … P + H − 2`` predicts the rewards of those actions, ``rewards[:, P − 1 : −1]``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from noether_control.models.svg import SVGWorldModel


def with_reward_head(model: SVGWorldModel, reward_input: str,
                     reward_output: str = "reward") -> SVGWorldModel:
    """A copy of ``model`` whose reward head reads ``reward_input`` and predicts
    ``reward_output``, freshly initialised (from torch's global generator); every other weight
    is ``model``'s."""
    refit = SVGWorldModel(dataclasses.replace(model.config, reward_input=reward_input,
                                              reward_output=reward_output))
    kept = {name: value for name, value in model.state_dict().items()
            if not name.startswith("reward_net.")}
    missing, unexpected = refit.load_state_dict(kept, strict=False)
    if unexpected or any(not name.startswith("reward_net.") for name in missing):
        raise ValueError(f"expected only the reward head to differ, got missing {missing}, "
                         f"unexpected {unexpected}")
    return refit.to(next(model.parameters()).device).eval()


def context_frames(frames: Tensor, context: int) -> Tensor:
    """The first ``context`` frames of windows ``frames`` as float in ``[0, 1]`` (uint8 frames
    are read as 0 … 255, as the datasets store them)."""
    first = frames[:, :context]
    if first.dtype != torch.uint8:
        return first
    # In the standard layout: a channels-last copy would send the convolutions down another
    # kernel, whose rounding differs from the float windows' (features off by ~3e-4).
    return first.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


@torch.no_grad()
def reward_features(model: SVGWorldModel, frames: Tensor, actions: Tensor, context: int,
                    chunk: int = 250) -> Tensor:
    """What ``model``'s reward head reads ``(B, H, ·)`` along closed-loop rollouts of the
    windows, captured at the head's input so it is exactly the head's view whatever
    ``model.reward_input``."""
    captured: list[Tensor] = []
    hook = model.reward_net.register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0]))
    try:
        rows = []
        for start in range(0, frames.shape[0], chunk):
            part = slice(start, start + chunk)
            state = model.encode_context(context_frames(frames[part], context),
                                         actions[part, :context - 1])
            captured.clear()  # the context's own predictor steps ran the head too
            model.rollout(state, actions[part, context - 1:-1])
            rows.append(torch.stack(captured, dim=1))
    finally:
        hook.remove()
    return torch.cat(rows)


@torch.no_grad()
def rollout_rewards(model: SVGWorldModel, frames: Tensor, actions: Tensor, context: int
                    ) -> Tensor:
    """The rewards ``(B, H)`` ``model`` predicts along closed-loop rollouts of the windows."""
    state = model.encode_context(context_frames(frames, context), actions[:, :context - 1])
    return model.rollout(state, actions[:, context - 1:-1]).rewards


def head_targets(rewards: Tensor, reward_output: str) -> Tensor:
    """What a head predicting ``reward_output`` outputs for ``rewards``: the reward itself, or
    for ``root_cost`` the cost's square root ``√max(−r, 0)`` (the head's output ``y`` is read
    as the reward ``−y²``)."""
    if reward_output == "root_cost":
        return (-rewards).clamp_min(0).sqrt()
    return rewards


def fit_reward_head(head: nn.Module, features: Tensor, targets: Tensor, steps: int, seed: int,
                    batch: int = 512, lr: float = 1e-3) -> None:
    """Fit ``head`` alone on ``features`` ``(N, ·)`` → ``targets`` ``(N,)`` by MSE with Adam,
    on minibatches drawn from a generator seeded ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        index = torch.randint(0, features.shape[0], (batch,), generator=generator)
        loss = (head(features[index]).squeeze(-1) - targets[index]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def refit_reward_head(model: SVGWorldModel, frames: Tensor, actions: Tensor, rewards: Tensor,
                      context: int, reward_input: str, reward_output: str, steps: int,
                      seed: int, batch: int = 512, lr: float = 1e-3) -> SVGWorldModel:
    """A copy of ``model`` with a new head reading ``reward_input`` and predicting
    ``reward_output``, fitted for ``steps`` Adam steps on the closed-loop rollouts of the
    windows (``frames``, ``actions``, ``rewards``; shapes in the module's docstring). Seeded
    by ``seed``: the head's initialisation and its minibatches."""
    torch.manual_seed(seed)
    refit = with_reward_head(model, reward_input, reward_output)
    features = reward_features(refit, frames, actions, context).flatten(0, 1)
    targets = head_targets(rewards[:, context - 1:-1].flatten(), reward_output)
    fit_reward_head(refit.reward_net, features, targets.to(features.device), steps, seed,
                    batch, lr)
    return refit.eval()
