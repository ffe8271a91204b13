"""Does tailoring a world model to the *true* conservation law improve its prediction?

    python benchmarks/noether_oracle.py CHECKPOINT [--windows 48] [--horizon 25]
        [--lrs 0.01 0.03 0.1] [--steps 1 2 5 10] [--tailored lstm norm]
        [--mode consecutive|start|future] [--oracle-frames F] [--select-horizon H]
        [--out FILE.json]

The oracle check of the Noether lever (``noether_control/noether/oracle.py``): the model's
predicted frames are read as angles (its own encoder and a linear probe of (cos θ, sin θ)
fitted on training frames) and tailored, per test window, to keep the pendulum's discrete
energy balance (energy change = work of the torque), step by step (``--mode consecutive``) or
every energy against the true first one (``--mode start``). If even the true law does not lower the
error at long horizons, the tailored parameters are the bottleneck, not g_φ.

``--mode future`` measures the lever itself: the inner loss is the prediction's MSE against the
true frames of the first ``--oracle-frames F`` predicted steps (default: the whole horizon).
With F = horizon it is the most any per-example signal could buy with these parameters in K
steps; with F < horizon, how far a perfect signal about the near future carries to the later
frames.

For every tailored group (``lstm``: the LSTM output's (γ, β); ``norm``: every normalisation
layer's) and inner lr (normalised gradient steps of that length), the inner loop runs
``max(steps)`` first-order steps and records after each K in ``steps``: the task MSE per
horizon, the predicted motion beside the true frames' motion, and the energy-balance residual.
The setting with the lowest validation MSE at ``--select-horizon`` (default: the last) is then
run on the test windows
and compared with K = 0 (paired by window, the interval clustered by test episode). Prints a
table; ``--out`` writes everything as JSON. Figures: docs/noether.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader

from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import (
    resolve_checkpoint,
    spread_subset,
    training_data_settings,
)
from noether_control.evaluation.metrics import motion
from noether_control.experiments.compare import paired_difference
from noether_control.models.checkpoint import load_world_model
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.oracle import (
    BALANCE_MODES,
    AngleProbe,
    PendulumPhysics,
    oracle_loss,
)
from noether_control.noether.tailoring import tailor


def windows(settings: Any, split: str, length: int, count: int | None) -> Any:
    data = EpisodeWindows(settings.path, length, split, stride=length,
                          split_fractions=settings.split_fractions, seed=settings.split_seed)
    return spread_subset(data, count)


def fit_probe(model: SVGWorldModel, settings: Any, length: int) -> tuple[AngleProbe, float]:
    """The angle probe fitted on training frames, and its R² on test frames."""
    def frames_and_states(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(iter(DataLoader(windows(settings, split, length, count), batch_size=count)))
        return batch["frames"].float().flatten(0, 1), batch["states"][..., 0].float().flatten()

    probe = AngleProbe.fit(model, *frames_and_states("train", 64))
    return probe, probe.r2(model, *frames_and_states("test", 32))


FUTURE = "future"


def true_future_loss(predicted: torch.Tensor, truth: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B,)`` MSE of the first ``frames`` predicted frames ``(B, H, C, S, S)`` against the
    true ones: the inner loss of ``--mode future``."""
    if not 1 <= frames <= predicted.shape[1]:
        raise ValueError(f"--oracle-frames: expected 1 … {predicted.shape[1]}, got {frames}")
    return (predicted[:, :frames] - truth[:, :frames].to(predicted)).square().mean((1, 2, 3, 4))


def run_setting(
    model: SVGWorldModel, probe: AngleProbe, physics: PendulumPhysics, batches: Iterable[dict],
    n_past: int, horizon: int, tailored: str, lr: float, steps: list[int], mode: str,
    oracle_frames: int | None = None,
) -> dict[str, Any]:
    """Per-window MSE ``(N, H)``, motion and residual after each K in ``steps`` (and K = 0).

    ``mode``: a :data:`BALANCE_MODES` energy balance (the residual is its loss), or
    ``future``: the true frames' MSE over the first ``oracle_frames`` predicted steps (default
    ``horizon``; the residual is that loss)."""
    frames_seen = horizon if oracle_frames is None else oracle_frames

    def inner_loss(context: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor,
                   actions: torch.Tensor) -> torch.Tensor:
        if mode == FUTURE:
            return true_future_loss(predicted, truth, frames_seen)
        return oracle_loss(model, probe, physics, context, predicted, actions, mode)

    tailoring = NoetherModule(NoetherConfig(enabled=True, tailored=tailored), model.config)
    recorded = [0, *steps]
    mse: dict[int, list[torch.Tensor]] = {k: [] for k in recorded}
    moved: dict[int, list[torch.Tensor]] = {k: [] for k in recorded}
    residual: dict[int, list[torch.Tensor]] = {k: [] for k in recorded}
    true_motion, true_residual = [], []
    for batch in batches:
        frames = batch["frames"].float()
        actions = batch["actions"].float()
        context, truth = frames[:, :n_past], frames[:, n_past:n_past + horizon]
        true_motion.append(motion(truth, context[:, -1]).mean(1))
        with torch.no_grad():
            true_residual.append(inner_loss(context, truth, truth, actions))
        params = tailoring.initial_params(model, frames.shape[0], context)

        def loss(current: dict[str, torch.Tensor], _: object, context: torch.Tensor = context,
                 actions: torch.Tensor = actions, truth: torch.Tensor = truth) -> torch.Tensor:
            rollout = tailoring.rollout(model, current, context, actions, horizon)
            return inner_loss(context, rollout.frames, truth, actions)

        done = 0
        for k in recorded:
            if k > done:
                params = tailor(params, None, loss, steps=k - done, lr=lr,
                                optimizer="normalized", second_order=False)
                params = {name: value.detach() for name, value in params.items()}
                done = k
            with torch.no_grad():
                predicted = tailoring.rollout(model, params, context, actions, horizon).frames
                mse[k].append((predicted - truth).square().mean((2, 3, 4)))
                moved[k].append(motion(predicted, context[:, -1]).mean(1))
                residual[k].append(inner_loss(context, predicted, truth, actions))
    return {
        "steps": recorded,
        "mse": {k: torch.cat(v) for k, v in mse.items()},
        "motion": {k: float(torch.cat(v).mean()) for k, v in moved.items()},
        "residual": {k: float(torch.cat(v).mean()) for k, v in residual.items()},
        "true_motion": float(torch.cat(true_motion).mean()),
        "true_residual": float(torch.cat(true_residual).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--val-windows", type=int, default=24)
    parser.add_argument("--horizon", type=int, default=25)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--tailored", nargs="+", default=["lstm", "norm"])
    parser.add_argument("--mode", choices=(*BALANCE_MODES, FUTURE), default="consecutive")
    parser.add_argument("--oracle-frames", type=int, default=None)
    parser.add_argument("--select-horizon", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    model, config = load_world_model(resolve_checkpoint(args.checkpoint))
    model.requires_grad_(False)
    settings = training_data_settings(config, None)
    n_past, horizon = settings.n_past, args.horizon
    length = n_past + horizon
    physics = PendulumPhysics()
    probe, probe_r2 = fit_probe(model, settings, length)
    print(f"angle probe (cos θ, sin θ) from the encoder's code: test R² {probe_r2:.4f}")

    def loader(split: str, count: int) -> DataLoader:
        return DataLoader(windows(settings, split, length, count), batch_size=args.batch_size)

    steps = sorted(set(args.steps))
    select = args.select_horizon or horizon
    if not 1 <= select <= horizon:
        raise ValueError(f"--select-horizon: expected 1 … {horizon}, got {select}")
    print(f"{'tailored':>8} {'lr':>6} {'K':>3} {'val MSE h1':>11} {'h10':>10} "
          f"{'h' + str(horizon):>10} {'motion':>9} {'residual':>9}")
    grid: list[dict[str, Any]] = []
    for tailored in args.tailored:
        for lr in args.lrs:
            result = run_setting(model, probe, physics, loader("val", args.val_windows), n_past,
                                 horizon, tailored, lr, steps, args.mode, args.oracle_frames)
            for k in result["steps"]:
                mean = result["mse"][k].mean(0)
                row = {"tailored": tailored, "lr": lr, "steps": k, "mse_h1": float(mean[0]),
                       "mse_h10": float(mean[min(9, horizon - 1)]),
                       "mse_last": float(mean[-1]), "mse_selected": float(mean[select - 1]),
                       "motion": result["motion"][k], "residual": result["residual"][k]}
                grid.append(row)
                print(f"{tailored:>8} {lr:>6.3f} {k:>3} {row['mse_h1']:>11.3e} "
                      f"{row['mse_h10']:>10.3e} {row['mse_last']:>10.3e} "
                      f"{row['motion']:>9.3e} {row['residual']:>9.3e}")
            print(f"{'':>8} true frames: motion {result['true_motion']:.3e}, residual "
                  f"{result['true_residual']:.3e}")
    best = min((row for row in grid if row["steps"] > 0), key=lambda row: row["mse_selected"])
    print(f"best on validation at h{select}: tailored={best['tailored']} lr={best['lr']} "
          f"K={best['steps']}")
    test = run_setting(model, probe, physics, loader("test", args.windows), n_past, horizon,
                       best["tailored"], best["lr"], [best["steps"]], args.mode,
                       args.oracle_frames)
    test_windows = loader("test", args.windows).dataset
    base = getattr(test_windows, "dataset", test_windows)
    indices = getattr(test_windows, "indices", range(len(base)))
    episodes = torch.tensor([base.window_index(i)[0] for i in indices])
    tailored_mse, untailored_mse = test["mse"][best["steps"]], test["mse"][0]
    difference = paired_difference(tailored_mse, untailored_mse, clusters=episodes)
    shown = sorted({0, min(9, horizon - 1), horizon - 1})
    for h in shown:
        print(f"test h{h + 1}: K=0 {float(untailored_mse[:, h].mean()):.3e}, K={best['steps']} "
              f"{float(tailored_mse[:, h].mean()):.3e}, {100 * difference['relative'][h]:+.2f}% "
              f"[{difference['low'][h]:+.2e}, {difference['high'][h]:+.2e}]")
    print(f"test motion: true {test['true_motion']:.3e}, K=0 {test['motion'][0]:.3e}, "
          f"K={best['steps']} {test['motion'][best['steps']]:.3e}; residual: true "
          f"{test['true_residual']:.3e}, K=0 {test['residual'][0]:.3e}, K={best['steps']} "
          f"{test['residual'][best['steps']]:.3e}")
    seconds = time.perf_counter() - started
    print(f"{seconds:.0f} s")
    if args.out:
        document = {
            "checkpoint": str(resolve_checkpoint(args.checkpoint)), "probe_r2": probe_r2,
            "horizon": horizon, "mode": args.mode, "oracle_frames": args.oracle_frames,
            "validation": grid, "best": best,
            "test": {"windows": int(tailored_mse.shape[0]),
                     "mse_untailored": untailored_mse.mean(0).tolist(),
                     "mse_tailored": tailored_mse.mean(0).tolist(),
                     "tailored_minus_untailored": difference,
                     "motion": {"true": test["true_motion"], **{str(k): v for k, v in
                                                                test["motion"].items()}},
                     "residual": {"true": test["true_residual"], **{str(k): v for k, v in
                                                                    test["residual"].items()}}},
            "seconds": round(seconds, 1),
        }
        with open(args.out, "w") as handle:
            json.dump(document, handle, indent=2)


if __name__ == "__main__":
    main()
