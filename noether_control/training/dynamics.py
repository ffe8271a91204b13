"""The dynamics phase of ``noether-control train``: the frame predictor on cached codes.

After the joint steps, the encoder is frozen and every training episode is encoded once; the
frame predictor (LSTM, action embedding, code-change, reward and state heads) then learns the
closed-loop dynamics of those codes, ``train.dynamics_horizon`` steps past the context, with no
frame encoded or decoded per step. A joint step spends nearly all its time in the convolutions
(docs/world_model.md: training runs at the auto-encoder's speed), so in the same time this phase
sees tens of times more windows, over longer horizons, which is what the closed-loop dynamics
need. The decoder, frozen too, turns the predicted codes into frames as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from noether_control.models.svg import SVGWorldModel, reward_loss


class EpisodeSource(Protocol):
    """What the phase reads episodes from (``EpisodeWindows`` of the training split)."""

    episode_ids: Any
    episode_lengths: Any
    """Steps of each episode of :attr:`episode_ids`."""

    def episode(self, episode_id: int) -> dict[str, Tensor]:
        """Every step of an episode: ``frames (T, C, H, W)``, ``actions (T, A)``, ``rewards
        (T,)``, ``states (T, S)``."""
        ...


@dataclass
class EpisodeCodes:
    """The training episodes as frozen-encoder codes, and the windows the phase samples.

    Attributes:
        codes: float ``(N_steps, g_dim)``, every step of every episode, concatenated.
        actions: float ``(N_steps, A)``; rewards: ``(N_steps,)``; states: ``(N_steps, S)``.
        starts: int64 ``(N_windows,)`` first row of each window of ``length`` steps that lies
            inside one episode.
        length: steps per window, ``n_past + dynamics_horizon``.
    """

    codes: Tensor
    actions: Tensor
    rewards: Tensor
    states: Tensor
    starts: Tensor
    length: int

    def windows(self, indices: Tensor) -> dict[str, Tensor]:
        """Windows ``indices`` (into :attr:`starts`): ``codes (B, L, g_dim)``, ``actions (B, L,
        A)``, ``rewards (B, L)``, ``states (B, L, S)``."""
        rows = self.starts[indices][:, None] + torch.arange(self.length, device=self.starts.device)
        return {"codes": self.codes[rows], "actions": self.actions[rows],
                "rewards": self.rewards[rows], "states": self.states[rows]}


def check_windows_fit(source: EpisodeSource, length: int) -> None:
    """Raise ``ValueError`` unless some episode of ``source`` holds a window of ``length`` steps.

    Called before any training step, so that a phase that cannot run is refused before the
    joint steps, not after them.
    """
    longest = int(max(source.episode_lengths))
    if longest < length:
        raise ValueError(
            f"train.dynamics_horizon: windows of n_past + dynamics_horizon = {length} steps "
            f"must fit in a training episode, but the longest has {longest}; lower "
            "train.dynamics_horizon"
        )


@torch.no_grad()
def encode_episodes(model: SVGWorldModel, source: EpisodeSource, length: int,
                    device: torch.device, chunk: int = 256) -> EpisodeCodes:
    """Encode every episode of ``source`` with ``model``'s encoder, in chunks of ``chunk`` frames.

    Windows come from the episodes at least ``length`` steps long; raises ``ValueError`` when
    there are none (see :func:`check_windows_fit`).
    """
    check_windows_fit(source, length)
    parts: dict[str, list[Tensor]] = {"codes": [], "actions": [], "rewards": [], "states": []}
    starts, offset = [], 0
    for episode_id in source.episode_ids:
        episode = source.episode(int(episode_id))
        frames = episode["frames"]
        steps = frames.shape[0]
        parts["codes"].append(torch.cat([model.encode(frames[i : i + chunk].to(device))[0]
                                         for i in range(0, steps, chunk)]).float())
        for key in ("actions", "rewards", "states"):
            parts[key].append(episode[key].to(device))
        starts.append(torch.arange(offset, offset + max(steps - length + 1, 0)))
        offset += steps
    return EpisodeCodes(**{key: torch.cat(values) for key, values in parts.items()},
                        starts=torch.cat(starts).to(device), length=length)


def dynamics_losses(
    model: SVGWorldModel, window: dict[str, Tensor], n_past: int, reward_weight: float,
    state_weight: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Closed-loop code loss of a batch of code windows (see :meth:`EpisodeCodes.windows`).

    The first ``n_past`` inputs are the encoder's codes; after them the predictor reads its own
    predicted codes. Returns the total (code MSE over every predicted step and code dimension,
    plus the weighted reward and state MSEs of the heads) and detached per-term metrics.
    """
    codes = window["codes"]
    unrolled = model.unroll_codes(codes, window["actions"], n_past, closed_loop=True)
    predicted = unrolled.codes
    code_mse = ((predicted - codes[:, 1:]) ** 2).mean()
    total = code_mse
    metrics = {"train/dynamics_code_mse": code_mse,
               "train/dynamics_future_code_mse":
                   ((predicted[:, n_past - 1 :] - codes[:, n_past:]) ** 2).mean()}
    if model.config.reward_head:
        reward_mse = reward_loss(unrolled.rewards, window["rewards"][:, :-1],
                                 model.config.reward_output)
        total = total + reward_weight * reward_mse
        metrics["train/reward_mse"] = reward_mse
    if model.config.state_head:
        state_mse = ((unrolled.states - window["states"][:, 1:]) ** 2).mean()
        total = total + state_weight * state_mse
        metrics["train/state_mse"] = state_mse
    metrics["train/loss"] = total
    return total, {name: value.detach() for name, value in metrics.items()}


def predictor_parameters(model: SVGWorldModel) -> list[torch.nn.Parameter]:
    """The parameters the phase trains: everything but the encoder and decoder."""
    return [p for name, p in model.named_parameters()
            if not name.startswith(("encoder.", "decoder."))]
