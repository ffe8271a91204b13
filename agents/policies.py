"""Batched data-collection policies: uniform random, Ornstein–Uhlenbeck and SB3 checkpoints.

Every policy acts for all ``num_envs`` sub-environments of a vector env at once:
``policy.act(observation, rng)`` takes the batched observation of the vector env (a dict
``{"pixels": uint8 (N, H, W, C), "state": float (N, S)}`` when collected with
``obs_type="pixels_state"``, otherwise an array with leading dim ``N``) and returns actions as a
float32 array ``(N, A)`` inside the single-env action bounds. Randomness comes only from the
``np.random.Generator`` passed in, so a seeded generator makes a collection reproducible.

``policy.reset(mask, rng)`` restarts the per-sub-env state (the OU noise) of the sub-envs where
``mask`` (bool ``(N,)``) is true; call it after ``env.reset`` and for sub-envs that start a new
episode.

Each policy has a typed config dataclass mirrored by ``conf/policy/<kind>.yaml``; build one with
:func:`make_policy`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig

from noether_control.runtime import kind_dataclass, require_at_least, resolve_device

Observation = np.ndarray | dict[str, np.ndarray]


@dataclass
class UniformPolicyConfig:
    """Independent uniform random actions in the action bounds at every step."""

    kind: str = "uniform"


@dataclass
class OUPolicyConfig:
    """Smooth random actions from an Ornstein–Uhlenbeck process per sub-env and action dim.

    In units of the half-range of the action box, the noise follows
    ``x_{t+1} = x_t - theta * x_t + sigma * eps_t`` with ``eps_t ~ N(0, 1)``; the action is
    ``centre + half_range * clip(x_t, -1, 1)``. ``1 / theta`` is the correlation time in steps,
    and ``sigma / sqrt(2 theta - theta**2)`` the stationary standard deviation, from which each
    episode's first value is drawn (so the first step already has the stationary spread).
    """

    kind: str = "ou"
    #: mean-reversion rate per step in (0, 1]; 1 gives white noise, small values smooth actions
    theta: float = 0.15
    #: noise scale per step, in half-ranges of the action box (> 0)
    sigma: float = 0.3


@dataclass
class SB3PolicyConfig:
    """Actions of a trained Stable-Baselines3 agent loaded from a ``.zip`` checkpoint."""

    kind: str = "sb3"
    #: path of the checkpoint written by ``model.save(path)``
    path: str = ""
    #: the algorithm class that saved it: ppo | sac | td3 | a2c | ddpg
    algo: str = "ppo"
    #: act with the mean action (True) or sample from the agent's own distribution (False)
    deterministic: bool = True
    #: device for the agent's network: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: a world-model checkpoint (file or train run directory): the agent was trained in that
    #: model by ``noether-control rl`` and acts on its latent state of the env's frames; empty:
    #: the agent acts on the env's own observations
    checkpoint: str = ""
    #: Gaussian noise on every action, in half-ranges of the action box
    exploration_std: float = 0.0


@dataclass
class MPCPolicyConfig:
    """Model-predictive control through a world-model checkpoint, with exploration noise: how
    a model's own planner grows its data where the task needs it (PlaNet's data collection)."""

    kind: str = "mpc"
    #: world-model checkpoint (file or train run directory) to plan through
    checkpoint: str = ""
    #: a planner group node (conf/planner), validated by agents.planners.planner_config
    planner: dict[str, Any] = field(default_factory=lambda: {"kind": "mppi"})
    #: plan every this many steps
    replan_every: int = 1
    #: Gaussian noise on every action, in half-ranges of the action box
    exploration_std: float = 0.3
    #: the noise's correlation from one step to the next, in [0, 1): 0 is white noise; 0.9
    #: pushes for about 10 steps (see ExplorationNoise)
    exploration_correlation: float = 0.0
    #: a SAC policy.zip whose actor proposes plans and whose critic values their ends
    #: (agents/guide.py); null: no guide
    guide_path: str | None = None
    #: weight of the guide's value at the end of each plan (0: its actor proposes only)
    guide_value_weight: float = 1.0
    #: device of the model and planner: auto | cpu | cuda | cuda:N
    device: str = "auto"


PolicyConfig = UniformPolicyConfig | OUPolicyConfig | SB3PolicyConfig | MPCPolicyConfig

POLICY_CONFIGS: dict[str, type[PolicyConfig]] = {
    "uniform": UniformPolicyConfig,
    "ou": OUPolicyConfig,
    "sb3": SB3PolicyConfig,
    "mpc": MPCPolicyConfig,
}

SB3_ALGORITHMS: tuple[str, ...] = ("ppo", "sac", "td3", "a2c", "ddpg")


@runtime_checkable
class Policy(Protocol):
    """A batched policy for ``num_envs`` sub-environments (see the module docstring)."""

    num_envs: int

    def act(self, observation: Observation, rng: np.random.Generator) -> np.ndarray:
        """Actions float32 ``(num_envs, A)`` for the batched ``observation``."""
        ...

    def reset(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        """Restart the per-sub-env state where ``mask`` (bool ``(num_envs,)``) is true."""
        ...


def check_box(action_space: spaces.Space) -> spaces.Box:
    """``action_space`` if it is a 1-D ``Box`` with finite bounds, else a clear error."""
    if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
        raise TypeError(f"expected a 1-D Box action space, got {action_space!r}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"expected finite action bounds, got {action_space!r}")
    return action_space


def _check_num_envs(num_envs: int) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
        raise ValueError(f"num_envs: expected a positive int, got {num_envs!r}")
    return int(num_envs)


def explore(actions: np.ndarray, std: float, low: np.ndarray, high: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """``actions`` float32 ``(N, A)`` plus Gaussian noise of ``std`` half-ranges of the box
    ``[low, high]``, clipped to it (``std = 0``: only clipped; no draw from ``rng``)."""
    if std > 0:
        half = (high - low) / 2
        actions = actions + std * half * rng.standard_normal(actions.shape)
    return np.clip(actions, low, high).astype(np.float32)


def require_correlation(setting: str, correlation: float) -> None:
    """Raise ``ValueError`` naming ``setting`` unless ``0 <= correlation < 1``."""
    if not 0 <= correlation < 1:  # NaN compares False
        raise ValueError(f"{setting}: expected a number in [0, 1), got {correlation!r}")


class ExplorationNoise:
    """Gaussian action noise per sub-env, white or correlated in time.

    In units of ``std`` half-ranges of the action box, the noise of each sub-env and action dim
    follows ``n_t = ρ n_{t-1} + sqrt(1 - ρ²) ε_t`` with ``ε_t ~ N(0, 1)`` and an episode's first
    ``n_0 ~ N(0, 1)``: the spread is ``std`` at every step for any ``ρ``, and ``1 / (1 - ρ)`` is
    about the steps a push lasts. ``ρ = 0`` is :func:`explore`'s white noise, draw for draw.
    White noise around an agent that holds a state (a pendulum upright) averages out within a
    few steps, so the data never shows the state carried away; a correlated push does.

    Args:
        std: the noise's standard deviation in half-ranges (0: actions are only clipped).
        correlation: ``ρ`` in ``[0, 1)``.
        num_envs: sub-envs acted for at once.
        low, high: the action box ``(A,)``.
    """

    def __init__(self, std: float, correlation: float, num_envs: int, low: np.ndarray,
                 high: np.ndarray) -> None:
        require_at_least("exploration_std", std, 0)
        require_correlation("exploration_correlation", correlation)
        self.std = float(std)
        self.correlation = float(correlation)
        self.low = np.asarray(low)
        self.high = np.asarray(high)
        self.state = np.zeros((_check_num_envs(num_envs), self.low.shape[0]))
        self.fresh = np.ones(self.state.shape[0], dtype=np.bool_)

    def reset(self, mask: np.ndarray) -> None:
        """Start the sub-envs in ``mask`` (bool ``(num_envs,)``) afresh: their next draw is
        independent of the last."""
        self.fresh |= check_mask(mask, self.state.shape[0])

    def __call__(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``actions`` float32 ``(num_envs, A)`` plus this step's noise, clipped to the box."""
        if self.correlation == 0 or self.std == 0:
            return explore(actions, self.std, self.low, self.high, rng)
        innovation = rng.standard_normal(self.state.shape)
        carried = self.correlation * self.state + np.sqrt(1 - self.correlation**2) * innovation
        self.state = np.where(self.fresh[:, None], innovation, carried)
        self.fresh[:] = False
        half = (self.high - self.low) / 2
        return np.clip(actions + self.std * half * self.state, self.low, self.high).astype(
            np.float32)


def check_mask(mask: np.ndarray, num_envs: int) -> np.ndarray:
    """``mask`` as a bool ``(num_envs,)`` array, else a ``ValueError`` naming what it got."""
    mask = np.asarray(mask)
    if mask.shape != (num_envs,) or mask.dtype != np.bool_:
        raise ValueError(f"mask: expected bool ({num_envs},), got {mask.dtype} {mask.shape}")
    return mask


class UniformPolicy:
    """Actions drawn independently and uniformly from the action box at every step.

    Args:
        action_space: the single-env ``Box(A,)`` action space (finite bounds).
        num_envs: number of sub-envs acted for at once.
    """

    def __init__(self, action_space: spaces.Space, num_envs: int) -> None:
        box = check_box(action_space)
        self.num_envs = _check_num_envs(num_envs)
        self.low = box.low.astype(np.float32)
        self.high = box.high.astype(np.float32)

    def act(self, observation: Observation, rng: np.random.Generator) -> np.ndarray:
        """Uniform actions float32 ``(num_envs, A)``; ``observation`` is ignored."""
        shape = (self.num_envs, self.low.shape[0])
        return rng.uniform(self.low, self.high, size=shape).astype(np.float32)

    def reset(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        """Nothing to restart: the policy has no state."""
        check_mask(mask, self.num_envs)


class OUPolicy:
    """Temporally correlated random actions from an Ornstein–Uhlenbeck process.

    See :class:`OUPolicyConfig` for the process. The state is ``(num_envs, A)``, in units of
    the action box's half-range, so every action dim gets the same relative smoothness.

    Args:
        action_space: the single-env ``Box(A,)`` action space (finite bounds).
        num_envs: number of sub-envs acted for at once.
        theta: mean-reversion rate per step in ``(0, 1]``.
        sigma: noise scale per step (> 0), in half-ranges of the action box.
    """

    def __init__(
        self, action_space: spaces.Space, num_envs: int, theta: float = 0.15, sigma: float = 0.3
    ) -> None:
        box = check_box(action_space)
        self.num_envs = _check_num_envs(num_envs)
        if not 0.0 < theta <= 1.0:
            raise ValueError(f"theta: expected a rate in (0, 1], got {theta!r}")
        if not sigma > 0.0:
            raise ValueError(f"sigma: expected a positive noise scale, got {sigma!r}")
        self.theta = float(theta)
        self.sigma = float(sigma)
        self.low, self.high = box.low.astype(np.float32), box.high.astype(np.float32)
        self.centre = ((box.high + box.low) / 2).astype(np.float32)
        self.half_range = ((box.high - box.low) / 2).astype(np.float32)
        # stationary variance of x_{t+1} = (1 - theta) x_t + sigma eps: sigma² / (1 - (1-theta)²)
        self.stationary_std = self.sigma / np.sqrt(2 * self.theta - self.theta**2)
        self.noise = np.zeros((self.num_envs, box.shape[0]), dtype=np.float64)
        self._started = np.zeros(self.num_envs, dtype=bool)

    def reset(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        """Draw fresh stationary noise for the sub-envs where ``mask`` is true."""
        mask = check_mask(mask, self.num_envs)
        count = int(mask.sum())
        self.noise[mask] = rng.normal(0.0, self.stationary_std, size=(count, self.noise.shape[1]))
        self._started |= mask

    def act(self, observation: Observation, rng: np.random.Generator) -> np.ndarray:
        """Advance the process one step and return actions float32 ``(num_envs, A)``."""
        if not self._started.all():
            self.reset(~self._started, rng)
        else:
            eps = rng.standard_normal(self.noise.shape)
            self.noise = (1.0 - self.theta) * self.noise + self.sigma * eps
        unit = np.clip(self.noise, -1.0, 1.0)
        # float32 rounding of centre ± half_range can step just past an asymmetric bound
        return np.clip((self.centre + self.half_range * unit).astype(np.float32), self.low,
                       self.high)


class SB3Policy:
    """A Stable-Baselines3 agent acting for every sub-env from the observation it was trained on.

    The agent's ``observation_space`` decides what it sees: a ``Dict`` space gets the matching
    keys of a dict observation; an image ``Box`` (HWC or CHW) gets ``observation["pixels"]``;
    any other ``Box`` gets ``observation["state"]``. Plain array observations are passed as is.
    Its actions are clipped to the env's action bounds.

    Args:
        model: a loaded SB3 ``BaseAlgorithm`` (see :meth:`load`).
        action_space: the single-env ``Box(A,)`` action space.
        num_envs: number of sub-envs acted for at once.
        deterministic: use the mean action instead of sampling.
    """

    def __init__(
        self, model: Any, action_space: spaces.Space, num_envs: int, deterministic: bool = True,
        exploration_std: float = 0.0,
    ) -> None:
        box = check_box(action_space)
        require_at_least("policy.exploration_std", exploration_std, 0)
        self.num_envs = _check_num_envs(num_envs)
        model_actions = model.action_space
        if not isinstance(model_actions, spaces.Box) or model_actions.shape != box.shape:
            raise ValueError(
                f"SB3 agent: expected an action space Box{box.shape} like the env's, "
                f"got {model_actions!r}"
            )
        self.model = model
        self.low = box.low.astype(np.float32)
        self.high = box.high.astype(np.float32)
        self.deterministic = deterministic
        self.exploration_std = float(exploration_std)

    @classmethod
    def load(
        cls,
        path: str | Path,
        algo: str,
        action_space: spaces.Space,
        num_envs: int,
        *,
        deterministic: bool = True,
        device: str = "auto",
        exploration_std: float = 0.0,
    ) -> SB3Policy:
        """Load an SB3 checkpoint saved by ``algo`` (ppo | sac | td3 | a2c | ddpg)."""
        if algo not in SB3_ALGORITHMS:
            raise ValueError(f"algo: expected one of {SB3_ALGORITHMS}, got {algo!r}")
        checkpoint = Path(path)
        if not checkpoint.is_file() and not checkpoint.with_suffix(".zip").is_file():
            raise FileNotFoundError(f"SB3 checkpoint: expected a .zip file, got {str(path)!r}")
        sb3 = importlib.import_module("stable_baselines3")
        algorithm = getattr(sb3, algo.upper())
        try:
            model = algorithm.load(checkpoint, device=resolve_device(device))
        except Exception as error:  # SB3 raises zipfile/pickle/KeyError for a bad file
            raise ValueError(
                f"could not load {str(path)!r} as an SB3 {algo.upper()} checkpoint: {error}"
            ) from error
        return cls(model, action_space, num_envs, deterministic=deterministic,
                   exploration_std=exploration_std)

    def _model_input(self, observation: Observation) -> Observation:
        model_space = self.model.observation_space
        if not isinstance(observation, dict):
            return observation
        if isinstance(model_space, spaces.Dict):
            missing = set(model_space.spaces) - set(observation)
            if missing:
                raise ValueError(
                    f"SB3 agent: expected observation keys {sorted(model_space.spaces)}, "
                    f"got {sorted(observation)}"
                )
            return {key: observation[key] for key in model_space.spaces}
        shape = tuple(model_space.shape)
        pixels = observation.get("pixels")
        # SB3 transposes HWC images itself when its space is the channel-first CHW one
        if pixels is not None and pixels.ndim == 4:
            height, width, channels = pixels.shape[1:]
            if shape in ((height, width, channels), (channels, height, width)):
                return pixels
        state = observation.get("state")
        if state is not None and shape == state.shape[1:]:
            return state
        available = {key: value.shape[1:] for key, value in observation.items()}
        raise ValueError(
            f"SB3 agent: its observation space has shape {shape}, expected one of the "
            f"collected observations {available}; train it on obs_type pixels or state"
        )

    def act(self, observation: Observation, rng: np.random.Generator) -> np.ndarray:
        """The agent's actions float32 ``(num_envs, A)``, clipped to the action bounds.

        A sampling (``deterministic=False``) agent draws from torch's generator, which is
        seeded from ``rng`` for the call (and restored after), so ``rng`` alone decides them.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63 - 1)))
            actions, _ = self.model.predict(
                self._model_input(observation), deterministic=self.deterministic
            )
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        return explore(actions, self.exploration_std, self.low, self.high, rng)

    def reset(self, mask: np.ndarray, rng: np.random.Generator) -> None:
        """Feed-forward agents keep no per-episode state."""
        check_mask(mask, self.num_envs)


def _mpc_policy(config: MPCPolicyConfig, action_space: spaces.Space, num_envs: int) -> Policy:
    """The MPC agent of ``config`` (imported here: it needs the models, collection does not)."""
    from noether_control.agents.mpc import MPCAgent, MPCConfig
    from noether_control.agents.plan import load_planning_checkpoint
    from noether_control.agents.planners import make_planner

    if not config.checkpoint:
        raise ValueError("policy.checkpoint: expected a world-model checkpoint or train run "
                         "directory to plan through, got none")
    box = check_box(action_space)
    loaded = load_planning_checkpoint(config.checkpoint, resolve_device(config.device))
    planner = make_planner(config.planner, box.low, box.high)
    mpc = MPCConfig(replan_every=config.replan_every, exploration_std=config.exploration_std,
                    exploration_correlation=config.exploration_correlation)
    guide = None
    if config.guide_path:
        from noether_control.agents.guide import LatentGuide

        guide = LatentGuide.load(config.guide_path, loaded.model, box, config.guide_value_weight)
    return MPCAgent(loaded.model, planner, box, num_envs, loaded.context_frames, mpc,
                    guide=guide)


def _latent_sb3_policy(config: SB3PolicyConfig, action_space: spaces.Space,
                       num_envs: int) -> Policy:
    """An agent trained in ``config.checkpoint``'s model, acting on its latent state."""
    from noether_control.agents.plan import load_latent_policy, load_planning_checkpoint

    if not config.deterministic:
        raise ValueError("policy.deterministic: an agent trained in a world model acts with its "
                         "mean action (explore with policy.exploration_std), got false")
    loaded = load_planning_checkpoint(config.checkpoint, resolve_device(config.device))
    return load_latent_policy(config.path, config.algo, loaded, action_space, num_envs,
                              config.exploration_std)


def policy_config(cfg: DictConfig | dict[str, Any] | PolicyConfig) -> PolicyConfig:
    """Validate a policy config node (its ``kind`` picks the dataclass) and return it."""
    return kind_dataclass("policy", cfg, POLICY_CONFIGS)


def make_policy(
    cfg: DictConfig | dict[str, Any] | PolicyConfig, action_space: spaces.Space, num_envs: int
) -> Policy:
    """Build the policy described by ``cfg`` for ``num_envs`` sub-envs of ``action_space``."""
    config = policy_config(cfg)
    if isinstance(config, UniformPolicyConfig):
        return UniformPolicy(action_space, num_envs)
    if isinstance(config, OUPolicyConfig):
        return OUPolicy(action_space, num_envs, theta=config.theta, sigma=config.sigma)
    if isinstance(config, MPCPolicyConfig):
        return _mpc_policy(config, action_space, num_envs)
    if not config.path:
        raise ValueError("policy.path: expected the path of an SB3 checkpoint, got none")
    if config.checkpoint:
        return _latent_sb3_policy(config, action_space, num_envs)
    return SB3Policy.load(
        config.path,
        config.algo,
        action_space,
        num_envs,
        deterministic=config.deterministic,
        device=config.device,
        exploration_std=config.exploration_std,
    )


def require_latent_observations(observation_space: spaces.Space, latent_size: int,
                                source: str) -> None:
    """Refuse a policy from ``source`` whose observations are not a world model's latent
    vectors of ``latent_size`` (``SVGConfig.latent_size``)."""
    shape = tuple(observation_space.shape or ())
    if shape != (latent_size,):
        raise ValueError(f"{source}: the policy observes vectors of shape {shape}, the "
                         f"checkpoint's latent state has shape {(latent_size,)}; use it with "
                         "the checkpoint it was trained in (noether-control rl checkpoint=...)")
