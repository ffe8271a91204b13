"""What a planner needs of a world model: the :class:`PlanningModel` protocol.

Three verbs, batch first (after TD-MPC2's ``encode``/``next``/``reward``)::

    state = model.encode_context(frames, actions)   # (E, P, ...) frames, (E, P - 1, A) actions
    state = model.expand(state, n)                  # (E · n) rows, episode-major
    rewards = model.rollout(state, plans).rewards   # plans (E · n, H, A) -> rewards (E · n, H)

``encode_context`` encodes the ``P`` most recent frames once and returns the state *before* the
decision action; ``expand`` repeats it for ``n`` candidate plans of every episode (row ``e · n +
i`` is candidate ``i`` of episode ``e``), so one ``rollout`` scores every candidate of every
parallel episode in one batch; ``rollout`` predicts the reward of each action without decoding a
frame (``decode=True`` adds the imagined frames, for videos) and is differentiable in the
actions (for gradient planners).

:class:`~noether_control.models.svg.SVGWorldModel` satisfies the protocol with its own weights;
:class:`noether_control.noether.planning.TailoredWorldModel` satisfies it with per-episode
tailored parameters held inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from noether_control.models.svg import Rollout, SVGConfig, WorldState


@runtime_checkable
class PlanningModel(Protocol):
    """A world model as a planner sees it (see the module docstring)."""

    config: SVGConfig

    def encode_context(
        self, frames: Tensor, actions: Tensor, *, generator: torch.Generator | None = None
    ) -> WorldState:
        """State before the decision action from ``P`` frames and the ``P - 1`` actions between.

        ``frames``: float ``(E, P, C, S, S)`` in [0, 1] or uint8 ``(E, P, S, S, C)``;
        ``actions``: ``(E, P - 1, A)``.
        """
        ...

    def expand(self, state: WorldState, n: int) -> WorldState:
        """Every row of ``state`` repeated for ``n`` candidates: ``E`` rows -> ``E · n``."""
        ...

    def rollout(
        self,
        state: WorldState,
        actions: Tensor,
        *,
        decode: bool = False,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Rewards ``(B, H)`` (and frames with ``decode``) of ``actions`` ``(B, H, A)``."""
        ...


def plan_returns(
    model: PlanningModel, state: WorldState, candidates: Tensor,
    generator: torch.Generator | None = None,
    terminal_value: Callable[[Tensor], Tensor] | None = None,
    value_window: int | None = None,
) -> Tensor:
    """Predicted returns ``(E, N)`` of candidate plans ``(E, N, H, A)`` from ``E`` states.

    The sum of the predicted rewards over the horizon, every candidate of every episode in one
    :meth:`PlanningModel.rollout`; differentiable in ``candidates``. ``terminal_value``, if
    given, maps the latent state each candidate ends in (``(E·N, D)``) to a value ``(E·N,)``
    added to its return (the model must have ``advance``, as
    :class:`~noether_control.models.svg.SVGWorldModel` has). With ``value_window`` None that
    latent is the state the model reaches (``WorldState.latent()``); with ``P`` it is
    :func:`window_latent` of the plan's last ``P`` predicted frames.
    """
    if candidates.dim() != 4 or candidates.shape[0] != state.batch_size:
        raise ValueError(
            f"candidates: expected (E={state.batch_size}, N, H, A), got {tuple(candidates.shape)}"
        )
    episodes, samples = candidates.shape[:2]
    rows = model.expand(state, samples)
    if terminal_value is None:
        rewards = model.rollout(rows, candidates.flatten(0, 1), generator=generator).rewards
        return rewards.sum(dim=1).reshape(episodes, samples)
    if getattr(model, "advance", None) is None:
        raise ValueError(f"terminal_value: expected a model with advance() (the state a plan "
                         f"ends in), got {type(model).__name__}")
    plans = candidates.flatten(0, 1)
    if value_window is None:
        rewards, after = model.advance(rows, plans, generator=generator)
        latent = after.latent()
    else:
        rewards, latent = window_latent(model, rows, plans, value_window, generator)
    returns = rewards.sum(dim=1) + terminal_value(latent).to(rewards)
    return returns.reshape(episodes, samples)


def window_latent(model: PlanningModel, state: WorldState, plans: Tensor, window: int,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Rewards ``(B, H)`` of ``plans`` ``(B, H, A)`` from ``state`` and the latent
    ``(B, D)`` of the state :meth:`context_from_codes` gives of the plan's last ``window``
    predicted codes and the actions between them: the plan's end as a real agent observes it,
    from its last ``P`` frames alone (``agents/model_env.LatentHistory``), not as the model's
    recurrent state after ``H`` more steps."""
    horizon, tail = plans.shape[1], window - 1
    if not 0 <= tail < horizon:
        raise ValueError(f"value window: expected 1 to {horizon} frames (the plan's horizon), "
                         f"got {window}")
    advance = model.advance
    rewards, state = advance(state, plans[:, : horizon - tail], generator=generator)
    codes, parts = [state.code], [rewards]
    for step in range(horizon - tail, horizon):
        reward, state = advance(state, plans[:, step: step + 1], generator=generator)
        codes.append(state.code)
        parts.append(reward)
    windowed = model.context_from_codes(torch.stack(codes, dim=1), plans[:, horizon - tail:],
                                        state.skips, generator=generator)
    return torch.cat(parts, dim=1), windowed.latent()
