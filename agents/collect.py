"""``noether-control collect``: roll a policy in a native vector env into a Minari dataset.

Episodes are collected in rounds of ``num_envs`` sub-envs stepped together: each round resets
every sub-env with a seed derived from ``seed``, steps them for ``episode_steps`` steps (or
until each one's episode ends) and turns each sub-env's slice of the round's arrays into one
Minari episode. The env is always built with ``obs_type="pixels_state"`` so the dataset holds
both the frames and the states, whatever the policy looks at; the per-step infos (true state,
energy, physical parameters) are kept as well. See ``docs/datasets.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from noether_control.agents.policies import Policy, make_policy, policy_config
from noether_control.data.env_config import EnvConfig, env_spec, make_vector_env
from noether_control.data.minari_io import (
    check_writable,
    dataset_metadata,
    dataset_path,
    episode_buffer,
    read_episodes,
    write_dataset,
)
from noether_control.runtime import run_dir, seed_everything, to_dataclass, write_json

COLLECT_OBS_TYPE = "pixels_state"


@dataclass
class DatasetConfig:
    """Where the dataset goes."""

    #: directory holding datasets; null: Minari's root ($MINARI_DATASETS_PATH or
    #: ~/.minari/datasets), so that minari.load_dataset(id) finds it
    root: str | None = None
    #: Minari id "namespace/name-vN"; null: "noether-control/<env.name>/<policy.kind>-v0"
    id: str | None = None
    #: replace an existing dataset with the same id (otherwise collect refuses to start)
    overwrite: bool = False
    #: lossless compression of the frames: gzip | lzf | null (raw: ~20x larger, ~3x faster reads)
    compression: str | None = "gzip"
    #: an existing dataset of the same env whose episodes come first in the new one (copied;
    #: the base itself is never modified), e.g. to grow a model's data with a planner's
    #: episodes; null: only the newly collected episodes
    base: str | None = None


@dataclass
class CollectConfig:
    """Config of ``noether-control collect`` (``conf/commands/collect/collect.yaml``)."""

    #: episodes to collect (>= 1)
    episodes: int = 100
    #: sub-envs stepped together; more is faster up to memory (one round is held in memory)
    num_envs: int = 16
    #: steps per episode; null: the env's time limit (200 for the pendulums)
    episode_steps: int | None = None
    #: seed of the env resets and of the policy's generator: same seed, same dataset
    seed: int = 0
    #: show a tqdm progress bar
    progress: bool = True
    env: EnvConfig = field(default_factory=EnvConfig)
    #: a policy group node, validated by ``noether_control.agents.policies.policy_config``
    policy: dict[str, Any] = field(default_factory=lambda: {"kind": "uniform"})
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


@dataclass
class RoundStats:
    """Returns and lengths of the episodes of one round (kept ones only)."""

    returns: np.ndarray
    lengths: np.ndarray


def _info_arrays(info: dict[str, Any], num_envs: int) -> dict[str, np.ndarray]:
    """The per-sub-env numeric infos (leading dim ``num_envs``), without Gymnasium's masks."""
    arrays = {}
    for key, value in info.items():
        if key.startswith("_") or key.startswith("final_"):
            continue
        array = np.asarray(value)
        if array.ndim >= 1 and array.shape[0] == num_envs and array.dtype.kind in "biuf":
            arrays[key] = array
    return arrays


@dataclass
class _RoundArrays:
    """The steps of one round of ``num_envs`` episodes, time first: ``observations`` and
    ``infos`` hold ``T + 1`` entries (the reset first), ``actions``, ``rewards``,
    ``terminations`` and ``truncations`` ``T``; ``lengths`` ``(num_envs,)`` are the steps each
    episode took (``T`` until it ends)."""

    observations: dict[str, np.ndarray]
    infos: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    lengths: np.ndarray

    @classmethod
    def start(cls, observation: dict[str, np.ndarray], infos: dict[str, np.ndarray],
              steps: int, num_envs: int, action_shape: tuple[int, ...]) -> _RoundArrays:
        """Room for ``steps`` steps of ``num_envs`` episodes, holding the reset ``observation``
        and ``infos``."""
        def history(first: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            arrays = {key: np.empty((steps + 1, *value.shape), value.dtype)
                      for key, value in first.items()}
            for key, value in first.items():
                arrays[key][0] = value
            return arrays

        return cls(
            observations=history(observation),
            infos=history(infos),
            actions=np.empty((steps, num_envs, *action_shape), np.float32),
            rewards=np.zeros((steps, num_envs), np.float64),
            terminations=np.zeros((steps, num_envs), bool),
            truncations=np.zeros((steps, num_envs), bool),
            lengths=np.full(num_envs, steps, dtype=np.int64),
        )

    def record(self, step: int, observation: dict[str, np.ndarray], reward: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray, infos: dict[str, np.ndarray]) -> None:
        """Store what the env returned at ``step`` (its action is stored before the step)."""
        missing = set(self.infos) - set(infos)
        if missing:
            raise ValueError(f"env step infos: expected keys {sorted(missing)} as at reset")
        for key, value in observation.items():
            self.observations[key][step + 1] = value
        for key in self.infos:
            self.infos[key][step + 1] = infos[key]
        self.rewards[step] = reward
        self.terminations[step] = terminated
        self.truncations[step] = truncated

    def episode(self, env_index: int, episode_id: int) -> Any:
        """Sub-env ``env_index``'s episode as a Minari episode buffer with id ``episode_id``."""
        length = int(self.lengths[env_index])
        return episode_buffer(
            episode_id,
            {key: value[: length + 1, env_index] for key, value in self.observations.items()},
            self.actions[:length, env_index],
            self.rewards[:length, env_index],
            self.terminations[:length, env_index],
            self.truncations[:length, env_index],
            {key: value[: length + 1, env_index] for key, value in self.infos.items()},
        )


def _run_round(env: gym.vector.VectorEnv, policy: Policy, episode_steps: int, seed: int,
               rng: np.random.Generator, keep: int,
               on_step: Callable[[int], object] | None) -> _RoundArrays:
    """Reset ``env`` with ``seed`` and step it until its first ``keep`` episodes have ended, or
    for ``episode_steps`` steps (the episodes still running are then marked truncated)."""
    num_envs = env.num_envs
    observation, info = env.reset(seed=seed)
    policy.reset(np.ones(num_envs, dtype=bool), rng)
    arrays = _RoundArrays.start(observation, _info_arrays(info, num_envs), episode_steps,
                                num_envs, env.single_action_space.shape)
    done = np.zeros(num_envs, dtype=bool)
    for step in range(episode_steps):
        active = int((~done[:keep]).sum())
        action = policy.act(observation, rng)
        arrays.actions[step] = action
        observation, reward, terminated, truncated, info = env.step(action)
        arrays.record(step, observation, reward, terminated, truncated,
                      _info_arrays(info, num_envs))
        ended = (terminated | truncated) & ~done
        arrays.lengths[ended] = step + 1
        done |= ended
        if on_step is not None:
            on_step(active)
        if done[:keep].all():
            break
    # our own step limit counts as a time-limit truncation
    arrays.truncations[episode_steps - 1, ~done] = True
    return arrays


def rollout_rounds(
    env: gym.vector.VectorEnv,
    policy: Policy,
    episodes: int,
    episode_steps: int,
    env_seeds: np.ndarray,
    rng: np.random.Generator,
    on_step: Callable[[int], object] | None = None,
    first_id: int = 0,
) -> Iterator[tuple[list[Any], RoundStats]]:
    """Yield ``(episode buffers, stats)`` per round of ``env.num_envs`` parallel episodes.

    ``env`` must have a Dict observation space with ``"pixels"`` and ``"state"`` and use
    Gymnasium's NEXT_STEP autoreset. Round ``r`` resets with ``env_seeds[r]``; the last round
    keeps only the episodes still needed. An episode ends at the env's own termination or
    truncation, or after ``episode_steps`` steps (then marked truncated). ``on_step(count)``
    is called after each vector step with the number of kept sub-envs still running. Episode
    ids count from ``first_id``.
    """
    num_envs = env.num_envs
    rounds = math.ceil(episodes / num_envs)
    if len(env_seeds) < rounds:
        raise ValueError(f"expected a seed per round, got {len(env_seeds)}")
    for round_index in range(rounds):
        first = round_index * num_envs
        keep = min(num_envs, episodes - first)
        arrays = _run_round(env, policy, episode_steps, int(env_seeds[round_index]), rng, keep,
                            on_step)
        buffers = [arrays.episode(index, first_id + first + index) for index in range(keep)]
        returns = np.array([buffer.rewards.sum() for buffer in buffers])
        yield buffers, RoundStats(returns=returns, lengths=arrays.lengths[:keep].copy())


@dataclass
class BaseEpisodes:
    """The episodes of ``dataset.base`` to copy first: their count, a lazy reader, and the
    steps copied so far."""

    count: int
    episodes: Iterator[Any]
    steps: int = 0


def _base_episodes(base: str | None, env_id: str, observation_space: gym.Space) -> BaseEpisodes:
    """Open ``dataset.base`` after checking it comes from ``env_id`` with the same frames."""
    if base is None:
        return BaseEpisodes(0, iter(()))
    metadata = dataset_metadata(base)
    if metadata["env_id"] != env_id:
        raise ValueError(f"dataset.base: expected a dataset of {env_id!r}, got one of "
                         f"{metadata['env_id']!r} ({base!r})")
    episodes = read_episodes(base)
    first = next(episodes)
    pixels = first.observations["pixels"] if isinstance(first.observations, dict) else None
    expected = observation_space["pixels"].shape
    if pixels is None or pixels.shape[1:] != expected:
        raise ValueError(f"dataset.base: expected pixel frames {expected} like the env's, got "
                         f"{None if pixels is None else pixels.shape[1:]} ({base!r})")
    return BaseEpisodes(metadata["total_episodes"], itertools.chain([first], episodes))


def collect(config: CollectConfig, *, policy: Policy | None = None) -> dict[str, Any]:
    """Collect ``config.episodes`` episodes into a new dataset; return the summary.

    ``policy`` overrides ``config.policy`` (e.g. a planner built in code). The summary holds
    ``path``, ``dataset_id``, ``episodes``, ``steps`` (collected now), ``base_episodes`` and
    ``total_steps`` (with ``dataset.base``'s), ``mean_return``, ``std_return`` (of the new
    episodes), ``seconds`` and ``steps_per_second``.

    Raises:
        ValueError: bad config values.
        DatasetExistsError: the dataset exists and ``config.dataset.overwrite`` is false.
    """
    _check_counts(config)
    policy_cfg = policy_config(config.policy)
    dataset_id = config.dataset.id or f"noether-control/{config.env.name}/{policy_cfg.kind}-v0"
    target = dataset_path(dataset_id, config.dataset.root).absolute()
    check_writable(target, config.dataset.overwrite)
    spec = env_spec(config.env, obs_type=COLLECT_OBS_TYPE)
    episode_steps = _episode_steps(config.episode_steps, spec.id, spec.max_episode_steps)
    num_envs = min(config.num_envs, config.episodes)
    env = make_vector_env(config.env, num_envs, obs_type=COLLECT_OBS_TYPE)
    try:
        _check_pixels_and_state(env.single_observation_space, spec.id)
        if policy is None:
            policy = make_policy(policy_cfg, env.single_action_space, num_envs)
        base = _base_episodes(config.dataset.base, spec.id, env.single_observation_space)
        stats: list[RoundStats] = []
        started = time.perf_counter()
        with tqdm(total=config.episodes * episode_steps, unit="step", desc=f"collect {dataset_id}",
                  disable=not config.progress) as bar:
            rounds = _seeded_rounds(config, env, policy, episode_steps, base.count, bar.update)
            write_dataset(
                target,
                dataset_id,
                _batches(base, rounds, stats),
                env_spec=spec,
                observation_space=env.single_observation_space,
                action_space=env.single_action_space,
                algorithm_name=f"noether-control collect, policy={policy_cfg.kind}",
                description=(
                    f"{config.episodes} episodes of {spec.id} under a {policy_cfg.kind} "
                    f"policy; infos hold the true state, energy and physical parameters."
                ),
                extra_metadata={
                    "seed": config.seed,
                    "num_envs": num_envs,
                    "episode_steps": episode_steps,
                    "env": dataclasses.asdict(config.env),
                    "policy": dataclasses.asdict(policy_cfg),
                    "base": config.dataset.base,
                },
                overwrite=config.dataset.overwrite,
                image_compression=config.dataset.compression,
            )
        seconds = time.perf_counter() - started
    finally:
        env.close()
    returns = np.concatenate([round_stats.returns for round_stats in stats])
    steps = int(np.concatenate([round_stats.lengths for round_stats in stats]).sum())
    return {
        "path": str(target),
        "dataset_id": dataset_id,
        "env_id": spec.id,
        "policy": policy_cfg.kind,
        "episodes": len(returns),
        "steps": steps,
        "base_episodes": base.count,
        "total_steps": steps + base.steps,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "seed": config.seed,
    }


def _check_counts(config: CollectConfig) -> None:
    """Episodes, sub-envs and seed of ``config``, checked before anything is built."""
    if config.episodes < 1:
        raise ValueError(f"episodes: expected a positive int, got {config.episodes}")
    if config.num_envs < 1:
        raise ValueError(f"num_envs: expected a positive int, got {config.num_envs}")
    if not 0 <= config.seed < 2**32:
        raise ValueError(f"seed: expected an int in [0, 2**32), got {config.seed}")


def _episode_steps(episode_steps: int | None, env_id: str, time_limit: int | None) -> int:
    """The steps per episode: ``episode_steps``, or the env's ``time_limit`` when null; at
    least 1 and at most the time limit."""
    steps = episode_steps if episode_steps is not None else time_limit
    if steps is None:
        raise ValueError(f"episode_steps: the env {env_id!r} has no time limit; expected a "
                         "positive int, got null")
    if steps < 1:
        raise ValueError(f"episode_steps: expected a positive int (or null: the env's time "
                         f"limit, {time_limit}), got {episode_steps!r}")
    if time_limit is not None and steps > time_limit:
        raise ValueError(
            f"episode_steps: expected at most the env's time limit {time_limit}, got {steps}"
        )
    return steps


def _check_pixels_and_state(observation_space: gym.Space, env_id: str) -> None:
    if not (
        isinstance(observation_space, gym.spaces.Dict)
        and {"pixels", "state"} <= set(observation_space.spaces)
    ):
        raise ValueError(
            f"env {env_id!r}: expected a Dict observation space with pixels and state "
            f"for obs_type={COLLECT_OBS_TYPE!r}, got {observation_space!r}"
        )


def _seeded_rounds(config: CollectConfig, env: gym.vector.VectorEnv, policy: Policy,
                   episode_steps: int, first_id: int,
                   on_step: Callable[[int], object]) -> Iterator[tuple[list[Any], RoundStats]]:
    """:func:`rollout_rounds` of ``config.episodes``, its env seeds and the policy's generator
    drawn from ``config.seed``: same seed, same episodes."""
    env_seed_sequence, policy_seed_sequence = np.random.SeedSequence(config.seed).spawn(2)
    rounds = math.ceil(config.episodes / env.num_envs)
    env_seeds = env_seed_sequence.generate_state(rounds, dtype=np.uint32)
    rng = np.random.default_rng(policy_seed_sequence)
    return rollout_rounds(env, policy, config.episodes, episode_steps, env_seeds, rng,
                          on_step=on_step, first_id=first_id)


def _batches(base: BaseEpisodes, rounds: Iterator[tuple[list[Any], RoundStats]],
             stats: list[RoundStats]) -> Iterator[list[Any]]:
    """The base dataset's episodes one at a time (counting their steps), then each round's
    episodes; every round's stats are appended to ``stats``."""
    for buffer in base.episodes:
        base.steps += len(buffer.rewards)
        yield [buffer]
    for buffers, round_stats in rounds:
        stats.append(round_stats)
        yield buffers


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control collect``: collect, write ``results.json``, print."""
    config = to_dataclass(CollectConfig, cfg)
    seed_everything(config.seed)
    summary = collect(config)
    results = Path(run_dir()) / "results.json"
    write_json(results, summary)
    print(
        f"collected {summary['episodes']} episodes ({summary['steps']} steps, mean return "
        f"{summary['mean_return']:.1f}) in {summary['seconds']:.1f} s"
        + (f", after {summary['base_episodes']} episodes of the base dataset "
           f"({summary['total_steps']} steps in all)" if summary["base_episodes"] else "")
        + "\n"
        f"dataset: {summary['path']}\nresults: {results}"
    )
