"""``noether-control plan``: evaluate an agent on seeded episodes of a real pixel env.

    noether-control plan agent=cem checkpoint=RUN env=pendulum episodes=20
    noether-control plan agent=oracle_mppi episodes=20
    noether-control plan agent=random episodes=20

``agent`` picks the agent and its planner: ``random`` (uniform actions), MPC through a world-model
checkpoint (``cem``, ``icem``, ``mppi``, ``gradient``, ``shooting``), the oracle through the
true simulator (``oracle_cem``, ``oracle_mppi``), or the optimal controller of a single
pendulum (``optimal``: dynamic programming on its true state). Episode ``i`` is seeded
``seed + i`` whatever the agent, so runs with the same ``seed`` are paired episode by episode (see
:mod:`noether_control.agents.plan_table`). The run directory receives ``results.json`` and
``episodes.gif`` (real frames; for MPC agents beside what the model imagines under the chosen
plan).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig

from noether_control.agents.guide import LatentGuide
from noether_control.agents.harness import (
    EpisodeResults,
    mean_return_text,
    return_statistics,
    run_episodes,
)
from noether_control.agents.mpc import MPCAgent, MPCConfig, OracleAgent
from noether_control.agents.optimal import OptimalAgent, StateGrid
from noether_control.agents.planners import make_planner, planner_config
from noether_control.agents.policies import (
    SB3Policy,
    UniformPolicy,
    require_latent_observations,
)
from noether_control.data.env_config import EnvConfig, env_spec, make_vector_env
from noether_control.data.minari_io import dataset_metadata
from noether_control.evaluation.evaluate import resolve_checkpoint
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.bundle import load_bundle
from noether_control.noether.meta import NoetherModule
from noether_control.runtime import (
    atomic_path,
    require_at_least,
    require_choice,
    resolve_device,
    start_command,
    to_dataclass,
    write_json,
)

AGENT_KINDS = ("random", "mpc", "oracle", "optimal", "sb3")


@dataclass
class AgentConfig(MPCConfig):
    """Group ``agent``: which agent acts, and the MPC settings of ``mpc``/``oracle`` agents."""

    kind: str = "mpc"
    """``random`` (uniform actions), ``mpc`` (plans through ``checkpoint``'s world model),
    ``oracle`` (plans through the true simulator from the true state), ``optimal`` (greedy on
    the true value table of a single pendulum, by dynamic programming from the true state) or
    ``sb3`` (a policy trained in ``checkpoint``'s model by ``noether-control rl``, from
    ``policy_path``)."""
    policy_path: str | None = None
    """``sb3``: the saved policy (``policy.zip`` of an ``rl`` run)."""
    algo: str = "sac"
    """``sb3``: the algorithm that saved it (``sac`` or ``ppo``)."""
    grid_angles: int = 256
    """``optimal``: value-table grid points over ``θ`` in ``[-π, π)``."""
    grid_speeds: int = 201
    """``optimal``: value-table grid points over ``θ̇`` in ``[-max_speed, max_speed]``."""
    grid_torques: int = 41
    """``optimal``: torques compared in each backup of the table."""
    candidates: int = 201
    """``optimal``: torques compared at every step of an episode."""
    guide_path: str | None = None
    """``mpc``: the SAC ``policy.zip`` of a ``noether-control rl`` run in ``checkpoint``'s
    model: its actor proposes a warm start through the model, its critic values each plan's
    end (:class:`~noether_control.agents.guide.LatentGuide`); null: no guide."""
    guide_value_weight: float = 1.0
    """``mpc`` with a guide: weight of the critic's value at the end of each plan (0: the
    actor proposes, nothing is added)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        super().validate()
        require_at_least("agent.grid_angles", self.grid_angles, 4, integer=True)
        require_at_least("agent.grid_speeds", self.grid_speeds, 2, integer=True)
        require_at_least("agent.grid_torques", self.grid_torques, 2, integer=True)
        require_at_least("agent.candidates", self.candidates, 2, integer=True)
        require_at_least("agent.guide_value_weight", self.guide_value_weight, 0)
        if self.guide_path and self.kind != "mpc":
            raise ValueError(f"agent.guide_path: a guide steers MPC through a world model "
                             f"(agent.kind=mpc), got agent.kind={self.kind!r}")


@dataclass
class PlanConfig:
    """Config of ``noether-control plan`` (``conf/commands/plan/plan.yaml``)."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The real environment the episodes run in."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """The agent (group ``agent``)."""
    planner: dict[str, Any] = field(default_factory=lambda: {"kind": "cem"})
    """The planner of ``mpc``/``oracle`` agents (group ``planner``, set by the agent preset)."""
    checkpoint: str | None = None
    """World-model checkpoint (file or train run directory) for ``agent.kind=mpc``."""
    episodes: int = 20
    """Seeded episodes; episode ``i`` resets with seed ``seed + i``."""
    num_envs: int = 20
    """Episodes run in parallel (one batched planner call decides for all of them)."""
    seed: int = 0
    """First episode seed; also seeds the agent's randomness."""
    device: str = "auto"
    """Where the model and planner run: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int | None = 1
    """torch CPU threads (1 on shared small machines); null: torch's default."""
    record: int = 3
    """Episodes shown in ``episodes.gif`` (0: no GIF)."""
    gif_fps: int = 20
    """Frames per second of the GIF (the env's 20 Hz is real time)."""
    gif_scale: int = 2
    """Integer upscaling of the GIF's frames."""
    progress: bool = True
    """A tqdm bar over the episodes' steps."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        require_choice("agent.kind", self.agent.kind, AGENT_KINDS)
        self.agent.validate()
        for name in ("episodes", "num_envs", "gif_fps", "gif_scale"):
            require_at_least(name, getattr(self, name), 1, integer=True)
        require_at_least("record", self.record, 0, integer=True)
        require_at_least("threads", self.threads, 1, integer=True, optional=True)
        if self.agent.kind in ("mpc", "sb3") and not self.checkpoint:
            raise ValueError(f"checkpoint: agent.kind={self.agent.kind} acts through a world "
                             "model; expected checkpoint=PATH (a train run directory or a .pt "
                             "file), got none")
        if self.agent.kind == "sb3" and not self.agent.policy_path:
            raise ValueError("agent.policy_path: agent.kind=sb3 expected the policy.zip of a "
                             "noether-control rl run, got none")
        if self.agent.kind not in ("mpc", "oracle") and self.agent.exploration_correlation:
            raise ValueError(f"agent.exploration_correlation: correlated noise is for the mpc "
                             f"and oracle agents, got agent.kind={self.agent.kind!r}")
        if self.agent.kind != "mpc" and self.agent.tailor != "none":
            raise ValueError(f"agent.tailor={self.agent.tailor!r}: only agent.kind=mpc tailors "
                             f"a model, got agent.kind={self.agent.kind!r}")


@dataclass
class LoadedModel:
    """A checkpoint's world model, its g_φ (or None) and what it was trained on."""

    model: SVGWorldModel
    noether: NoetherModule | None
    context_frames: int
    real_steps: int | None
    env_id: str | None
    path: Path
    train_config: dict[str, Any]
    """The resolved config of the run that trained it (``data`` says on what)."""


def load_planning_checkpoint(path: str, device: torch.device) -> LoadedModel:
    """The world model (and g_φ) of ``path`` with its context length and training data size."""
    file = resolve_checkpoint(path)
    bundle = load_bundle(file, device)
    model, noether, config = bundle.model, bundle.noether, bundle.config
    data = config.get("data") or {}
    real_steps = env_id = None
    if data.get("path"):
        try:
            metadata = dataset_metadata(data["path"])
        except (OSError, ValueError) as error:
            warnings.warn(f"checkpoint {str(file)!r}: its dataset {data['path']!r} cannot be "
                          f"read ({error}); the real steps behind the model are unknown",
                          stacklevel=2)
        else:
            real_steps = int(metadata["total_steps"])
            env_id = metadata["env_id"]
    return LoadedModel(model, noether, int(data.get("n_past", 1)), real_steps, env_id, file,
                       config)


def check_env_fits(loaded: LoadedModel, env: Any, env_id: str) -> None:
    """Refuse an env whose frames or actions the model cannot read; warn for another env id.

    A model trained on another env (e.g. fixed physics, evaluated on random physics) can still
    plan, but it plans with the dynamics it learned: that is a warning, not an error.
    """
    config = loaded.model.config
    pixels = env.single_observation_space
    shape = tuple(getattr(pixels, "shape", ()) or ())
    expected = (config.image_size, config.image_size, config.channels)
    if shape != expected:
        raise ValueError(f"env {env_id!r}: the checkpoint's model reads {expected} frames, the "
                         f"env gives {shape}; set env.kwargs.image_size={config.image_size}")
    actions = env.single_action_space.shape
    if actions != (config.action_dim,):
        raise ValueError(f"env {env_id!r}: the checkpoint's model takes actions of shape "
                         f"({config.action_dim},), the env's are {actions}")
    if loaded.env_id is not None and loaded.env_id != env_id:
        warnings.warn(f"the checkpoint's model was trained on {loaded.env_id!r}, the episodes "
                      f"run in {env_id!r}: it plans with the dynamics it learned there",
                      stacklevel=2)


def build_agent(config: PlanConfig, env: Any, loaded: LoadedModel | None, num_envs: int) -> Any:
    """The agent ``config.agent`` describes, for ``num_envs`` sub-envs of ``env``."""
    kind = config.agent.kind
    if kind == "random":
        return UniformPolicy(env.single_action_space, num_envs)
    if kind == "optimal":
        agent = config.agent
        return OptimalAgent(env, StateGrid(agent.grid_angles, agent.grid_speeds,
                                           agent.grid_torques), agent.candidates)
    box = env.single_action_space
    planner = make_planner(config.planner, box.low, box.high)
    if kind == "oracle":
        return OracleAgent(env, planner, config.agent.replan_every,
                           config.agent.exploration_std, seed=config.seed,
                           exploration_correlation=config.agent.exploration_correlation)
    assert loaded is not None  # validate() requires a checkpoint for mpc and sb3
    if kind == "sb3":
        return load_latent_policy(str(config.agent.policy_path), config.agent.algo, loaded, box,
                                  num_envs)
    mpc = MPCConfig(**{f.name: getattr(config.agent, f.name)
                       for f in dataclasses.fields(MPCConfig)})
    guide = None
    if config.agent.guide_path:
        guide = LatentGuide.load(config.agent.guide_path, loaded.model, box,
                                 config.agent.guide_value_weight)
    return MPCAgent(loaded.model, planner, box, num_envs, loaded.context_frames, mpc,
                    noether=loaded.noether, seed=config.seed, record=config.record, guide=guide)


def load_latent_policy(policy_path: str, algo: str, loaded: LoadedModel, action_space: Any,
                       num_envs: int, exploration_std: float = 0.0) -> Any:
    """The SB3 policy saved at ``policy_path`` by ``algo`` acting on the real env through
    ``loaded``'s latent state (with ``exploration_std`` action noise, for collection); refused
    when its observations are not that model's latent vectors."""
    from noether_control.agents.model_env import LatentPolicyAgent

    device = str(next(loaded.model.parameters()).device)
    policy = SB3Policy.load(policy_path, algo, action_space, num_envs, device=device).model
    require_latent_observations(policy.observation_space, loaded.model.config.latent_size,
                                policy_path)
    return LatentPolicyAgent(policy, loaded.model, action_space, num_envs,
                             loaded.context_frames, exploration_std)


def episode_summary(results: EpisodeResults) -> dict[str, Any]:
    """The per-episode fields every agent's ``results.json`` shares."""
    returns = results.returns
    return {
        "episodes": len(returns),
        "seeds": results.seeds,
        "episode_returns": returns.tolist(),
        **return_statistics(returns),
        "num_envs": results.num_envs,
        "ms_per_action": results.ms_per_action,
        "ms_per_call": results.ms_per_call,
    }


def episodes_gif(results: EpisodeResults, path: Path, fps: int, scale: int) -> Path | None:
    """Write the recorded episodes as a GIF: one row per episode, the real frame on the left,
    then (MPC agents) the frames the model imagines 1, 5 and 10 steps ahead under its plan."""
    import imageio.v3 as iio

    if results.frames is None:
        return None
    real = results.frames[:-1]  # (T, K, S, S, 3): the frame each action was chosen in
    panels = [real]
    if results.imagined is not None:
        horizon = results.imagined.shape[2]
        panels += [results.imagined[:, :, k] for k in (1, 5, 10) if k < horizon]
    steps, rows, size = real.shape[0], real.shape[1], real.shape[2]
    # a grey border keeps the panels apart on the envs' white background
    padded = [np.pad(panel, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=160)
              for panel in panels]
    grid = np.stack(padded, axis=2)  # (T, K, columns, S+2, S+2, 3)
    grid = grid.transpose(0, 1, 3, 2, 4, 5).reshape(steps, rows * (size + 2),
                                                    len(panels) * (size + 2), 3)
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, grid, extension=".gif", duration=1000 / fps, loop=0)
    return path


def plan_episodes(config: PlanConfig, out_dir: Path) -> dict[str, Any]:
    """Run ``config.episodes`` episodes of the configured agent; write results and the GIF."""
    config.validate()
    device = resolve_device(config.device)
    spec = env_spec(config.env)
    num_envs = min(config.num_envs, config.episodes)
    loaded = None
    if config.agent.kind in ("mpc", "sb3"):
        assert config.checkpoint is not None
        loaded = load_planning_checkpoint(config.checkpoint, device)
    env = make_vector_env(config.env, num_envs, obs_type="pixels")
    try:
        if loaded is not None:
            check_env_fits(loaded, env, spec.id)
        agent = build_agent(config, env, loaded, num_envs)
        rng = np.random.default_rng(config.seed)
        results = run_episodes(agent, env, config.episodes, config.seed, rng,
                               record=config.record, progress=config.progress)
    finally:
        env.close()
    gif = episodes_gif(results, out_dir / "episodes.gif", config.gif_fps, config.gif_scale)
    document = {
        "env_id": spec.id,
        "agent": dataclasses.asdict(config.agent),
        "planner": (dataclasses.asdict(planner_config(config.planner))
                    if config.agent.kind in ("mpc", "oracle") else None),
        "checkpoint": str(loaded.path) if loaded is not None else None,
        "real_env_steps": loaded.real_steps if loaded is not None else None,
        **episode_summary(results),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "gif": str(gif) if gif is not None else None,
    }
    write_json(out_dir / "results.json", document)
    return document


class _SeededConfig(Protocol):
    """What :func:`run_agent_command` reads of a command's config."""

    seed: int
    threads: int | None


CommandConfig = TypeVar("CommandConfig", bound=_SeededConfig)


def run_agent_command(cfg: DictConfig, config_type: type[CommandConfig],
                      job: Callable[[CommandConfig, Path], dict[str, Any]],
                      headline: Callable[[dict[str, Any]], str]) -> None:
    """An agent command from start to end: validate ``cfg`` as ``config_type``, seed and open
    the run directory, run ``job`` (it writes ``results.json`` there and returns it) and print
    ``headline`` of its results and where they are."""
    config = to_dataclass(config_type, cfg)
    out_dir = start_command(config.seed, config.threads)
    document = job(config, out_dir)
    print(f"{headline(document)}\nresults: {out_dir / 'results.json'}")


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control plan``."""
    run_agent_command(cfg, PlanConfig, plan_episodes, lambda document: (
        f"{document['agent']['kind']} on {document['env_id']}: {mean_return_text(document)} "
        f"over {document['episodes']} episodes, {document['ms_per_action']:.1f} ms per action "
        f"({document['ms_per_call']:.1f} ms per call for {document['num_envs']} envs)"))
