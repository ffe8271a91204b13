"""SAC learned off-policy from a dataset's real transitions, on the world model's latent state.

An actor and critic trained inside the model learn what the model gets wrong: measured on the
loop's 8000-step model, SAC's imagined return rose while its real one fell below random's, and
its critic, added at the end of MPC's plans, made them worse than no guide (docs/rl.md). Here
the same SAC learns only from real steps, as LOOP (Sikchi et al., 2021) trains its critic from
the planner's own experience: every ``(frame history, action, reward, next frame)`` of a dataset
becomes a transition between latent observations (:func:`~noether_control.agents.model_env.
episode_latents`, the encoding of the last ``P`` frames that :class:`LatentPolicyAgent` gives a
policy on the real env), and SAC's updates draw from them with no env step at all. The critic
then values states as the real env rewarded them; the model only encodes frames.

The saved agent records ``latent_window = P``: the guide of an MPC agent then reads every state
along a plan as such an encoding (``agents/guide.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces

from noether_control.agents.model_env import episode_latents
from noether_control.agents.policies import check_box
from noether_control.data.minari_io import dataset_metadata
from noether_control.data.windows import EpisodeWindows
from noether_control.models.svg import SVGWorldModel
from noether_control.runtime import atomic_path, require_at_least


class RealTransitions(NamedTuple):
    """Transitions between latent observations of real episodes (``N`` of them).

    ``observations`` and ``next_observations``: float32 ``(N, D)``; ``actions``: float32
    ``(N, A)`` as the env took them; ``rewards``: float32 ``(N,)``. No transition is terminal:
    the environments here end episodes by truncation only.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


@torch.no_grad()
def real_transitions(model: SVGWorldModel, path: str, context_frames: int,
                     action_space: spaces.Space, env_id: str | None = None) -> RealTransitions:
    """Every transition of every episode of the dataset at ``path`` (all splits), between the
    latent observations ``model`` gives of each step's last ``context_frames`` frames.

    Raises:
        ValueError: the dataset's frames or actions are not those the model reads, or it was
            collected in another env than ``env_id``.
    """
    box = check_box(action_space)
    config = model.config
    windows = EpisodeWindows(path, 1, "all")
    recorded = dataset_metadata(path)["env_id"]
    if env_id is not None and recorded is not None and recorded != env_id:
        raise ValueError(f"dataset {path!r}: expected transitions of {env_id!r} (the env the "
                         f"agent plays), got a dataset collected in {recorded!r}")
    frames = (windows.image_size, windows.channels, windows.action_dim)
    if frames != (config.image_size, config.channels, config.action_dim):
        raise ValueError(f"dataset {path!r}: expected {config.image_size} px frames of "
                         f"{config.channels} channels and {config.action_dim}-dimensional "
                         f"actions (the model's), got {frames[0]} px, {frames[1]} channels, "
                         f"{frames[2]}-dimensional actions")
    device = next(model.parameters()).device
    centre = torch.as_tensor((box.low + box.high) / 2, dtype=torch.float32, device=device)
    parts: list[tuple[np.ndarray, ...]] = []
    for episode_id in windows.episode_ids:
        episode = windows.episode(int(episode_id))
        encoded = [model.encode(chunk.to(device)) for chunk in episode["frames"].split(256)]
        codes = torch.cat([code for code, _ in encoded])
        skips = ([torch.cat(features) for features in zip(*(s for _, s in encoded), strict=True)]
                 if config.skips else None)
        actions = episode["actions"].to(device)
        latents = episode_latents(model, codes, actions[:-1], context_frames, centre,
                                  skips).cpu().numpy()
        parts.append((latents[:-1], episode["actions"][:-1].numpy(),
                      episode["rewards"][:-1].numpy(), latents[1:]))
    windows.close()
    return RealTransitions(*(np.concatenate(column).astype(np.float32)
                             for column in zip(*parts, strict=True)))


def fill_replay_buffer(agent: Any, transitions: RealTransitions) -> None:
    """Put ``transitions`` into a SAC agent's replay buffer (one env, at least ``N`` slots),
    replacing what it held; actions are stored scaled to [−1, 1], as SAC stores its own."""
    buffer = agent.replay_buffer
    count = len(transitions)
    if buffer.n_envs != 1 or buffer.buffer_size < count:
        raise ValueError(f"replay buffer: expected one env and room for {count} transitions, "
                         f"got {buffer.n_envs} envs and {buffer.buffer_size} slots")
    buffer.observations[:count, 0] = transitions.observations
    buffer.next_observations[:count, 0] = transitions.next_observations
    buffer.actions[:count, 0] = agent.policy.scale_action(transitions.actions)
    buffer.rewards[:count, 0] = transitions.rewards
    buffer.dones[:count, 0] = 0.0
    buffer.timeouts[:count, 0] = 0.0
    buffer.pos = count % buffer.buffer_size
    buffer.full = count == buffer.buffer_size


def train_offline(agent: Any, gradient_steps: int, done: int, save_every: int,
                  checkpoints: Path, latent_window: int) -> None:
    """SAC's updates on its filled replay buffer, from update ``done`` to ``gradient_steps``,
    saving ``checkpoints/policy_N_steps.zip`` every ``save_every`` updates (0: never) so a
    killed run resumes from the last; the agent records ``latent_window``."""
    require_at_least("gradient_steps", gradient_steps, 1, integer=True)
    from stable_baselines3.common.logger import configure

    agent.latent_window = int(latent_window)
    if agent.replay_buffer.size() == 0:
        raise ValueError("replay buffer: expected real transitions to learn from, got none")
    agent.set_logger(configure(str(checkpoints.parent / "tensorboard" / "sac_real"),
                               ["tensorboard"]))
    chunk = save_every or gradient_steps
    while done < gradient_steps:
        steps = min(chunk - done % chunk, gradient_steps - done)
        agent.train(gradient_steps=steps, batch_size=agent.batch_size)
        done += steps
        agent.logger.dump(done)
        if save_every and (done % save_every == 0 or done == gradient_steps):
            checkpoints.mkdir(parents=True, exist_ok=True)
            with atomic_path(checkpoints / f"policy_{done}_steps.zip") as temporary:
                agent.save(temporary)
