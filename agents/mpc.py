"""Model-predictive control agents: plan, apply the first action, shift the plan, replan.

Two agents share one receding-horizon loop (:class:`RecedingHorizon`), batched over the
``num_envs`` sub-environments of a vector env:

- :class:`MPCAgent` acts on the env's pixel observations through a learned world model (plain, or
  tailored per episode with a Noether checkpoint). It keeps each episode's last frames and the
  actions between them and plans through :class:`~noether_control.models.planning.PlanningModel`.
- :class:`OracleAgent` plans through the true simulator from the true state
  (:func:`noether_control.agents.oracle.true_dynamics_objective`): the ceiling that shows what
  the learned model costs.

Both follow the batched :class:`~noether_control.agents.policies.Policy` protocol
(``act(observation, rng)``, ``reset(mask, rng)``) and Stable-Baselines3's
``predict(observation, state, episode_start, deterministic)``, so one harness
(:mod:`noether_control.agents.harness`) evaluates every agent alike.

Warm start: after every step the stored plan is shifted by one and its last action set to the
centre of the action box; a replan starts from that shifted plan (PETS, PlaNet, MPPI alike).
Planners themselves hold no episode state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from noether_control.agents.guide import LatentGuide
from noether_control.agents.oracle import policy_rollout, true_dynamics_objective
from noether_control.agents.planners import Objective, Planner
from noether_control.agents.policies import (
    ExplorationNoise,
    check_box,
    check_mask,
    require_correlation,
)
from noether_control.envs.vector import PixelVectorEnv
from noether_control.models.planning import PlanningModel, plan_returns
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.meta import NoetherModule
from noether_control.noether.planning import tailor_to_plan
from noether_control.runtime import require_at_least, require_choice

TAILOR_MODES = ("none", "once_per_step", "per_iteration")
WARMUP_ACTIONS = ("plan", "zero", "random")


@dataclass
class MPCConfig:
    """How the MPC agent uses its planner and model (group ``agent``)."""

    replan_every: int = 1
    """Plan every this many steps; in between, apply the stored plan's next action."""
    warmup_action: str = "plan"
    """Action while fewer than the model's ``P`` context frames have been seen: ``plan`` (plan
    from a context whose missing frames repeat the episode's first, with centre actions between,
    as Gymnasium's frame stack pads at reset), ``zero`` (the centre of the action box) or
    ``random`` (uniform in the box). Waiting costs episodes that start where a few steps decide:
    a pendulum starting at the edge of what the torque can hold falls in ``P − 1`` idle steps
    (docs/rl.md)."""
    tailor: str = "none"
    """Noether tailoring to the episode before planning: ``none``; ``once_per_step`` (K inner
    steps along the prediction under the warm-start plan, then plan with those parameters); or
    ``per_iteration`` (re-tailored at every planner iteration along the prediction under the
    mean of that iteration's candidates). Needs a Noether checkpoint."""
    tailor_steps: int | None = None
    """Inner steps K; ``None``: the checkpoint's test-time setting."""
    tailor_history: int | None = None
    """Observed frames the tailoring starts from (≥ the model's ``P``): more frames let the
    conservation loss see more of the episode; ``None``: ``P``."""
    exploration_std: float = 0.0
    """Gaussian noise added to every applied action, in half-ranges of the action box (data
    collection); 0 for evaluation."""
    exploration_correlation: float = 0.0
    """That noise's correlation from one step to the next, in ``[0, 1)``: 0 is white noise,
    0.9 pushes for about 10 steps (:class:`~noether_control.agents.policies.ExplorationNoise`)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        require_at_least("agent.replan_every", self.replan_every, 1, integer=True)
        require_choice("agent.warmup_action", self.warmup_action, WARMUP_ACTIONS)
        require_choice("agent.tailor", self.tailor, TAILOR_MODES)
        require_at_least("agent.tailor_steps", self.tailor_steps, 0, integer=True, optional=True)
        require_at_least("agent.tailor_history", self.tailor_history, 1, integer=True,
                         optional=True)
        require_at_least("agent.exploration_std", self.exploration_std, 0)
        require_correlation("agent.exploration_correlation", self.exploration_correlation)


class RecedingHorizon:
    """The plan and warm start of ``num_envs`` episodes; the agents' shared MPC loop.

    Args:
        planner: the trajectory optimiser (its ``horizon`` is the plan length ``H``).
        action_space: the single-env ``Box(A,)``.
        num_envs: episodes acted for at once.
        replan_every: plan every this many steps of an episode.
        device: where plans live (the model's device).
    """

    def __init__(self, planner: Planner, action_space: spaces.Space, num_envs: int,
                 replan_every: int, device: torch.device | str = "cpu") -> None:
        box = check_box(action_space)
        self.planner = planner
        self.num_envs = num_envs
        self.replan_every = replan_every
        self.device = torch.device(device)
        self.low = torch.as_tensor(box.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(box.high, dtype=torch.float32, device=self.device)
        self.centre = (self.low + self.high) / 2
        self.plans = self.centre.expand(num_envs, planner.horizon, -1).clone()
        self.chosen = self.plans.clone()
        self.since_plan = np.full(num_envs, replan_every, dtype=np.int64)
        self.generator = torch.Generator(device=self.device)

    def reset(self, mask: np.ndarray) -> None:
        """Forget the plans of the episodes in ``mask``: their next step plans afresh."""
        index = torch.as_tensor(np.flatnonzero(mask), device=self.device)
        self.plans[index] = self.centre
        self.since_plan[mask] = self.replan_every

    def due(self, ready: np.ndarray) -> np.ndarray:
        """Episodes (bool ``(num_envs,)``) among ``ready`` whose plan is due this step."""
        return ready & (self.since_plan >= self.replan_every)

    def step(self, ready: np.ndarray, objective_for: Callable[[np.ndarray, Tensor], Objective],
             seed: int, propose: Callable[[np.ndarray], Tensor] | None = None) -> Tensor:
        """Plan where due, return the first actions ``(num_envs, A)`` and shift every plan.

        ``objective_for(indices, warm_start)`` builds the objective of the due episodes
        ``indices`` (their warm starts ``(E_due, H, A)`` given, e.g. to tailor a model to);
        ``seed`` seeds the planner's generator for this step. ``propose(indices)``, if given,
        returns other plans ``(E_due, H, A)`` (a policy's rollout): an episode's search starts
        from it instead of the shifted previous plan where the objective values it higher.
        Episodes not ``ready`` get the centre of the box here (the caller overrides them).
        """
        due = self.due(ready)
        if due.any():
            indices = np.flatnonzero(due)
            index = torch.as_tensor(indices, device=self.device)
            warm = self.plans[index]
            self.generator.manual_seed(seed)
            with torch.no_grad():
                objective = objective_for(indices, warm)
                if propose is not None:
                    warm = self._better_start(objective, warm, propose(indices))
                plans = self.planner.plan(objective, warm, self.generator)
            self.plans[index] = plans.detach().to(self.plans.dtype)
            self.since_plan[due] = 0
        actions = torch.where(torch.as_tensor(ready, device=self.device)[:, None],
                              self.plans[:, 0], self.centre)
        self.chosen = self.plans
        self.plans = torch.cat([self.plans[:, 1:], self.centre.expand(self.num_envs, 1, -1)], 1)
        self.since_plan += 1
        return actions

    def _better_start(self, objective: Objective, warm: Tensor, proposal: Tensor) -> Tensor:
        """Per episode, whichever of ``warm`` and ``proposal`` ``(E, H, A)`` ``objective``
        values higher (the warm start on ties), clipped to the action box."""
        if proposal.shape != warm.shape:
            raise ValueError(f"proposal: expected plans of shape {tuple(warm.shape)}, got "
                             f"{tuple(proposal.shape)}")
        proposal = torch.clamp(proposal.to(warm), self.low, self.high)
        returns = objective(torch.stack([warm, proposal], dim=1))
        return torch.where((returns[:, 1] > returns[:, 0])[:, None, None], proposal, warm)


class _Agent(ABC):
    """What both agents share: the SB3 ``predict`` adapter and exploration noise."""

    num_envs: int
    loop: RecedingHorizon
    noise: ExplorationNoise
    _rng: np.random.Generator

    @abstractmethod
    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, A)`` for the batched ``observation``."""

    @abstractmethod
    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Restart the episodes where ``mask`` (bool ``(num_envs,)``) is true."""

    def _explore(self, actions: Tensor, rng: np.random.Generator) -> Tensor:
        """``actions`` plus the exploration noise, clipped to the action box."""
        if self.noise.std == 0:
            return actions
        return torch.as_tensor(self.noise(actions.cpu().numpy(), rng), device=actions.device)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Stable-Baselines3's policy API: ``(actions (num_envs, A), state)``.

        ``episode_start`` (bool ``(num_envs,)``) resets those episodes first; the agent keeps
        its own state, so ``state`` is returned unchanged. ``deterministic`` is accepted for
        compatibility: the planner's sampling is seeded from the agent's generator either way.
        """
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=np.bool_).reshape(self.num_envs)
            if starts.any():
                self.reset(starts)
        return self.act(observation, self._rng), state


class MPCAgent(_Agent):
    """MPC through a learned world model from pixel observations (see the module docstring).

    Args:
        model: the world model (eval mode, on its device); ``config.image_size`` and
            ``action_dim`` must match the env's.
        planner: optimises the plan; its horizon is the plan length.
        action_space: the single-env ``Box(A,)``.
        num_envs: sub-environments acted for at once.
        context_frames: ``P``, the frames the model reads before the decision action (its
            training ``n_past``).
        config: replanning, warm-up, tailoring and exploration settings.
        noether: g_φ of a Noether checkpoint (needed when ``config.tailor != "none"``).
        seed: seeds :meth:`predict`'s generator (``act`` takes the caller's).
        record: keep the imagined frames of the chosen plan for the first ``record``
            episodes after every plan (:attr:`imagined`), for videos.
        guide: an actor and critic trained in ``model``: the actor's plan through the model
            competes with the shifted previous plan as the warm start, and the critic's value
            of the state each candidate ends in is added to its return (untailored models).
    """

    def __init__(self, model: SVGWorldModel, planner: Planner, action_space: spaces.Space,
                 num_envs: int, context_frames: int, config: MPCConfig | None = None,
                 noether: NoetherModule | None = None, seed: int = 0, record: int = 0,
                 guide: LatentGuide | None = None) -> None:
        config = config or MPCConfig()
        config.validate()
        if guide is not None and config.tailor != "none":
            raise ValueError(f"agent.tailor={config.tailor!r}: a guide plans through the "
                             "untailored model it was trained in; use agent.tailor=none")
        box = check_box(action_space)
        if box.shape[0] != model.config.action_dim:
            raise ValueError(f"action space: the model was trained on {model.config.action_dim}-"
                             f"dimensional actions, got the env's {box.shape[0]}")
        if context_frames < 1:
            raise ValueError(f"context_frames: expected >= 1, got {context_frames}")
        if config.tailor != "none":
            if noether is None:
                raise ValueError(
                    f"agent.tailor={config.tailor!r}: expected a Noether checkpoint (trained with "
                    "noether=default, it holds g_φ), got a baseline checkpoint; use agent.tailor="
                    "none"
                )
            shortest = noether.config.min_horizon(context_frames)
            if planner.horizon < shortest:
                raise ValueError(f"planner.horizon: tailoring along the plan needs >= {shortest} "
                                 f"predicted frames, got {planner.horizon}")
        self.model = model
        self.noether = noether
        self.guide = guide
        self.config = config
        self.num_envs = num_envs
        self.context_frames = context_frames
        self.history = max(context_frames, config.tailor_history or context_frames)
        self.tailor_steps = self._tailor_steps()
        device = next(model.parameters()).device
        self.loop = RecedingHorizon(planner, box, num_envs, config.replan_every, device)
        self.noise = ExplorationNoise(config.exploration_std, config.exploration_correlation,
                                      num_envs, box.low, box.high)
        size, channels = model.config.image_size, model.config.channels
        self.frames = torch.zeros(num_envs, self.history, size, size, channels, dtype=torch.uint8,
                                  device=device)
        self.actions = self.loop.centre.expand(num_envs, self.history - 1, -1).clone()
        self.seen = np.zeros(num_envs, dtype=np.int64)
        self.record = min(record, num_envs)
        self.imagined: Tensor | None = None
        self._rng = np.random.default_rng(seed)

    def _tailor_steps(self) -> int:
        if self.noether is None or self.config.tailor == "none":
            return 0
        return self.noether.config.test_steps(self.config.tailor_steps)

    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Clear the frames, actions and warm start of the episodes in ``mask``."""
        mask = check_mask(mask, self.num_envs)
        self.seen[mask] = 0
        index = torch.as_tensor(np.flatnonzero(mask), device=self.frames.device)
        self.frames[index] = 0
        self.actions[index] = self.loop.centre
        self.loop.reset(mask)
        self.noise.reset(mask)
        if mask[: self.record].any():
            self.imagined = None

    def _push_frames(self, observation: Any) -> None:
        """Append each episode's newest frame (an episode's first fills its whole history)."""
        pixels = observation["pixels"] if isinstance(observation, dict) else observation
        pixels = torch.as_tensor(np.asarray(pixels), device=self.frames.device)
        expected = (self.num_envs, *self.frames.shape[2:])
        if pixels.dtype != torch.uint8 or tuple(pixels.shape) != expected:
            raise ValueError(
                f"observation: expected uint8 pixels {expected} (the model was trained on "
                f"{self.model.config.image_size}px frames), got {pixels.dtype} "
                f"{tuple(pixels.shape)}"
            )
        first = torch.as_tensor(self.seen == 0, device=self.frames.device)
        shifted = torch.cat([self.frames[:, 1:], pixels[:, None]], dim=1)
        self.frames = torch.where(first[:, None, None, None, None],
                                  pixels[:, None].expand_as(self.frames), shifted)
        self.seen += 1

    def _planning_model(self, index: Tensor, plan: Tensor) -> PlanningModel:
        """The plain model, or the model tailored to episodes ``index`` along ``plan``."""
        if self.tailor_steps == 0 or self.noether is None:
            return self.model
        frames = self.frames[index]
        actions = self.actions[index]
        seen = int(self.seen[index.cpu().numpy()].min())
        # tailor from the frames these episodes have all seen (at least P: a short history
        # repeats its first frame)
        length = max(self.context_frames, min(self.history, seen))
        return tailor_to_plan(self.noether, self.model, frames[:, -length:],
                              actions[:, actions.shape[1] - (length - 1):], plan,
                              self.tailor_steps)

    def context(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The last ``P`` frames of episodes ``index`` and the ``P - 1`` actions between."""
        past = self.actions.shape[1] - (self.context_frames - 1)
        return self.frames[index, -self.context_frames:], self.actions[index, past:]

    def _objective(self, indices: np.ndarray, warm: Tensor) -> Objective:
        index = torch.as_tensor(indices, device=self.frames.device)
        context, past = self.context(index)

        value = None if self.guide is None or self.guide.value_weight == 0 else self.guide.value

        def score(model: PlanningModel, candidates: Tensor) -> Tensor:
            state = model.encode_context(context, past)
            return plan_returns(model, state, candidates, terminal_value=value,
                                value_window=None if self.guide is None else self.guide.window)

        if self.config.tailor == "per_iteration":
            return lambda candidates: score(
                self._planning_model(index, candidates.mean(dim=1).detach()), candidates)
        model = self._planning_model(index, warm)
        return lambda candidates: score(model, candidates)

    def _proposal(self, indices: np.ndarray) -> Tensor:
        """The guide's plans ``(E, H, A)`` through the model from episodes ``indices``."""
        assert self.guide is not None
        context, past = self.context(torch.as_tensor(indices, device=self.frames.device))
        return self.guide.propose(context, past, self.loop.planner.horizon)

    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, A)`` for the batched pixel ``observation``.

        ``observation``: uint8 ``(num_envs, S, S, C)`` frames (or a dict with ``"pixels"``).
        """
        self._push_frames(observation)
        ready = self.seen >= (1 if self.config.warmup_action == "plan" else self.context_frames)
        due = self.loop.due(ready)
        propose = None if self.guide is None else self._proposal
        actions = self.loop.step(ready, self._objective, int(rng.integers(2**62)), propose)
        if not ready.all():
            warmup = self._warmup(rng)
            actions = torch.where(torch.as_tensor(ready, device=actions.device)[:, None],
                                  actions, warmup)
        if self.record and due[: self.record].any():
            self._imagine()
        actions = self._explore(actions, rng)
        self.actions = torch.cat([self.actions[:, 1:], actions[:, None]], dim=1)[
            :, : self.history - 1]
        return actions.cpu().numpy().astype(np.float32)

    def _warmup(self, rng: np.random.Generator) -> Tensor:
        if self.config.warmup_action == "zero":
            return self.loop.centre.expand(self.num_envs, -1)
        unit = torch.as_tensor(rng.uniform(size=(self.num_envs, self.loop.low.shape[0])),
                               dtype=torch.float32, device=self.loop.low.device)
        return self.loop.low + unit * (self.loop.high - self.loop.low)

    def _imagine(self) -> None:
        """Decode what the model imagines under the chosen plans of the recorded episodes."""
        index = torch.arange(self.record, device=self.frames.device)
        plan = self.loop.chosen[index]
        context, past = self.context(index)
        model = self._planning_model(index, plan)
        with torch.no_grad():
            state = model.encode_context(context, past)
            self.imagined = model.rollout(state, plan, decode=True).frames


class OracleAgent(_Agent):
    """MPC through the true simulator from the true state of a native vector env.

    Args:
        env: the :class:`~noether_control.envs.vector.PixelVectorEnv` acted in (its ``states``,
            ``physical_parameters`` and ``system`` are read at every plan).
        planner: optimises the plan through the true dynamics.
        replan_every: plan every this many steps.
        exploration_std: Gaussian action noise in half-ranges (0 for evaluation).
        exploration_correlation: that noise's step-to-step correlation in ``[0, 1)``.
        seed: seeds :meth:`predict`'s generator.
        terminal_value: optional value of the state each candidate ends in, added to its return
            (see :func:`~noether_control.agents.oracle.true_dynamics_objective`).
        proposal_policy: optional ``policy(states (E, D) float64) -> actions (E, A)``; its
            rollout through the true dynamics competes with the shifted previous plan as the
            planner's warm start (:meth:`RecedingHorizon.step`).
    """

    def __init__(self, env: Any, planner: Planner, replan_every: int = 1,
                 exploration_std: float = 0.0, seed: int = 0,
                 exploration_correlation: float = 0.0,
                 terminal_value: Callable[[np.ndarray], np.ndarray] | None = None,
                 proposal_policy: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        vector = getattr(env, "unwrapped", env)
        if not isinstance(vector, PixelVectorEnv):
            raise TypeError(f"oracle: expected a native noether-control vector env (its true "
                            f"states are read), got {type(vector).__name__}")
        self.env = vector
        self.num_envs = vector.num_envs
        self.loop = RecedingHorizon(planner, vector.single_action_space, self.num_envs,
                                    replan_every)
        box = vector.single_action_space
        self.noise = ExplorationNoise(exploration_std, exploration_correlation, self.num_envs,
                                      box.low, box.high)
        self._rng = np.random.default_rng(seed)
        self.terminal_value = terminal_value
        self.proposal_policy = proposal_policy

    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Forget the plans (and exploration noise) of the episodes in ``mask``."""
        self.loop.reset(check_mask(mask, self.num_envs))
        self.noise.reset(mask)

    def _objective(self, indices: np.ndarray, warm: Tensor) -> Objective:
        return true_dynamics_objective(self.env.system, self.env.states[indices],
                                       self.env.physical_parameters[indices], self.loop.device,
                                       self.terminal_value)

    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, A)``; the observation is ignored (the state is read)."""
        ready = np.ones(self.num_envs, dtype=np.bool_)
        propose = None if self.proposal_policy is None else self._proposal
        actions = self.loop.step(ready, self._objective, int(rng.integers(2**62)), propose)
        return self._explore(actions, rng).cpu().numpy().astype(np.float32)

    def _proposal(self, indices: np.ndarray) -> Tensor:
        assert self.proposal_policy is not None
        plans = policy_rollout(self.env.system, self.env.states[indices],
                               self.env.physical_parameters[indices], self.proposal_policy,
                               self.loop.planner.horizon)
        return torch.as_tensor(plans, dtype=torch.float32, device=self.loop.device)
