"""How well a guide's critic values the end of a plan through the model, against the model's
own return: the noise MPC's choice among candidates would pick.

    python benchmarks/guide_critic.py CHECKPOINT POLICY DATASET [--horizon 20] [--episodes 40]
        [--starts 8] [--seed 0]

From ``--starts`` random steps ``t`` of ``--episodes`` episodes of ``DATASET`` (real episodes,
e.g. the loop's), the world model of ``CHECKPOINT`` encodes the last ``P`` real frames and
applies the ``--horizon`` actions that were really taken next. The guide of ``POLICY`` (a SAC
``policy.zip`` of ``noether-control rl``) values the state the plan ends in,
``min(Q₁, Q₂)(z, π(z))``, twice: at the model's predicted end (read as MPC reads it,
``agents/guide.py``) and at the real one (the encoding of the real frames ``t + H − P + 1 … t +
H``). The table compares the spread of the critic's difference between the two with that of
the model's predicted ``H``-step return against the true one. Where the first is much larger,
adding the critic to every candidate's return makes MPC's choice follow the critic's errors.

Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.guide import LatentGuide
from noether_control.agents.model_env import episode_latents
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.data.windows import EpisodeWindows
from noether_control.models.planning import window_latent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("policy")
    parser.add_argument("dataset")
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    model, width = loaded.model, loaded.context_frames
    if loaded.env_id is None:
        raise SystemExit(f"{args.checkpoint}: expected a model trained on a registered env's "
                         f"dataset (its action box bounds the guide's actions), got none")
    box = gym.make(loaded.env_id).action_space
    guide = LatentGuide.load(args.policy, model, box)
    window = guide.window if guide.window is not None else width
    windows = EpisodeWindows(args.dataset, 1, "all")
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(windows.episode_ids, min(args.episodes, len(windows.episode_ids)),
                        replace=False)
    centre = torch.as_tensor((box.low + box.high) / 2, dtype=torch.float32)
    rows = []
    with torch.no_grad():
        for episode_id in chosen:
            episode = windows.episode(int(episode_id))
            frames, actions, rewards = episode["frames"], episode["actions"], episode["rewards"]
            real = episode_latents(model, model.encode(frames)[0], actions[:-1], width, centre)
            starts = rng.integers(width - 1, len(frames) - args.horizon, size=args.starts)
            state = model.encode_context(
                torch.stack([frames[t - width + 1: t + 1] for t in starts]),
                torch.stack([actions[t - width + 1: t] for t in starts]))
            plans = torch.stack([actions[t: t + args.horizon] for t in starts])
            if guide.window is None:
                predicted_rewards, after = model.advance(state, plans)
                predicted_end = after.latent()
            else:
                predicted_rewards, predicted_end = window_latent(model, state, plans, window)
            true_end = real[torch.as_tensor(starts + args.horizon)]
            true_return = torch.stack([rewards[t: t + args.horizon].sum() for t in starts])
            rows.append(np.stack([guide.value(predicted_end).numpy(),
                                  guide.value(true_end).numpy(),
                                  predicted_rewards.sum(dim=1).numpy(),
                                  true_return.numpy()], axis=1))
    table = np.concatenate(rows)
    value_error = table[:, 0] - table[:, 1]
    return_error = table[:, 2] - table[:, 3]
    print(f"{len(table)} starts, horizon {args.horizon}, the guide reads "
          f"{'the stepped state' if guide.window is None else f'the last {window} frames'}")
    print("| quantity | mean | s.d. | predicted − true: mean, s.d. | correlation |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, predicted, true, error in (
            ("critic's value of the plan's end", table[:, 0], table[:, 1], value_error),
            (f"{args.horizon}-step return", table[:, 2], table[:, 3], return_error)):
        print(f"| {name} | {true.mean():.1f} | {true.std():.1f} | {error.mean():+.1f}, "
              f"{error.std():.1f} | {np.corrcoef(predicted, true)[0, 1]:.3f} |")


if __name__ == "__main__":
    main()
