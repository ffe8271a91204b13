"""Environments stepped inside a learned world model, for reinforcement-learning agents.

:class:`WorldModelVecEnv` is a Stable-Baselines3 ``VecEnv`` whose ``num_envs`` episodes all
advance in one model call per step (no Python loop over envs); :class:`WorldModelEnv` is the
single-episode ``gymnasium.Env`` over the same machinery. An imagined episode starts from the
latent state of ``P`` real context frames (and the ``P − 1`` actions between them) drawn from a
dataset's episodes, applies each action through the model (:meth:`SVGWorldModel.advance`), is
rewarded by the model's reward head, and is truncated after ``horizon`` steps: short rollouts
from real states, as in MBPO, because the model's error grows with the horizon.

Observations (``observation``):

- ``latent`` (default): :meth:`WorldState.latent`, the code ⊕ recurrent state, float32. The
  real-env side (:class:`LatentHistory`, :class:`LatentPolicyAgent`) encodes the last ``P`` real
  frames into the same vector, so a policy trained here runs on the real env unchanged;
- ``frames``: the last ``frame_stack`` decoded frames, uint8 ``(S, S, C · frame_stack)``
  (decoding costs a decoder call per step; nothing is decoded for ``latent``).

With a Noether checkpoint every imagined episode is tailored when it starts: ``tailor_steps``
inner steps make g_φ conserved along the prediction from its context frames under the centre of
the action box for ``horizon`` steps (no future action is known at reset; this is the MPC
agent's warm start at an episode's first plan), and the episode is stepped with its own
parameters to the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices
from torch import Tensor

from noether_control.agents.policies import check_box, check_mask, explore
from noether_control.data.windows import EpisodeWindows
from noether_control.models.svg import SVGWorldModel, WorldState, as_model_frames
from noether_control.noether.meta import NoetherModule
from noether_control.noether.planning import tailor_to_plan
from noether_control.noether.tailoring import Params
from noether_control.runtime import require_at_least, require_choice

OBSERVATIONS = ("latent", "frames")


@dataclass
class ModelEnvConfig:
    """An imagined environment's settings (group ``model_env``)."""

    horizon: int = 15
    """Steps before an imagined episode is truncated (MBPO-style short rollouts)."""
    observation: str = "latent"
    """``latent`` (code ⊕ recurrent state, float32) or ``frames`` (decoded, uint8, stacked)."""
    frame_stack: int = 2
    """Decoded frames per observation with ``observation=frames`` (2 show a velocity)."""
    split: str = "train"
    """Dataset split whose episodes the starting contexts are drawn from."""
    tailor_steps: int | None = None
    """Noether checkpoints: inner steps at each episode's start; ``None``: the checkpoint's
    test-time K; 0: untailored."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        require_at_least("model_env.horizon", self.horizon, 1, integer=True)
        require_choice("model_env.observation", self.observation, OBSERVATIONS)
        require_at_least("model_env.frame_stack", self.frame_stack, 1, integer=True)
        require_at_least("model_env.tailor_steps", self.tailor_steps, 0, integer=True,
                         optional=True)


class ContextSampler:
    """Draws ``P``-frame contexts from a dataset's episodes (any start, uniformly).

    Args:
        windows: an :class:`EpisodeWindows` of ``P`` frames with stride 1 (every start).
    """

    def __init__(self, windows: EpisodeWindows) -> None:
        if len(windows) < 1:
            raise ValueError("contexts: expected a split with at least one window of the model's "
                             "context length, got none")
        self.windows = windows
        self._codes: dict[int, Tensor] = {}
        self._actions: dict[int, Tensor] = {}

    @classmethod
    def from_dataset(cls, path: str, n_past: int, split: str = "train",
                     split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     split_seed: int = 0) -> ContextSampler:
        """The contexts of ``split`` of the dataset at ``path`` (as the model was trained)."""
        return cls(EpisodeWindows(path, n_past, split, stride=1,
                                  split_fractions=tuple(split_fractions), seed=split_seed))

    def draw(self, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """One context: frames float ``(P, C, S, S)`` in [0, 1] and the ``(P − 1, A)`` actions
        between them."""
        item = self.windows[int(rng.integers(len(self.windows)))]
        return item["frames"], item["actions"][:-1]

    @torch.no_grad()
    def draw_codes(self, rng: np.random.Generator, model: SVGWorldModel) -> tuple[Tensor, Tensor]:
        """The context :meth:`draw` would draw with the same generator state, as ``model``'s
        codes ``(P, g_dim)`` and the ``(P − 1, A)`` actions. Every episode is encoded once, on
        first use, so an episode restart costs no encoder pass."""
        episode_id, start = self.windows.window_index(int(rng.integers(len(self.windows))))
        if episode_id not in self._codes:
            device = next(model.parameters()).device
            episode = self.windows.episode(episode_id)
            frames = episode["frames"].to(device)
            self._codes[episode_id] = torch.cat(
                [model.encode(chunk)[0] for chunk in frames.split(256)])
            self._actions[episode_id] = episode["actions"].to(device)
        steps = slice(start, start + self.windows.window)
        return self._codes[episode_id][steps], self._actions[episode_id][steps][:-1]


class WorldModelVecEnv(VecEnv):
    """``num_envs`` imagined episodes stepped together through a world model (see the module).

    Args:
        model: the world model (eval mode, on its device); needs a reward head.
        contexts: where episodes start.
        action_space: the real env's single-env ``Box(A,)`` (actions are clipped to it).
        num_envs: episodes stepped at once.
        config: horizon, observation, Noether tailoring.
        seed: env ``i`` draws its starting contexts from a generator seeded ``seed + i``, so
            env ``i`` of a vector env with seed ``s`` equals a single env with seed ``s + i``.
        noether: g_φ of a Noether checkpoint (tailors each episode at its start).
        autoreset: restart an env's episode in the step that ends it (SB3's convention: the
            last observation goes to ``infos[i]["terminal_observation"]``); ``False`` leaves it
            ended until :meth:`reset` (what a single gymnasium env does).
    """

    def __init__(self, model: SVGWorldModel, contexts: ContextSampler, action_space: spaces.Space,
                 num_envs: int, config: ModelEnvConfig | None = None, seed: int = 0,
                 noether: NoetherModule | None = None, autoreset: bool = True) -> None:
        config = config or ModelEnvConfig()
        config.validate()
        box = check_box(action_space)
        if not model.config.reward_head:
            raise ValueError("checkpoint: expected a world model with a reward head "
                             "(model.reward_head=true) to reward imagined steps, got none")
        if box.shape[0] != model.config.action_dim:
            raise ValueError(f"action space: the model was trained on {model.config.action_dim}-"
                             f"dimensional actions, got {box.shape[0]}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
        self.model, self.contexts, self.config, self.noether = model, contexts, config, noether
        self.autoreset = autoreset
        self.device = next(model.parameters()).device
        self.tailor_steps = self._tailor_steps()
        size, channels = model.config.image_size, model.config.channels
        if config.observation == "latent":
            observation_space: spaces.Space = spaces.Box(-np.inf, np.inf,
                                                         (model.config.latent_size,), np.float32)
        else:
            observation_space = spaces.Box(0, 255, (size, size, channels * config.frame_stack),
                                           np.uint8)
        self.render_mode = None  # imagined episodes are not rendered
        super().__init__(num_envs, observation_space, box)
        self.low = torch.as_tensor(box.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(box.high, dtype=torch.float32, device=self.device)
        self._rngs = [np.random.default_rng(seed + i) for i in range(num_envs)]
        self.state: WorldState | None = None
        self.adapt: Params | None = None
        self.stack = torch.zeros(num_envs, config.frame_stack, channels, size, size,
                                 device=self.device)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None

    def _tailor_steps(self) -> int:
        if self.noether is None:
            if self.config.tailor_steps:
                raise ValueError(f"model_env.tailor_steps={self.config.tailor_steps}: expected a "
                                 "Noether checkpoint (it holds g_φ), got a baseline checkpoint")
            return 0
        return self.noether.config.test_steps(self.config.tailor_steps)

    # ------------------------------------------------------------------ episodes
    def _from_codes(self) -> bool:
        """Whether episodes can start from cached codes: nothing about a start needs its frames
        (no tailoring, no frame stack, no decoder skips)."""
        return (self.tailor_steps == 0 and self.config.observation == "latent"
                and not self.model.config.skips)

    @torch.no_grad()
    def _start(self, indices: np.ndarray) -> None:
        """Begin new imagined episodes in the envs ``indices`` (their own generators draw)."""
        index = torch.as_tensor(indices, device=self.device)
        fresh = self._context_codes(indices) if self._from_codes() else \
            self._context_frames(indices, index)
        # one observed flag per batch: a restarted row's code is then read like a predicted one
        # (identical with latent feedback; with pixel feedback it passes through the pixels)
        fresh = fresh._replace(observed=False)
        self.state = fresh if self.state is None else self.state.with_rows(index, fresh)
        self.elapsed[indices] = 0

    def _context_codes(self, indices: np.ndarray) -> WorldState:
        """The starting states of envs ``indices`` from the dataset's cached codes."""
        drawn = [self.contexts.draw_codes(self._rngs[i], self.model) for i in indices]
        codes = torch.stack([c for c, _ in drawn]).to(self.device, torch.float32)
        past = torch.stack([a for _, a in drawn]).to(self.device, torch.float32)
        return self.model.context_from_codes(codes, past)

    def _context_frames(self, indices: np.ndarray, index: Tensor) -> WorldState:
        """The starting states of envs ``indices`` from their context frames: tailored to them
        (Noether), and their frame stacks filled (``observation=frames``)."""
        drawn = [self.contexts.draw(self._rngs[i]) for i in indices]
        frames = torch.stack([f for f, _ in drawn]).to(self.device, torch.float32)
        actions = torch.stack([a for _, a in drawn]).to(self.device, torch.float32)
        adapt = None
        if self.tailor_steps > 0 and self.noether is not None:
            centre = ((self.low + self.high) / 2).expand(len(indices), self.config.horizon, -1)
            with torch.enable_grad():
                adapt = tailor_to_plan(self.noether, self.model, frames, actions, centre,
                                       self.tailor_steps).params
            self.adapt = adapt if self.adapt is None else {
                name: value.index_copy(0, index, adapt[name]) for name, value in
                self.adapt.items()}
        if self.config.observation == "frames":
            context = as_model_frames(frames, self.model.config)
            take = min(self.config.frame_stack, context.shape[1])
            self.stack[index] = 0
            self.stack[index, -take:] = context[:, -take:]
        return self.model.encode_context(frames, actions, adapt)

    def _observations(self) -> np.ndarray:
        assert self.state is not None
        if self.config.observation == "latent":
            return self.state.latent().float().cpu().numpy()
        pixels = self.stack.clamp(0, 1).mul(255).round().to(torch.uint8)
        # (N, K, C, S, S) -> (N, S, S, K·C): frames stacked on channels, HWC as SB3 expects
        return pixels.permute(0, 3, 4, 1, 2).flatten(3).cpu().numpy()

    def reset(self) -> np.ndarray:
        """Start every env's episode; observations ``(num_envs, *observation_space.shape)``."""
        self.state, self.adapt = None, None
        self._start(np.arange(self.num_envs))
        return self._observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)

    @torch.no_grad()
    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self.state is None or self._actions is None:
            raise RuntimeError("step: expected reset() before the first step")
        actions = torch.as_tensor(self._actions, device=self.device)
        actions = torch.maximum(torch.minimum(actions, self.high), self.low)
        rewards, self.state = self.model.advance(self.state, actions[:, None], self.adapt)
        if self.config.observation == "frames":
            frame = self.model.decode(self.state.code, self.state.skips, self.adapt)
            self.stack = torch.cat([self.stack[:, 1:], frame[:, None]], dim=1)
        self.elapsed += 1
        observations = self._observations()
        dones = self.elapsed >= self.config.horizon
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(dones)
        for i in ended:
            infos[i] = {"terminal_observation": observations[i].copy(),
                        "TimeLimit.truncated": True}
        if ended.size and self.autoreset:
            self._start(ended)
            observations[ended] = self._observations()[ended]
        return observations, rewards[:, 0].float().cpu().numpy(), dones, infos

    # ------------------------------------------------------------------ VecEnv plumbing
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Re-seed env ``i``'s context generator with ``seed + i``."""
        if seed is None:
            return [None] * self.num_envs
        self._rngs = [np.random.default_rng(seed + i) for i in range(self.num_envs)]
        return [seed + i for i in range(self.num_envs)]

    def close(self) -> None:
        """Nothing to release: the model lives with its owner."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class WorldModelEnv(gym.Env):
    """One imagined episode at a time: a ``gymnasium.Env`` over :class:`WorldModelVecEnv`.

    Same arguments as :class:`WorldModelVecEnv` without ``num_envs``. ``reset(seed=s)`` re-seeds
    the context generator with ``s``; an episode is truncated after ``config.horizon`` steps.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, model: SVGWorldModel, contexts: ContextSampler, action_space: spaces.Space,
                 config: ModelEnvConfig | None = None, seed: int = 0,
                 noether: NoetherModule | None = None) -> None:
        self.vector = WorldModelVecEnv(model, contexts, action_space, 1, config, seed, noether,
                                       autoreset=False)
        self.observation_space = self.vector.observation_space
        self.action_space = self.vector.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.vector.seed(seed)
        return self.vector.reset()[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        observations, rewards, dones, _ = self.vector.step(np.asarray(action)[None])
        return observations[0], float(rewards[0]), False, bool(dones[0]), {}


@torch.no_grad()
def episode_latents(model: SVGWorldModel, codes: Tensor, actions: Tensor, context_frames: int,
                    centre: Tensor, skips: list[Tensor] | None = None, chunk: int = 1024
                    ) -> Tensor:
    """What :class:`LatentHistory` gives before every decision of one real episode, at once.

    ``codes``: ``(T, g_dim)``, :meth:`SVGWorldModel.encode` of the episode's ``T`` frames;
    ``actions``: ``(T − 1, A)``, action ``t`` applied to frame ``t``; ``centre``: ``(A,)``, the
    action assumed between the repeated first frame before ``P`` frames are seen; ``skips``:
    the frames' encoder features ``(T, …)`` (needed by a model with skips). Returns
    ``(T, latent size)`` float32: row ``t`` is the state after frame ``t``, the encoding of the
    last ``P`` frames (windows of ``chunk`` steps go through the model together).
    """
    steps = codes.shape[0]
    if actions.shape[0] != steps - 1:
        raise ValueError(f"actions: expected {steps - 1} actions between {steps} frames, got "
                         f"{actions.shape[0]}")
    width = context_frames
    padded_codes = torch.cat([codes[:1].expand(width - 1, -1), codes])
    padded_actions = torch.cat([centre.to(actions).expand(width - 1, -1), actions])
    window = torch.arange(steps, device=codes.device)[:, None] + torch.arange(
        width, device=codes.device)
    latents = []
    for rows in window.split(chunk):
        last = None if skips is None else [features[rows[:, -1] - (width - 1)]
                                           for features in skips]
        state = model.context_from_codes(padded_codes[rows], padded_actions[rows[:, :-1]], last)
        latents.append(state.latent())
    return torch.cat(latents).float()


class LatentHistory:
    """The real env's side of the latent observation: the state an imagined episode starts from.

    An imagined episode starts from :meth:`SVGWorldModel.encode_context` of ``P`` real frames and
    the ``P − 1`` actions between them. Here, at every step of each real episode, the state is
    that same encoding of the episode's last ``P`` frames (before ``P`` frames are seen, the
    first frame repeated with centre actions between), so a policy trained on imagined states
    sees real states of the kind it was trained on. Each frame is encoded once; every step then
    replays the ``P − 1`` recurrent steps from the cached codes.

    Why not filter (advance the model with each action and take the observed frame's code): an
    LSTM state advanced through a 200-step episode drifts out of the range of any imagined one.
    Measured on an 8000-step pendulum model (``benchmarks/latent_age.py``): filtered, the cell
    state's norm grows with the episode's age (17 after 3 steps, 126 after 50, 450 after 199,
    against at most 76 in 15-step imagined episodes) and the state's distance to the nearest
    imagined one from 3.9 to 143 (imagined states lie 4.2 apart); this window stays at 12–18
    and 3.8–6.8.

    Args:
        model: the world model the policy was trained in.
        context_frames: ``P`` (its training ``n_past``).
        num_envs: real episodes tracked at once.
        centre: the action assumed between repeated warm-up frames ``(A,)``.
    """

    def __init__(self, model: SVGWorldModel, context_frames: int, num_envs: int,
                 centre: Tensor) -> None:
        self.model, self.context_frames, self.num_envs = model, context_frames, num_envs
        device = next(model.parameters()).device
        self.frame_shape = (model.config.image_size, model.config.image_size,
                            model.config.channels)
        self.codes = torch.zeros(num_envs, context_frames, model.config.g_dim, device=device)
        self.centre = centre.to(device)
        self.actions = self.centre.expand(num_envs, max(context_frames - 1, 0), -1).clone()
        self.seen = np.zeros(num_envs, dtype=np.int64)
        self.state: WorldState | None = None

    def reset(self, mask: np.ndarray) -> None:
        """Forget the episodes in ``mask``."""
        mask = check_mask(mask, self.num_envs)
        index = torch.as_tensor(np.flatnonzero(mask), device=self.codes.device)
        self.seen[mask] = 0
        self.actions[index] = self.centre

    @torch.no_grad()
    def push(self, pixels: np.ndarray) -> None:
        """Add each episode's newest frame, uint8 ``(num_envs, S, S, C)``, and update its state."""
        frames = torch.as_tensor(np.asarray(pixels), device=self.codes.device)
        expected = (self.num_envs, *self.frame_shape)
        if frames.dtype != torch.uint8 or tuple(frames.shape) != expected:
            raise ValueError(f"observation: expected uint8 pixels {expected} (the model's "
                             f"frames), got {frames.dtype} {tuple(frames.shape)}")
        code, skips = self.model.encode(as_model_frames(frames[:, None], self.model.config)[:, 0])
        first = torch.as_tensor(self.seen == 0, device=self.codes.device)
        repeated = code[:, None].expand_as(self.codes)
        shifted = torch.cat([self.codes[:, 1:], code[:, None]], dim=1)
        self.codes = torch.where(first[:, None, None], repeated, shifted)
        self.seen += 1
        self.state = self.model.context_from_codes(self.codes, self.actions, skips)

    def record(self, actions: Tensor) -> None:
        """The actions ``(num_envs, A)`` just applied (they follow the newest frame)."""
        if self.context_frames > 1:
            self.actions = torch.cat([self.actions[:, 1:], actions.to(self.actions)[:, None]], 1)

    def latent(self) -> Tensor:
        """``(num_envs, latent size)`` float32, the state before the next decision."""
        if self.state is None:
            raise RuntimeError("latent: expected a pushed frame first")
        return self.state.latent().float()


class LatentPolicyAgent:
    """A policy trained in :class:`WorldModelVecEnv` (latent observations) acting on the real
    pixel env: our batched policy protocol (``act``, ``reset``), for the evaluation harness.

    Args:
        policy: anything with SB3's ``predict(observation, deterministic=True)``.
        model: the world model it was trained in.
        action_space: the real env's single-env ``Box(A,)``.
        num_envs: sub-envs acted for at once.
        context_frames: the model's ``P``.
        exploration_std: Gaussian noise on every action, in half-ranges of the action box
            (data collection; 0 for evaluation), drawn from the ``rng`` given to :meth:`act`.
    """

    def __init__(self, policy: Any, model: SVGWorldModel, action_space: spaces.Space,
                 num_envs: int, context_frames: int, exploration_std: float = 0.0) -> None:
        box = check_box(action_space)
        require_at_least("exploration_std", exploration_std, 0)
        self.policy, self.num_envs = policy, num_envs
        self.exploration_std = float(exploration_std)
        self.low, self.high = box.low.astype(np.float32), box.high.astype(np.float32)
        centre = torch.as_tensor((box.low + box.high) / 2, dtype=torch.float32)
        self.history = LatentHistory(model, context_frames, num_envs, centre)

    def reset(self, mask: np.ndarray, rng: np.random.Generator | None = None) -> None:
        """Forget the episodes in ``mask``."""
        self.history.reset(mask)

    def act(self, observation: Any, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, A)`` for the batched pixel ``observation``."""
        pixels = observation["pixels"] if isinstance(observation, dict) else observation
        self.history.push(pixels)
        latent = self.history.latent().cpu().numpy()
        actions, _ = self.policy.predict(latent, deterministic=True)
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        actions = explore(actions, self.exploration_std, self.low, self.high, rng)
        self.history.record(torch.as_tensor(actions))
        return actions
