"""``noether-control refit_reward``: a trained model with its reward head refitted for planning.

    noether-control refit_reward checkpoint=runs/mbrl/iter2/train hydra.run.dir=runs/refit
    noether-control plan checkpoint=runs/refit agent=mppi

Every weight but the reward head is the checkpoint's, frozen. The new head reads
``reward_input`` and predicts ``reward_output`` (``model.reward_input`` / ``reward_output``;
the default, the cost's square root read from the LSTM output, the frame's code and its motion,
is the head the loop's best planning agent uses: docs/rl.md). It is fitted on what it reads
along closed-loop rollouts of ``horizon`` steps from ``windows`` random training windows of the
checkpoint's dataset, against the recorded rewards (:mod:`noether_control.training.reward_head`).

Outputs in the run directory: ``checkpoints/last.pt`` (the source's run config and step, the
new head; ``plan``, ``rl``, ``collect`` and ``mbrl`` read the directory as a checkpoint),
``results.json`` (the reward error of the checkpoint's head and of the refit along rollouts of
validation windows, or of the training windows where the split has no validation episode:
RMSE, bias, and RMSE near the goal, the top tenth of the true rewards) and
``rewards.png`` (predicted against true rewards, both heads).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from noether_control.agents.plan import LoadedModel, load_planning_checkpoint
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import DataSettings, training_data_settings
from noether_control.models.checkpoint import read_checkpoint, save_checkpoint
from noether_control.models.svg import REWARD_INPUTS, REWARD_OUTPUTS, SVGWorldModel
from noether_control.runtime import (
    atomic_path,
    require_at_least,
    require_choice,
    resolve_device,
    run_dir,
    to_dataclass,
    write_json,
)
from noether_control.training.reward_head import refit_reward_head, rollout_rewards
from noether_control.training.train import collate

NEAR_GOAL_FRACTION = 0.1
"""The share of validation steps, those with the highest true rewards, scored as near the goal."""


@dataclass
class RefitRewardConfig:
    """Config of ``noether-control refit_reward`` (``conf/commands/refit_reward/``)."""

    checkpoint: str | None = None
    """The world model (train run directory or ``.pt``); a Noether checkpoint is refused."""
    dataset: str | None = None
    """Episodes whose windows the head is fitted on; ``null``: the checkpoint's training data
    (its own split: training windows to fit, validation windows to score)."""
    reward_input: str = "hidden_code_motion"
    """What the new head reads (``model.reward_input``)."""
    reward_output: str = "root_cost"
    """What it predicts (``model.reward_output``): ``reward``, or ``root_cost`` (read as −y²)."""
    windows: int = 3000
    """Training windows fitted on (validation windows scored: a fifth as many)."""
    horizon: int = 15
    """Closed-loop rollout steps per window."""
    stride: int = 3
    """Steps between the starts of the windows sampled from."""
    fit_steps: int = 6000
    """Adam steps of the head."""
    batch_size: int = 512
    lr: float = 1e-3
    seed: int = 0
    """Seeds the windows drawn, the head's initialisation and its minibatches."""
    device: str = "auto"
    threads: int = 1
    """torch CPU threads."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        if not self.checkpoint:
            raise ValueError("checkpoint: expected the world model whose reward head to refit "
                             "(a train run directory or .pt file), got nothing; give "
                             "checkpoint=PATH")
        require_choice("reward_input", self.reward_input, REWARD_INPUTS)
        require_choice("reward_output", self.reward_output, REWARD_OUTPUTS)
        for name in ("windows", "horizon", "stride", "fit_steps", "batch_size", "threads"):
            require_at_least(name, getattr(self, name), 1, integer=True)
        if not self.lr > 0:
            raise ValueError(f"lr: expected a number > 0, got {self.lr!r}")


def sample_windows(data: DataSettings, length: int, split: str, count: int, stride: int,
                   seed: int) -> dict[str, Tensor]:
    """Up to ``count`` random windows of ``length`` steps of ``split`` of ``data`` (the dataset
    and the split of the checkpoint's training run), each of the dataset's columns stacked:
    ``frames (N, length, C, S, S)`` uint8 as the dataset stores them (3000 windows of 19 frames
    at 64 px: 0.70 GB, not 2.80 GB as float), ``actions (N, length, A)``, ``rewards (N,
    length)``, ``states``..."""
    try:
        dataset = EpisodeWindows(data.path, length, split=split, stride=stride,
                                 split_fractions=data.split_fractions, seed=data.split_seed)
    except ValueError as error:
        raise ValueError(f"{split} windows of {length} steps from {data.path}: {error}") from error
    chosen = np.random.default_rng(seed).choice(len(dataset), min(len(dataset), count),
                                                replace=False)
    items = []
    for index in chosen:  # each window's frames back to the dataset's bytes as it is read
        item = dataset[int(index)]
        item["frames"] = item["frames"].mul_(255.0).round_().to(torch.uint8).contiguous()
        items.append(item)
    return collate(items)


def reward_errors(predicted: Tensor, true: Tensor, near_goal: Tensor) -> dict[str, float]:
    """RMSE and bias of ``predicted − true`` rewards, and the RMSE where ``near_goal``."""
    error = (predicted - true).double()
    return {"rmse": error.pow(2).mean().sqrt().item(), "bias": error.mean().item(),
            "rmse_near_goal": error[near_goal].pow(2).mean().sqrt().item()}


def save_refit(path: Path, model: SVGWorldModel, loaded: LoadedModel,
               refit: dict[str, Any]) -> Path:
    """Write ``model`` as a checkpoint that ``plan``, ``rl``, ``collect`` and ``mbrl`` read like
    a trained one: the source checkpoint's run config (with the new head's settings) and step,
    and ``refit`` (how it was fitted) under ``extra``."""
    payload = read_checkpoint(loaded.path)
    config = copy.deepcopy(payload["config"])
    config.setdefault("model", {}).update(reward_input=model.config.reward_input,
                                          reward_output=model.config.reward_output)
    return save_checkpoint(path, model=model, optimizer=None, step=payload["step"],
                           config=config, rng={}, extra={"reward_refit": refit})


def plot_rewards(predicted: dict[str, Tensor], true: Tensor, path: Path) -> None:
    """``rewards.png``: each head's predicted rewards against the true ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(predicted), figsize=(4.5 * len(predicted), 4),
                                sharex=True, sharey=True, squeeze=False)
    low, high = float(true.min()), float(true.max())
    for axis, (name, rewards) in zip(axes[0], predicted.items(), strict=True):
        axis.scatter(true.flatten(), rewards.flatten(), s=2, alpha=0.3)
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        axis.set(title=name, xlabel="true reward", ylabel="predicted along the rollout")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path, "plot") as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def refit_reward(config: RefitRewardConfig, out_dir: Path) -> dict[str, Any]:
    """Refit the head, score both heads, save the refit; returns ``results.json``'s content."""
    config.validate()
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    loaded = load_planning_checkpoint(str(config.checkpoint), device)
    if loaded.noether is not None:
        raise ValueError(f"checkpoint: {str(loaded.path)!r} carries a Noether embedding g_φ, "
                         "whose tailoring would change the features the head is fitted on; "
                         "expected a plain world model")
    data = training_data_settings(loaded.train_config, config.dataset)
    context = loaded.context_frames
    length = context + config.horizon
    start = time.perf_counter()
    train = sample_windows(data, length, "train", config.windows, config.stride, config.seed)
    try:
        val = sample_windows(data, length, "val", max(1, config.windows // 5), config.stride,
                             config.seed + 1)
        scored_on = "val"
    except ValueError as error:
        # a few-episode dataset may hold no validation episode: score on what was fitted
        print(f"refit_reward: no validation windows ({error}); scoring on the training windows")
        val, scored_on = train, "train"
    train, val = ({key: value.to(device) for key, value in part.items()}
                  for part in (train, val))
    refit = refit_reward_head(loaded.model, train["frames"], train["actions"], train["rewards"],
                              context, config.reward_input, config.reward_output,
                              config.fit_steps, config.seed, config.batch_size, config.lr)
    fit_seconds = time.perf_counter() - start
    true = val["rewards"][:, context - 1:-1].cpu()
    near_goal = true >= torch.quantile(true.flatten().double(), 1 - NEAR_GOAL_FRACTION).float()
    heads = {"checkpoint's head": loaded.model, "refit": refit}
    predicted = {name: rollout_rewards(model, val["frames"], val["actions"], context).cpu()
                 for name, model in heads.items()}
    saved = save_refit(out_dir / "checkpoints" / "last.pt", refit, loaded, {
        "source": str(loaded.path), "dataset": data.path, "windows": len(train["frames"]),
        "horizon": config.horizon, "fit_steps": config.fit_steps, "seed": config.seed})
    plot_rewards(predicted, true, out_dir / "rewards.png")
    document = {
        "config": asdict(config), "checkpoint": str(loaded.path), "saved": str(saved),
        "dataset": data.path, "real_env_steps": loaded.real_steps,
        "train_windows": len(train["frames"]), "scored_on": scored_on,
        "scored_windows": len(val["frames"]),
        "near_goal_reward": float(true[near_goal].min()), "fit_seconds": fit_seconds,
        "reward_errors": {name: reward_errors(rewards, true, near_goal)
                          for name, rewards in predicted.items()},
    }
    write_json(out_dir / "results.json", document)
    return document


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control refit_reward``."""
    config = to_dataclass(RefitRewardConfig, cfg)
    out_dir = run_dir()
    document = refit_reward(config, out_dir)
    print(f"refit a {config.reward_input} / {config.reward_output} reward head on "
          f"{document['train_windows']} windows of {document['dataset']} "
          f"({document['fit_seconds']:.0f} s); validation reward RMSE along "
          f"{config.horizon}-step rollouts (near the goal, reward ≥ "
          f"{document['near_goal_reward']:.3f}):")
    for name, errors in document["reward_errors"].items():
        print(f"  {name:<18} {errors['rmse']:.4f} ({errors['rmse_near_goal']:.4f})")
    print(f"checkpoint: {document['saved']}\nresults: {out_dir / 'results.json'}")
