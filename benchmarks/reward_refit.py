"""Would the reward head plan better if it read the frame's code? Refit it on a frozen model.

    python benchmarks/reward_refit.py CHECKPOINT [--dataset PATH] [--windows 3000] [--episodes 8]
        [--sqrt-cost [--sqrt-cost-input hidden_code_motion]] [--temperature 1.0]
        [--iterations 1] [--noise-beta 0.0]

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

The refits are :func:`noether_control.training.reward_head.refit_reward_head` on the windows
``noether-control refit_reward`` draws (same seed: the same windows), so the command's
checkpoint of a refit is the model scored here.

Figures are in docs/rl.md.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from plan_hold import HOLD, SWING_UP, play
from torch import Tensor

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.mpc import MPCAgent, OracleAgent
from noether_control.agents.plan import load_planning_checkpoint
from noether_control.agents.planners import make_planner
from noether_control.agents.refit_reward import sample_windows
from noether_control.envs.dynamics import angle_normalize
from noether_control.evaluation.evaluate import training_data_settings
from noether_control.models.svg import REWARD_INPUTS, SVGWorldModel
from noether_control.training.reward_head import refit_reward_head, rollout_rewards

ANGLE_BANDS = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.5), (1.5, np.pi + 0.01))
SPEED_BANDS = ((0.0, 1.0), (1.0, 3.0), (3.0, 5.0), (5.0, 8.01))


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
    data = training_data_settings(loaded.train_config, args.dataset)
    train = sample_windows(data, length, "train", args.windows, 3, 0)
    val = sample_windows(data, length, "val", args.windows // 5, 3, 1)
    steps = slice(context - 1, length - 1)
    angles = angle_normalize(val["states"][:, steps, 0])
    models = {"checkpoint's head": trained}
    refits = [("hidden", "reward"), ("hidden_code", "reward")] + [
        (args.sqrt_cost_input, "root_cost")] * args.sqrt_cost
    for reward_input, reward_output in refits:
        name = (f"√cost on {reward_input}" if reward_output == "root_cost"
                else f"refit on {reward_input}")
        models[name] = refit_reward_head(trained, train["frames"], train["actions"],
                                         train["rewards"], context, reward_input, reward_output,
                                         args.fit_steps, seed=0)
    print(f"checkpoint {loaded.path} ({loaded.real_steps} real steps); {len(train['frames'])} "
          f"training windows of {data.path}, {args.horizon}-step rollouts")
    predicted = {name: rollout_rewards(model, val["frames"], val["actions"], context)
                 for name, model in models.items()}
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
