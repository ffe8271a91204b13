"""An actor and critic on the world model's latent state, guiding MPC through that model.

Planning with a short horizon cannot see past its end: from a pendulum hanging at rest, 20
steps (1 s) do not reach the top, and MPPI swings twice where the optimum swings once
(docs/rl.md). A value of the state a plan ends in lets the planner look further, and a policy
that proposes plans lets its search start where that value is high (as TD-MPC does): with the
exact value and policy, oracle MPPI plays the optimum. :class:`LatentGuide` takes both from a
Stable-Baselines3 SAC agent of ``noether-control rl`` (observations are the model's latent
state ``WorldState.latent()``): its deterministic actor proposes, its critic
``min(Q₁, Q₂)(z, π(z))`` values.

Where the agent learned decides which latent it reads. Trained inside the model
(``experience=model``), it saw the model's recurrent state stepped through imagined episodes,
and reads the state a plan reaches. Trained on real transitions (``experience=real``), it saw
the encoding of the last ``P`` real frames only (``agents/model_env.LatentHistory``), which the
zip records as ``latent_window = P``; then every state it reads along a plan is that same
encoding of the plan's last ``P`` predicted codes (``models/planning.window_latent``), never a
recurrent state stepped further than it ever saw.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from torch import Tensor

from noether_control.agents.policies import check_box, require_latent_observations
from noether_control.models.svg import SVGWorldModel, as_model_frames
from noether_control.runtime import require_at_least


class LatentGuide:
    """A SAC agent's actor and critic on a world model's latent state.

    Args:
        agent: a Stable-Baselines3 ``SAC`` whose observations are ``model``'s latent vectors.
        model: the world model it was trained in.
        action_space: the env's single-env ``Box(A,)`` (the actor's outputs are scaled to it).
        value_weight: weight of the critic's value at the end of each plan (0: propose only).

    Attributes:
        window: the agent's ``latent_window``: ``P`` (it reads the encoding of the last ``P``
            frames), or None when it has none (it reads the model's stepped state).
    """

    def __init__(self, agent: Any, model: SVGWorldModel, action_space: spaces.Space,
                 value_weight: float = 1.0) -> None:
        box = check_box(action_space)
        require_at_least("value_weight", value_weight, 0)
        if not (hasattr(agent, "actor") and hasattr(agent, "critic")):
            raise ValueError(f"guide: expected a SAC agent (an actor to propose plans and a "
                             f"critic to value their ends), got {type(agent).__name__}")
        require_latent_observations(agent.observation_space, model.config.latent_size, "guide")
        self.agent = agent
        self.model = model
        self.value_weight = float(value_weight)
        self.window: int | None = getattr(agent, "latent_window", None)
        require_at_least("latent_window", self.window, 1, integer=True, optional=True)
        device = next(model.parameters()).device
        self.low = torch.as_tensor(box.low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(box.high, dtype=torch.float32, device=device)

    @classmethod
    def load(cls, path: str, model: SVGWorldModel, action_space: spaces.Space,
             value_weight: float = 1.0) -> LatentGuide:
        """The guide of a SAC ``policy.zip`` saved by ``noether-control rl``."""
        from stable_baselines3 import SAC

        device = next(model.parameters()).device
        try:
            agent = SAC.load(path, device=device)
        except (AttributeError, KeyError, ValueError) as error:
            raise ValueError(f"guide: expected a SAC policy.zip of a noether-control rl run, "
                             f"could not load {path} as one ({error})") from error
        return cls(agent, model, action_space, value_weight)

    def _observations(self, latent: Tensor) -> Tensor:
        return latent.to(self.agent.device, torch.float32)

    @torch.no_grad()
    def actions(self, latent: Tensor) -> Tensor:
        """The actor's deterministic actions ``(B, A)`` in the action box, for latents
        ``(B, D)``."""
        squashed = self.agent.actor(self._observations(latent), deterministic=True)
        actions = self.low + (squashed.to(self.low) + 1) * (self.high - self.low) / 2
        return torch.minimum(torch.maximum(actions, self.low), self.high)

    @torch.no_grad()
    def value(self, latent: Tensor) -> Tensor:
        """``value_weight · min(Q₁, Q₂)(z, π(z))`` ``(B,)`` of latents ``(B, D)``."""
        observations = self._observations(latent)
        squashed = self.agent.actor(observations, deterministic=True)
        values = torch.min(*self.agent.critic(observations, squashed)).squeeze(1)
        return self.value_weight * values.to(latent.device, latent.dtype)

    @torch.no_grad()
    def propose(self, frames: Tensor, actions: Tensor, horizon: int) -> Tensor:
        """The plan ``(E, horizon, A)`` the actor makes through the model, one model step per
        action, from the state of ``P`` frames ``(E, P, …)`` and the ``P − 1`` actions
        ``(E, P − 1, A)`` between them (as :meth:`SVGWorldModel.encode_context` reads them)."""
        frames = as_model_frames(frames, self.model.config)
        if self.window is not None and frames.shape[1] != self.window:
            raise ValueError(f"guide: its agent reads the encoding of {self.window} frames, "
                             f"got a context of {frames.shape[1]}")
        # the context's codes serve both the state and the actor's first window: encoded once
        codes, skips = self.model.encode_frames(frames)
        state = self.model.context_from_codes(codes, actions, skips)
        if self.window is None:
            plans = []
            for _ in range(horizon):
                chosen = self.actions(state.latent())
                plans.append(chosen)
                _, state = self.model.advance(state, chosen[:, None])
            return torch.stack(plans, dim=1)
        taken = actions
        between = self.window - 1
        for _ in range(horizon):
            window = self.model.context_from_codes(codes[:, -self.window:],
                                                   taken[:, taken.shape[1] - between:],
                                                   state.skips)
            chosen = self.actions(window.latent())
            taken = torch.cat([taken, chosen[:, None]], dim=1)
            _, state = self.model.advance(state, chosen[:, None])
            codes = torch.cat([codes, state.code[:, None]], dim=1)
        return taken[:, taken.shape[1] - horizon:]
