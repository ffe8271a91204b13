"""Would the reward head plan better if it read the frame's code? Refit it on a frozen model.

    python benchmarks/reward_refit.py CHECKPOINT [--dataset PATH] [--windows 3000] [--episodes 8]
        [--sqrt-cost [--sqrt-cost-input hidden_code_motion]] [--temperature 1.0]
        [--iterations 1] [--noise-beta 0.0] [--save PATH]

From a pendulum checkpoint's model it builds two copies whose reward heads are new, one reading
the LSTM output (``model.reward_input=hidden``, as trained) and one reading that, frame t's code
and action t (``hidden_code``); everything but the head is the checkpoint's, frozen. Each new
head is fitted on the features it reads along closed-loop rollouts from the dataset's training
windows (the predicted codes and LSTM states a planner's rollouts produce), and the script
prints

- the reward error on validation windows by band of ``|θ|`` and of ``|θ̇|``, for the
  checkpoint's head and the refits: near upright the true rewards of neighbouring angles
  differ by hundredths; and by rollout step, the slope of the predicted on the true reward
  (a head that hedges against the model's drift shrinks its predictions toward the mean
  reward as the rollout goes on, a slope below 1);
- with ``--sqrt-cost``, a third refit head (reading ``--sqrt-cost-input``, by default
  ``hidden_code``) that predicts the square root of the cost ``−r`` (the pendulum's reward is
  a cost ``θ² + 0.1 θ̇² + 0.001 u² ≥ 0`` negated), its reward read as ``−output²``
  (``model.reward_output=root_cost``): an error of 0.03 in ``√cost`` near upright is an error
  of about 0.006 in the reward at 0.1 rad, against 0.03 for a head fitted to the reward itself;
- :mod:`plan_hold`'s comparison for each model: MPPI through it and through the true simulator
  on the same seeded episodes, split into the swing-up and the hold, with the angle held
  (``--episodes 0`` skips it).

``--save PATH`` writes the last refit as a checkpoint (the source's run config and step, the new
head), so ``noether-control plan checkpoint=PATH`` and the loop can plan through it.

Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from plan_hold import HOLD, SWING_UP, play
from torch import Tensor, nn

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.mpc import MPCAgent, OracleAgent
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import make_planner
from noether_control.data.windows import EpisodeWindows
from noether_control.envs.dynamics import angle_normalize
from noether_control.models.checkpoint import read_checkpoint, save_checkpoint
from noether_control.models.svg import REWARD_INPUTS, SVGWorldModel

ANGLE_BANDS = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.5), (1.5, np.pi + 0.01))
SPEED_BANDS = ((0.0, 1.0), (1.0, 3.0), (3.0, 5.0), (5.0, 8.01))


def with_reward_head(model: SVGWorldModel, reward_input: str,
                     reward_output: str = "reward") -> SVGWorldModel:
    """A copy of ``model`` whose reward head reads ``reward_input`` and predicts
    ``reward_output`` (``model.reward_output``), freshly initialised; every other weight is
    ``model``'s."""
    copy = SVGWorldModel(dataclasses.replace(model.config, reward_input=reward_input,
                                             reward_output=reward_output))
    kept = {name: value for name, value in model.state_dict().items()
            if not name.startswith("reward_net.")}
    missing, unexpected = copy.load_state_dict(kept, strict=False)
    if unexpected or any(not name.startswith("reward_net.") for name in missing):
        raise ValueError(f"expected only the reward head to differ, got missing {missing}, "
                         f"unexpected {unexpected}")
    return copy.eval()


@torch.no_grad()
def reward_features(model: SVGWorldModel, frames: Tensor, actions: Tensor, context: int,
                    chunk: int = 250) -> Tensor:
    """What ``model``'s reward head reads ``(B, H, ·)`` along closed-loop rollouts of windows
    ``frames`` ``(B, P + H, C, S, S)`` under their actions ``(B, P + H, A)``, captured at the
    head's input so it is exactly the head's view whatever ``model.reward_input``."""
    captured: list[Tensor] = []
    hook = model.reward_net.register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0]))
    try:
        rows = []
        for start in range(0, frames.shape[0], chunk):
            part = slice(start, start + chunk)
            state = model.encode_context(frames[part, :context], actions[part, :context - 1])
            captured.clear()  # the context's own predictor steps ran the head too
            model.rollout(state, actions[part, context - 1:-1])
            rows.append(torch.stack(captured, dim=1))
    finally:
        hook.remove()
    return torch.cat(rows)


def fit_reward_head(head: nn.Module, features: Tensor, rewards: Tensor, steps: int,
                    seed: int, batch: int = 512, lr: float = 1e-3) -> None:
    """Fit ``head`` alone on ``features`` ``(N, ·)`` → ``rewards`` ``(N,)`` by MSE with Adam."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        index = torch.randint(0, features.shape[0], (batch,), generator=generator)
        loss = (head(features[index]).squeeze(-1) - rewards[index]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def windows(path: str, length: int, split: str, count: int, seed: int) -> dict[str, Tensor]:
    """``count`` random windows of ``length`` steps of ``split``, stacked."""
    dataset = EpisodeWindows(path, length, split=split, stride=3)
    chosen = np.random.default_rng(seed).choice(len(dataset), min(len(dataset), count),
                                                replace=False)
    items = [dataset[int(i)] for i in chosen]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def band_errors(predicted: Tensor, true: Tensor, values: Tensor,
                bands: tuple[tuple[float, float], ...]) -> str:
    """Bias and RMSE of ``predicted − true`` in each band of ``|values|``."""
    error = predicted - true
    cells = []
    for low, high in bands:
        inside = (values.abs() >= low) & (values.abs() < high)
        cells.append(f"{error[inside].mean():>+8.3f}{error[inside].pow(2).mean().sqrt():>7.3f}")
    return "".join(cells)


def depth_errors(predicted: Tensor, true: Tensor, depths: tuple[int, ...]) -> str:
    """At each rollout step of ``depths``: the slope of ``predicted`` on ``true`` rewards
    ``(B, H)`` (below 1: predictions shrunk toward the mean) and the bias where the true reward
    is above −1 (near upright)."""
    cells = []
    for k in depths:
        t, p = true[:, k].double(), predicted[:, k].double()
        slope = ((t - t.mean()) * (p - p.mean())).sum() / (t - t.mean()).pow(2).sum()
        cells.append(f"{slope:>8.3f}{(p - t)[t > -1].mean():>+8.3f}")
    return "".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="world-model checkpoint or train run directory")
    parser.add_argument("--dataset", help="default: the dataset the model was trained on")
    parser.add_argument("--windows", type=int, default=3000, help="training windows")
    parser.add_argument("--horizon", type=int, default=15, help="rollout steps per window")
    parser.add_argument("--fit-steps", type=int, default=6000)
    parser.add_argument("--episodes", type=int, default=8,
                        help="planning comparison episodes (0: none)")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--plan-horizon", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0, help="MPPI's λ")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--noise-beta", type=float, default=0.0,
                        help="colour of MPPI's noise along the horizon (0 white, 2 brown)")
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--sqrt-cost", action="store_true",
                        help="also refit a head on √(−reward), read as −output²")
    parser.add_argument("--sqrt-cost-input", default="hidden_code", choices=REWARD_INPUTS,
                        help="what the √cost head reads (model.reward_input)")
    parser.add_argument("--save", metavar="PATH",
                        help="write the last refit (the √cost one with --sqrt-cost, else the "
                             "hidden_code one) as a checkpoint that plan and mbrl load")
    args = parser.parse_args()
    if args.episodes < 0:
        parser.error(f"--episodes: expected ≥ 0, got {args.episodes}")
    if args.sqrt_cost_input != "hidden_code" and not args.sqrt_cost:
        parser.error("--sqrt-cost-input: expected --sqrt-cost with it (it names what the √cost "
                     "head reads)")
    torch.set_num_threads(1)
    loaded = load_planning_checkpoint(args.checkpoint, torch.device("cpu"))
    trained, context = loaded.model, loaded.context_frames
    length = context + args.horizon
    dataset = args.dataset or loaded.train_config["data"]["path"]
    train = windows(dataset, length, "train", args.windows, seed=0)
    val = windows(dataset, length, "val", args.windows // 5, seed=1)
    steps = slice(context - 1, length - 1)
    angles = angle_normalize(val["states"][:, steps, 0])
    models = {"checkpoint's head": trained}
    rewards = train["rewards"][:, steps].flatten()
    refits = [("hidden", "reward"), ("hidden_code", "reward")] + [
        (args.sqrt_cost_input, "root_cost")] * args.sqrt_cost
    features = {}  # the head's input does not depend on the head: one rollout per reward_input
    for reward_input, reward_output in refits:
        torch.manual_seed(0)
        model = with_reward_head(trained, reward_input, reward_output)
        if reward_input not in features:
            features[reward_input] = reward_features(model, train["frames"], train["actions"],
                                                     context).flatten(0, 1)
        # the head is fitted in its own output space, as training fits it (reward_loss)
        target = (-rewards).clamp_min(0).sqrt() if reward_output == "root_cost" else rewards
        fit_reward_head(model.reward_net, features[reward_input], target, args.fit_steps, seed=0)
        name = (f"√cost on {reward_input}" if reward_output == "root_cost"
                else f"refit on {reward_input}")
        models[name] = model.eval()
    if args.save:
        save_refit(args.save, model, loaded.path, args)
    print(f"checkpoint {loaded.path} ({loaded.real_steps} real steps); {len(train['frames'])} "
          f"training windows of {dataset}, {args.horizon}-step rollouts")
    predicted = {}
    for name, model in models.items():
        with torch.no_grad():
            state = model.encode_context(val["frames"][:, :context],
                                         val["actions"][:, :context - 1])
            predicted[name] = model.rollout(state, val["actions"][:, context - 1:-1]).rewards
    for what, values, bands in (("|θ| (rad)", angles, ANGLE_BANDS),
                                ("|θ̇| (rad/s)", val["states"][:, steps, 1], SPEED_BANDS)):
        print(f"reward error on {len(val['frames'])} validation windows, bias and RMSE by {what}:")
        print(f"{'':<28}" + "".join(f"{f'[{lo:.1f}, {hi:.1f})':>15}" for lo, hi in bands))
        for name, model_rewards in predicted.items():
            print(f"{name:<28}"
                  f"{band_errors(model_rewards, val['rewards'][:, steps], values, bands)}")
    depths = tuple(sorted({0, args.horizon // 3, 2 * args.horizon // 3, args.horizon - 1}))
    print("by rollout step: slope of the predicted on the true reward, bias where the true "
          "reward is above −1:")
    print(f"{'':<28}" + "".join(f"{f'step {k}':>16}" for k in depths))
    for name, model_rewards in predicted.items():
        print(f"{name:<28}{depth_errors(model_rewards, val['rewards'][:, steps], depths)}")
    if args.episodes > 0:
        compare_planning(models, context, args)


def save_refit(path: str, model: SVGWorldModel, source: Path, args: argparse.Namespace) -> None:
    """Write ``model`` as a checkpoint ``path`` that ``plan``, ``mbrl`` and ``train.init_from``
    read like a trained one: the source checkpoint's run config and step, the new head."""
    payload = read_checkpoint(source)
    if (payload.get("extra") or {}).get("noether"):
        raise ValueError(f"--save: checkpoint {str(source)!r} carries a Noether embedding g_φ, "
                         "which a refit checkpoint would drop; expected a plain world model")
    config = copy.deepcopy(payload["config"])
    config.setdefault("model", {}).update(reward_input=model.config.reward_input,
                                          reward_output=model.config.reward_output)
    refit = {"source": str(source), "windows": args.windows, "horizon": args.horizon,
             "fit_steps": args.fit_steps,
             "dataset": args.dataset or config.get("data", {}).get("path")}
    written = save_checkpoint(path, model=model, optimizer=None, step=payload["step"],
                              config=config, rng={}, extra={"reward_refit": refit})
    print(f"saved the {model.config.reward_input} / {model.config.reward_output} refit to "
          f"{written}")


def compare_planning(models: dict[str, SVGWorldModel], context: int,
                     args: argparse.Namespace) -> None:
    """:mod:`plan_hold`'s comparison of MPPI through each model and the true simulator."""
    trained = next(iter(models.values()))
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=args.episodes,
                       vectorization_mode="vector_entry_point",
                       image_size=trained.config.image_size)
    box = env.single_action_space
    planner = make_planner({"kind": "mppi", "samples": args.samples, "horizon": args.plan_horizon,
                            "temperature": args.temperature, "iterations": args.iterations,
                            "noise_beta": args.noise_beta}, box.low, box.high)
    agents = {"the true simulator": OracleAgent(env, planner)} | {
        name: MPCAgent(model, planner, box, args.episodes, context)
        for name, model in models.items()}
    print(f"MPPI {args.samples} x {args.plan_horizon}, λ {args.temperature}, {args.iterations} "
          f"iterations, noise β {args.noise_beta}; {args.episodes} episodes from seed {args.seed}:")
    print(f"{'planning through':<20}{'return':>9}{'swing-up':>10}{'hold':>8}{'held θ':>9}")
    for name, agent in agents.items():
        rewards, states, _ = play(agent, env, args.seed)
        held = angle_normalize(states[HOLD, :, 0]).mean()
        print(f"{name:<20}{rewards.sum(0).mean():>9.1f}{rewards[SWING_UP].sum(0).mean():>10.1f}"
              f"{rewards[HOLD].sum(0).mean():>8.2f}{held:>+9.3f}")
    env.close()


if __name__ == "__main__":
    main()
