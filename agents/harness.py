"""One evaluation harness for every agent: seeded episodes on a native vector env.

Any batched :class:`~noether_control.agents.policies.Policy` (``act(observation, rng)``,
``reset(mask, rng)``) runs here: the random and OU policies, an SB3 agent, the MPC agent through
a learned model and the oracle through the true simulator. Episode ``i`` starts from the env
seeded with ``seed + i`` whichever agent acts, so two agents evaluated with the same ``seed``
face the same initial states and physics, and their returns can be compared pair by pair.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from noether_control.agents.policies import Policy
from noether_control.runtime import require_at_least


@dataclass
class EpisodeResults:
    """Returns and timings of seeded episodes.

    ``returns``: float64 ``(episodes,)``, episode ``i`` seeded ``seeds[i]``; ``act_seconds``:
    wall time of every ``act`` call (each decides the actions of all sub-envs at once);
    ``num_envs``: sub-envs per call; ``frames``: uint8 ``(T + 1, K, S, S, 3)`` real frames of the
    first ``K`` episodes (empty when none were recorded); ``imagined``: uint8
    ``(T, K, H, S, S, 3)`` the frames the agent imagined for its chosen plan at each step, or
    ``None`` for agents that imagine nothing.
    """

    returns: np.ndarray
    seeds: list[int]
    act_seconds: list[float]
    num_envs: int
    frames: np.ndarray | None = None
    imagined: np.ndarray | None = None
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def ms_per_call(self) -> float:
        """Mean milliseconds of one ``act`` call (the decision latency of ``num_envs`` envs)."""
        return 1000.0 * float(np.mean(self.act_seconds))

    @property
    def ms_per_action(self) -> float:
        """Mean milliseconds per sub-env action: a call's time over the envs it decided for."""
        return self.ms_per_call / self.num_envs


def return_statistics(returns: np.ndarray) -> dict[str, float | None]:
    """``mean_return``, ``std_return`` and ``stderr_return`` (``None`` for a single episode) of
    the episode ``returns``, shape ``(episodes,)``: the fields every results file shares."""
    many = len(returns) > 1
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std(ddof=1)) if many else 0.0,
        "stderr_return": float(returns.std(ddof=1) / np.sqrt(len(returns))) if many else None,
    }


def mean_return_text(summary: dict[str, Any]) -> str:
    """``mean return M ± S`` of a summary with ``mean_return`` and ``stderr_return`` (S: the
    standard error, ``None`` and shown as 0 for a single episode)."""
    return f"mean return {summary['mean_return']:.1f} ± {summary['stderr_return'] or 0:.1f}"


def _pixels(observation: Any) -> np.ndarray | None:
    pixels = observation.get("pixels") if isinstance(observation, dict) else observation
    if isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 4:
        return pixels
    return None


def _imagined_uint8(agent: Any, record: int) -> np.ndarray | None:
    """The agent's imagined frames of its first ``record`` episodes, uint8 ``(K, H, S, S, 3)``."""
    imagined = getattr(agent, "imagined", None)
    if imagined is None:
        return None
    frames = imagined[:record].detach().float().clamp(0, 1).mul(255).round()
    return frames.permute(0, 1, 3, 4, 2).to("cpu").numpy().astype(np.uint8)


def run_episodes(
    agent: Policy,
    env: Any,
    episodes: int,
    seed: int,
    rng: np.random.Generator,
    *,
    record: int = 0,
    progress: bool = False,
    on_round: Callable[[int, np.ndarray], object] | None = None,
) -> EpisodeResults:
    """Run ``episodes`` episodes of ``agent`` in rounds of ``env.num_envs`` parallel episodes.

    Args:
        agent: a batched policy for ``env.num_envs`` sub-envs.
        env: a Gymnasium vector env (NEXT_STEP autoreset; episodes end at the time limit or
            termination; a round stops when all its episodes have ended).
        episodes: how many episodes (>= 1); the last round's extra sub-envs are not counted.
        seed: episode ``i`` resets with seed ``seed + i``.
        rng: the agent's randomness (planner samples, exploration, warm-up actions).
        record: keep the real (and imagined) frames of the first ``record`` episodes.
        progress: a tqdm bar over steps.
        on_round: called with ``(round index, returns of that round's episodes)``.

    Returns:
        :class:`EpisodeResults`.
    """
    require_at_least("episodes", episodes, 1, integer=True)
    num_envs = env.num_envs
    limit = getattr(env, "max_episode_steps", None) or 200
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    act_seconds: list[float] = []
    recording = _Recording(agent, min(record, num_envs, episodes))
    with tqdm(total=episodes * limit, unit="step", desc="episodes", disable=not progress) as bar:
        for round_index in range(math.ceil(episodes / num_envs)):
            first = round_index * num_envs
            keep = min(num_envs, episodes - first)
            round_returns, round_lengths = _play_round(
                agent, env, [seed + first + i for i in range(num_envs)], rng, keep, act_seconds,
                recording if round_index == 0 else _Recording(agent, 0), bar.update)
            returns[first : first + keep] = round_returns[:keep]
            lengths[first : first + keep] = round_lengths[:keep]
            if on_round is not None:
                on_round(round_index, round_returns[:keep])
    return EpisodeResults(
        returns=returns,
        seeds=[seed + i for i in range(episodes)],
        act_seconds=act_seconds,
        num_envs=num_envs,
        frames=np.stack(recording.frames, axis=0) if recording.frames else None,
        imagined=_stack_imagined(recording.imagined),
        lengths=lengths,
    )


class _Recording:
    """The real frames, and the agent's imagined ones, of the first ``episodes`` episodes (none
    when 0)."""

    def __init__(self, agent: Policy, episodes: int) -> None:
        self.agent = agent
        self.episodes = episodes
        self.frames: list[np.ndarray] = []
        self.imagined: list[np.ndarray | None] = []

    def observed(self, observation: Any) -> None:
        """Keep the frames of ``observation`` (if it has pixels)."""
        pixels = _pixels(observation) if self.episodes > 0 else None
        if pixels is not None:
            self.frames.append(pixels[: self.episodes].copy())

    def acted(self) -> None:
        """Keep what the agent imagined for the actions it just chose."""
        if self.episodes > 0:
            self.imagined.append(_imagined_uint8(self.agent, self.episodes))


def _play_round(agent: Policy, env: Any, seeds: list[int], rng: np.random.Generator, keep: int,
                act_seconds: list[float], recording: _Recording,
                on_step: Callable[[int], object]) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths ``(num_envs,)`` of one round of episodes, reset with ``seeds``,
    played until its first ``keep`` episodes have ended; each ``act`` call's time goes to
    ``act_seconds``, and ``on_step`` gets the kept episodes still running at every step."""
    num_envs = env.num_envs
    observation, _ = env.reset(seed=seeds)
    agent.reset(np.ones(num_envs, dtype=np.bool_), rng)
    recording.observed(observation)
    done = np.zeros(num_envs, dtype=np.bool_)
    returns = np.zeros(num_envs, dtype=np.float64)
    lengths = np.zeros(num_envs, dtype=np.int64)
    while not done[:keep].all():
        started = time.perf_counter()
        actions = agent.act(observation, rng)
        act_seconds.append(time.perf_counter() - started)
        recording.acted()
        observation, reward, terminated, truncated, _ = env.step(actions)
        running = ~done
        returns[running] += np.asarray(reward)[running]
        lengths[running] += 1
        done |= np.asarray(terminated) | np.asarray(truncated)
        recording.observed(observation)
        on_step(int(running[:keep].sum()))
    return returns, lengths


def _stack_imagined(pictures: list[np.ndarray | None]) -> np.ndarray | None:
    """Stack per-step imagined frames, black before the agent's first plan; None if none."""
    shown = next((picture for picture in pictures if picture is not None), None)
    if shown is None:
        return None
    blank = np.zeros_like(shown)
    return np.stack([blank if picture is None else picture for picture in pictures], axis=0)
