"""How many imagined steps the model's rewards track the real ones: the measurement behind
``model_env.horizon`` (the truncation of ``WorldModelEnv`` episodes).

    python benchmarks/model_env_horizon.py CHECKPOINT [--split test] [--windows 1024] \
        [--max-horizon 50] [--out runs/horizon]

From ``--windows`` random real windows of the checkpoint's dataset split (episodes the model did
not train on with ``--split test``), the model encodes the ``P`` context frames and rolls out the
*recorded* actions for ``--max-horizon`` steps in closed loop (:meth:`SVGWorldModel.rollout`,
exactly what an imagined episode does); its predicted rewards are compared with the recorded
ones. Per horizon ``h`` the table gives the mean absolute error of the ``h``-th reward, and for
its coefficient of determination R² across windows, and the same two for the ``h``-step return
``R_h = r_0 + … + r_(h-1)`` (relative to the mean ``|R_h|``). The recommended horizon is the
longest ``h`` whose reward R² stays at or above ``--r2`` (0.95) at every step up to it: past it
the model's rewards stop telling good states from bad ones, and an agent trained on them learns
the model's errors. (The return R² stays high far longer because a return's spread across
windows is dominated by the known starting state.) ``OUT/horizon.csv`` and ``OUT/results.json``
keep the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from noether_control.data.windows import EpisodeWindows
from noether_control.noether.bundle import load_bundle

SHOWN = (1, 2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 75, 100)


def horizon_errors(predicted: np.ndarray, recorded: np.ndarray) -> dict[str, np.ndarray]:
    """Per-horizon error figures of predicted vs recorded rewards, both ``(N, H)``.

    Returns arrays of length ``H``: ``reward_mae`` (step ``h``'s reward), ``return_r2`` and
    ``reward_r2`` (step ``h``'s reward across the ``N`` windows), ``return_r2`` and
    ``return_relative_mae`` (of the ``h``-step returns).
    """
    predicted_returns = predicted.cumsum(axis=1)
    recorded_returns = recorded.cumsum(axis=1)
    residual = ((predicted_returns - recorded_returns) ** 2).sum(axis=0)
    spread = ((recorded_returns - recorded_returns.mean(axis=0)) ** 2).sum(axis=0)
    step_residual = ((predicted - recorded) ** 2).sum(axis=0)
    step_spread = ((recorded - recorded.mean(axis=0)) ** 2).sum(axis=0)
    return {
        "reward_mae": np.abs(predicted - recorded).mean(axis=0),
        "reward_r2": 1.0 - step_residual / np.maximum(step_spread, 1e-12),
        "return_r2": 1.0 - residual / np.maximum(spread, 1e-12),
        "return_relative_mae": (np.abs(predicted_returns - recorded_returns).mean(axis=0)
                                / np.maximum(np.abs(recorded_returns).mean(axis=0), 1e-12)),
    }


def recommended_horizon(reward_r2: np.ndarray, threshold: float) -> int:
    """The longest ``h`` (1-based) with ``reward_r2`` ≥ ``threshold`` at ``h`` and every shorter
    horizon; 0 when even the first step misses it."""
    below = np.flatnonzero(reward_r2 < threshold)
    return int(below[0]) if below.size else len(reward_r2)


@torch.no_grad()
def imagined_and_recorded(checkpoint: str, split: str, n_windows: int, max_horizon: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``(N, H)`` of the model's closed-loop rollout of recorded actions, and the
    recorded rewards, from ``n_windows`` random windows of the checkpoint's dataset ``split``."""
    bundle = load_bundle(checkpoint)
    model = bundle.model.eval()
    if not model.config.reward_head:
        raise ValueError(f"checkpoint: expected a world model with a reward head "
                         f"(model.reward_head=true), got one without: {checkpoint}")
    data = bundle.config["data"]
    n_past = int(data["n_past"])
    windows = EpisodeWindows(data["path"], n_past - 1 + max_horizon, split, stride=1,
                             split_fractions=tuple(data["split_fractions"]),
                             seed=int(data["split_seed"]))
    rng = np.random.default_rng(seed)
    picked = [windows[int(i)] for i in rng.choice(len(windows), size=n_windows,
                                                  replace=len(windows) < n_windows)]
    frames = torch.stack([item["frames"] for item in picked])
    actions = torch.stack([item["actions"] for item in picked]).float()
    rewards = torch.stack([item["rewards"] for item in picked]).float()
    state = model.encode_context(frames[:, :n_past], actions[:, : n_past - 1])
    future = actions[:, n_past - 1 : n_past - 1 + max_horizon]
    predicted = model.rollout(state, future).rewards
    recorded = rewards[:, n_past - 1 : n_past - 1 + max_horizon]
    return predicted.numpy(), recorded.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a world-model checkpoint with a reward head")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    parser.add_argument("--windows", type=int, default=1024)
    parser.add_argument("--max-horizon", type=int, default=50)
    parser.add_argument("--r2", type=float, default=0.95,
                        help="reward R² the recommended horizon keeps at every step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for horizon.csv and results.json")
    args = parser.parse_args()
    if args.windows < 2 or args.max_horizon < 1:
        parser.error(f"expected --windows >= 2 and --max-horizon >= 1, got {args.windows} and "
                     f"{args.max_horizon}")
    torch.set_num_threads(1)
    predicted, recorded = imagined_and_recorded(args.checkpoint, args.split, args.windows,
                                                args.max_horizon, args.seed)
    errors = horizon_errors(predicted, recorded)
    best = recommended_horizon(errors["reward_r2"], args.r2)
    print(f"{args.windows} windows of the {args.split} split, recorded actions rolled out by "
          f"the model in closed loop")
    print(f"{'h':>4} {'reward MAE':>11} {'reward R²':>10} {'return R²':>10} "
          f"{'return rel. MAE':>16}")
    rows = []
    for h in range(1, args.max_horizon + 1):
        row = {"horizon": h, **{name: float(values[h - 1]) for name, values in errors.items()}}
        rows.append(row)
        if h in SHOWN or h == best:
            mark = "  <- recommended" if h == best else ""
            print(f"{h:>4} {row['reward_mae']:>11.4f} {row['reward_r2']:>10.4f} "
                  f"{row['return_r2']:>10.4f} {row['return_relative_mae']:>16.4f}{mark}")
    print(f"recommended model_env.horizon (reward R² >= {args.r2} at every step up to it): "
          f"{best}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "horizon.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "results.json").write_text(json.dumps(
            {"checkpoint": args.checkpoint, "split": args.split, "windows": args.windows,
             "r2_threshold": args.r2, "recommended_horizon": best, "horizons": rows}, indent=2))


if __name__ == "__main__":
    main()
