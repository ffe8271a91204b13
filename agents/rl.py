"""``noether-control rl``: train a Stable-Baselines3 agent inside a learned world model (or on
the real transitions of its dataset, through its latent state), then evaluate it on the real
pixel env.

    noether-control rl checkpoint=RUN algo=sac steps=50000
    noether-control rl checkpoint=RUN algo=ppo model_env.horizon=20
    noether-control rl checkpoint=RUN experience=real steps=20000
    noether-control rl experiment=smoke

The agent never touches the real env while it trains: :class:`WorldModelVecEnv` steps
``num_envs`` imagined episodes (starting from real contexts of the checkpoint's dataset) in one
model call per step. The trained policy then acts on the real env through
:class:`LatentPolicyAgent` and the same harness and seeds as ``noether-control plan``, so its
``results.json`` has the same fields and lines up in ``plan_table``. The run directory receives
``tensorboard/`` (SB3's logs), ``checkpoints/`` (the policy, and SAC's replay buffer, every
``checkpoint_every`` imagined steps: a killed run resumes from the last one), ``policy.zip``
(written atomically at the end) and ``results.json``. ``noether-control plan agent=sb3
policy_path=RUN/policy.zip checkpoint=MODEL`` evaluates a saved policy again.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from noether_control.agents.harness import mean_return_text, run_episodes
from noether_control.agents.model_env import (
    ContextSampler,
    LatentPolicyAgent,
    ModelEnvConfig,
    WorldModelVecEnv,
)
from noether_control.agents.plan import (
    LoadedModel,
    check_env_fits,
    episode_summary,
    load_planning_checkpoint,
    run_agent_command,
)
from noether_control.agents.real_experience import (
    fill_replay_buffer,
    real_transitions,
    train_offline,
)
from noether_control.data.env_config import EnvConfig, env_spec, make_vector_env
from noether_control.evaluation.evaluate import training_data_settings
from noether_control.runtime import (
    atomic_path,
    require_at_least,
    require_choice,
    resolve_device,
    write_json,
)

ALGOS = ("sac", "ppo")
EXPERIENCES = ("model", "real")
_CHECKPOINT = re.compile(r"policy_(\d+)_steps\.zip$")
_BUFFER = re.compile(r"policy_replay_buffer_(\d+)_steps\.pkl$")
SAC_BUFFER_SIZE = 1_000_000
"""SB3 SAC's default replay buffer capacity; runs shorter than it get a buffer of their length."""


def algorithm_class(algo: str) -> Any:
    """The Stable-Baselines3 class of ``algo`` (``sac`` or ``ppo``)."""
    from stable_baselines3 import PPO, SAC

    classes = {"sac": SAC, "ppo": PPO}
    if algo not in classes:
        raise ValueError(f"algo: expected one of {ALGOS}, got {algo!r}")
    return classes[algo]


@dataclass
class RLConfig:
    """Config of ``noether-control rl`` (``conf/commands/rl/rl.yaml``)."""

    checkpoint: str | None = None
    """The world-model checkpoint (file or train run directory) to train in (required)."""
    algo: str = "sac"
    """``sac`` or ``ppo`` (Stable-Baselines3, ``MlpPolicy`` on the latent observation)."""
    experience: str = "model"
    """``model``: episodes imagined in the model; ``real``: the real transitions of ``dataset``
    (SAC, off-policy, no env step; ``steps`` counts gradient updates)."""
    dataset: str | None = None
    """``experience=real``: the dataset of real episodes; null: the one the model was trained
    on."""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to the SB3 constructor, e.g. ``learning_rate``, ``batch_size``, ``buffer_size``
    (SAC's defaults to ``min(1e6, steps)``: give it to extend a run past its first ``steps``
    without the resumed buffer overwriting its oldest transitions)."""
    model_env: ModelEnvConfig = field(default_factory=ModelEnvConfig)
    """The imagined episodes: horizon, observation, Noether tailoring."""
    num_envs: int = 16
    """Imagined episodes stepped together."""
    steps: int = 20_000
    """Imagined env steps to train for (over all imagined envs); with ``experience=real``,
    gradient updates."""
    checkpoint_every: int = 5_000
    """Save the policy (and SAC's replay buffer) every this many imagined steps (gradient
    updates with ``experience=real``, which saves no buffer: it is rebuilt from the dataset);
    0: never."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The real environment of the evaluation (its action box bounds the imagined actions)."""
    episodes: int = 20
    """Seeded real evaluation episodes; episode ``i`` resets with seed ``seed + i``."""
    eval_num_envs: int = 20
    """Real episodes run in parallel during the evaluation."""
    seed: int = 0
    """Seeds SB3, the imagined episodes' contexts and the evaluation."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (world model and SB3)."""
    threads: int | None = 1
    """torch CPU threads; null: torch's default."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        if not self.checkpoint:
            raise ValueError("checkpoint: expected the world model to train in (checkpoint=PATH, "
                             "a train run directory or a .pt file), got none")
        algorithm_class(self.algo)
        require_choice("experience", self.experience, EXPERIENCES)
        if self.experience == "real" and self.algo != "sac":
            raise ValueError(f"algo: experience=real learns off-policy from stored transitions, "
                             f"which needs algo=sac, got {self.algo!r}")
        self.model_env.validate()
        for name in ("num_envs", "steps", "episodes", "eval_num_envs"):
            require_at_least(name, getattr(self, name), 1, integer=True)
        require_at_least("checkpoint_every", self.checkpoint_every, 0, integer=True)
        require_at_least("threads", self.threads, 1, integer=True, optional=True)


def imagined_env(config: RLConfig, loaded: LoadedModel, action_space: Any) -> WorldModelVecEnv:
    """The checkpoint's imagined vector env, its contexts drawn from its own training data."""
    data = training_data_settings(loaded.train_config, None)
    contexts = ContextSampler.from_dataset(data.path, data.n_past, config.model_env.split,
                                           data.split_fractions, data.split_seed)
    return WorldModelVecEnv(loaded.model, contexts, action_space, config.num_envs,
                            config.model_env, seed=config.seed, noether=loaded.noether)


def saved_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Every ``policy_N_steps.zip`` in ``directory`` as ``(N, path)``, by increasing N."""
    return sorted((int(match.group(1)), path) for path in directory.glob("policy_*_steps.zip")
                  if (match := _CHECKPOINT.search(path.name)))


def latest_checkpoint(directory: Path) -> tuple[Path, int] | None:
    """The newest ``policy_N_steps.zip`` in ``directory`` and its step count N, if any."""
    found = saved_checkpoints(directory)
    if not found:
        return None
    steps, path = found[-1]
    return path, steps


def checkpoint_callback(every: int, checkpoints: Path, replay_buffer: bool) -> Any:
    """SB3's ``CheckpointCallback`` saving ``policy_N_steps.zip`` every ``every`` calls (and the
    replay buffer with ``replay_buffer``), keeping only the newest buffer: each is a full copy
    of the buffer's preallocated arrays (gigabytes for pixel observations), and a resumed run
    reads only the last."""
    from stable_baselines3.common.callbacks import CheckpointCallback

    class LastBufferCheckpoint(CheckpointCallback):
        def _on_step(self) -> bool:
            keep_going = super()._on_step()
            buffers = sorted((int(match.group(1)), path) for path in
                             checkpoints.glob("policy_replay_buffer_*_steps.pkl")
                             if (match := _BUFFER.search(path.name)))
            for _, path in buffers[:-1]:
                path.unlink()
            return keep_going

    return LastBufferCheckpoint(every, str(checkpoints), "policy",
                                save_replay_buffer=replay_buffer)


def build_algorithm(config: RLConfig, env: WorldModelVecEnv, out_dir: Path,
                    device: torch.device, buffer_size: int | None = None) -> tuple[Any, int]:
    """A fresh SB3 agent, or the one saved last in ``out_dir/checkpoints`` (with its replay
    buffer); and the imagined steps (or gradient updates) it has trained for. ``buffer_size``:
    SAC's replay buffer capacity (default: the run's steps, at most SB3's default)."""
    algorithm = algorithm_class(config.algo)
    checkpoints = out_dir / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    if latest is None:
        kwargs = dict(config.algo_kwargs)
        if config.algo == "sac":
            # a buffer beyond the run's own steps never fills, but is allocated and checkpointed
            kwargs.setdefault("buffer_size", buffer_size or min(SAC_BUFFER_SIZE, config.steps))
        agent = algorithm("MlpPolicy", env, seed=config.seed, device=device, verbose=0,
                          tensorboard_log=str(out_dir / "tensorboard"), **kwargs)
        return agent, 0
    path, steps = latest
    agent = algorithm.load(path, env=env, device=device,
                           tensorboard_log=str(out_dir / "tensorboard"))
    buffer = checkpoints / f"policy_replay_buffer_{steps}_steps.pkl"
    if hasattr(agent, "load_replay_buffer") and buffer.is_file():
        agent.load_replay_buffer(buffer)
    print(f"rl: resuming from {path} at {steps} imagined steps")
    return agent, steps


def learn_in_model(config: RLConfig, loaded: LoadedModel, action_space: Any, out_dir: Path,
                   device: torch.device) -> tuple[Any, int, int]:
    """SB3's ``learn`` in the imagined env: the agent, the steps it had before, the steps now."""
    imagined = imagined_env(config, loaded, action_space)
    agent, done = build_algorithm(config, imagined, out_dir, device)
    callbacks = []
    if config.checkpoint_every:
        # SB3 counts calls (one per vector step), not env steps
        every = max(1, config.checkpoint_every // config.num_envs)
        callbacks.append(checkpoint_callback(every, out_dir / "checkpoints",
                                             replay_buffer=config.algo == "sac"))
    if config.steps > done:
        agent.learn(config.steps - done, callback=callbacks, reset_num_timesteps=done == 0,
                    tb_log_name=config.algo)
    return agent, done, int(agent.num_timesteps)


def learn_from_real(config: RLConfig, loaded: LoadedModel, action_space: Any, env_id: str,
                    out_dir: Path, device: torch.device) -> tuple[Any, int, int]:
    """SAC's updates on the real transitions of ``config.dataset``: the agent, the updates it
    had before, the updates now. The imagined env (one episode) only gives SAC its spaces."""
    data = config.dataset or training_data_settings(loaded.train_config, None).path
    transitions = real_transitions(loaded.model, data, loaded.context_frames, action_space,
                                   env_id)
    spaces_only = dataclasses.replace(config, num_envs=1)
    imagined = imagined_env(spaces_only, loaded, action_space)
    agent, done = build_algorithm(config, imagined, out_dir, device, len(transitions))
    fill_replay_buffer(agent, transitions)
    train_offline(agent, config.steps, done, config.checkpoint_every, out_dir / "checkpoints",
                  loaded.context_frames)
    return agent, done, max(done, config.steps)


def train_in_model(config: RLConfig, out_dir: Path) -> dict[str, Any]:
    """Train the agent (in the model, or on real transitions), save ``policy.zip``, evaluate it
    on the real env."""
    config.validate()
    device = resolve_device(config.device)
    assert config.checkpoint is not None
    loaded = load_planning_checkpoint(config.checkpoint, device)
    spec = env_spec(config.env)
    num_eval = min(config.eval_num_envs, config.episodes)
    real = make_vector_env(config.env, num_eval, obs_type="pixels")
    try:
        check_env_fits(loaded, real, spec.id)
        started = time.perf_counter()
        if config.experience == "real":
            agent, done, trained = learn_from_real(config, loaded, real.single_action_space,
                                                   spec.id, out_dir, device)
        else:
            agent, done, trained = learn_in_model(config, loaded, real.single_action_space,
                                                  out_dir, device)
        train_seconds = time.perf_counter() - started
        with atomic_path(out_dir / "policy.zip") as temporary:
            agent.save(temporary)
        policy = LatentPolicyAgent(agent, loaded.model, real.single_action_space, num_eval,
                                   loaded.context_frames)
        results = run_episodes(policy, real, config.episodes, config.seed,
                               np.random.default_rng(config.seed))
    finally:
        real.close()
    remaining = trained - done
    unit = "gradient_steps" if config.experience == "real" else "imagined_steps"
    document = {
        "env_id": spec.id,
        "agent": {"kind": "sb3", "algo": config.algo, "policy_path": str(out_dir / "policy.zip")},
        "planner": None,
        "checkpoint": str(loaded.path),
        "real_env_steps": loaded.real_steps,
        **episode_summary(results),
        "experience": config.experience,
        unit: trained,
        "resumed_from_steps": done,
        "train_seconds": round(train_seconds, 1),
        f"{unit}_per_second": (round(remaining / train_seconds, 1)
                               if remaining and train_seconds > 0 else None),
        "model_env": dataclasses.asdict(config.model_env),
        "algo_kwargs": dict(config.algo_kwargs),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    write_json(out_dir / "results.json", document)
    return document


def trained_text(document: dict[str, Any]) -> str:
    """How long the agent of a ``results.json`` trained, in its own unit."""
    if document.get("experience") == "real":
        return f"{document['gradient_steps']} gradient steps on real transitions"
    return f"{document['imagined_steps']} imagined steps"


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control rl``."""
    run_agent_command(cfg, RLConfig, train_in_model, lambda document: (
        f"{document['agent']['algo']} trained for {trained_text(document)} "
        f"({document['train_seconds']:.0f} s) on {document['env_id']}: "
        f"{mean_return_text(document)} over {document['episodes']} real episodes"))
