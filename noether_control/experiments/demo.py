"""``noether-control demo``: the main job end to end with the small default config.

The demo is a sequence of :class:`Stage` s run in order; each stage takes the validated
:class:`DemoConfig` and the outputs of the stages before it, and returns its own outputs (a
JSON-able dict) which end up under its name in the run directory's ``results.json``. New
stages are appended to :data:`STAGES`. Most of the demo's few minutes go to the ``world_model``
and ``noether`` stages.

Stages now:

1. ``collect``: a small Minari dataset of the pendulum under smooth random (OU) actions,
   written inside the run directory;
2. ``windows``: opens that dataset as :class:`~noether_control.data.windows.EpisodeWindows`
   with the world model's window and split (train/val/test) to check it is ready for it;
3. ``gif``: a GIF of a grid of sub-envs (rows: PixelPendulum, PixelPendulumRandom,
   PixelDoublePendulum; columns: sub-envs) acting under OU noise;
4. ``world_model``: trains the default world model on the dataset and evaluates it on the test
   episodes against the last-frame and mean-frame predictors (``world_model/evaluate/``);
5. ``noether``: a small Algorithm 1 from that model (the baseline, E₁): a more-steps control and
   Noether meta-trained for a few more steps, compared side by side on the same test windows
   (:func:`noether_control.experiments.compare.demo_comparison`);
6. ``planning``: a few seeded episodes of MPC through the trained world model beside random
   actions on the same seeds (:func:`noether_control.agents.plan.plan_episodes`), with their
   returns, ms per action and a GIF of the real frames beside what the model imagines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from noether_control.agents.collect import CollectConfig, collect
from noether_control.agents.plan import AgentConfig, PlanConfig, plan_episodes
from noether_control.agents.plan_table import markdown_table, table_rows, write_outputs
from noether_control.agents.policies import OUPolicy
from noether_control.data.env_config import EnvConfig, make_vector_env
from noether_control.data.windows import EpisodeWindows
from noether_control.evaluation.evaluate import EvaluateConfig, evaluate_checkpoint
from noether_control.experiments.compare import DemoComparisonConfig, demo_comparison
from noether_control.runtime import (
    atomic_path,
    compose_command,
    run_dir,
    seed_everything,
    to_dataclass,
    write_json,
)
from noether_control.training.config import TrainCommandConfig
from noether_control.training.train import train_world_model


@dataclass
class GifConfig:
    """The ``gif`` stage: a grid animation of a few sub-envs of each pixel env."""

    env_ids: list[str] = field(
        default_factory=lambda: [
            "NoetherControl/PixelPendulum-v0",
            "NoetherControl/PixelPendulumRandom-v0",
            "NoetherControl/PixelDoublePendulum-v0",
        ]
    )
    """One row per env id."""
    num_envs: int = 4
    """Columns: sub-envs per env."""
    steps: int = 100
    """Frames after the first (at most the envs' 200-step limit)."""
    image_size: int = 64
    """Frame side in pixels as rendered by the envs."""
    scale: int = 2
    """Integer upscaling of each frame in the GIF."""
    fps: int = 20
    """Frames per second of the GIF."""
    theta: float = 0.15
    """Mean reversion of the actions' OU noise (see conf/policy/ou.yaml)."""
    sigma: float = 0.3
    """Scale of the actions' OU noise."""


@dataclass
class WorldModelStageConfig:
    """The ``world_model`` stage: train the world model, then evaluate it."""

    preset: str = "demo"
    """The ``train`` command's preset (``conf/commands/train/experiment/``) that defines the
    model and its training: the stage trains exactly ``train experiment=PRESET``."""
    overrides: list[str] = field(default_factory=list)
    """More ``train`` overrides on top of the preset, e.g. ``[train.steps=2000]``."""
    horizon: int = 25
    """Evaluation horizon (the per-horizon table and the reference predictors)."""
    max_sequences: int | None = None
    """Test windows evaluated, evenly spread; null: every non-overlapping one."""


@dataclass
class PlanningStageConfig:
    """The ``planning`` stage: MPC through the trained model beside random actions."""

    enabled: bool = True
    """False skips the stage."""
    episodes: int = 4
    """Seeded episodes per agent (all run in parallel)."""
    seed: int = 1000
    """First episode seed (not among the collection's seeds)."""
    planner: dict[str, Any] = field(default_factory=lambda: {"kind": "mppi"})
    """A planner group node (``conf/planner``)."""
    record: int = 2
    """Episodes shown in the GIF."""


@dataclass
class DemoConfig:
    """Config of ``noether-control demo`` (``conf/commands/demo/demo.yaml``)."""

    seed: int = 0
    """Seeds every stage."""
    threads: int | None = 1
    """Torch CPU threads; 1 because on a small machine shared with other jobs, more threads
    than free cores made training several times slower; null: torch's default."""
    collect: CollectConfig = field(default_factory=CollectConfig)
    gif: GifConfig = field(default_factory=GifConfig)
    world_model: WorldModelStageConfig = field(default_factory=WorldModelStageConfig)
    noether: DemoComparisonConfig = field(default_factory=DemoComparisonConfig)
    planning: PlanningStageConfig = field(default_factory=PlanningStageConfig)


StageOutputs = dict[str, Any]


@dataclass(frozen=True)
class Stage:
    """One step of the demo: ``run(config, outputs_so_far, out_dir) -> its outputs``."""

    name: str
    summary: str
    run: Callable[[DemoConfig, dict[str, StageOutputs], Path], StageOutputs]


def collect_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """Collect the demo dataset (see ``noether_control.agents.collect``)."""
    return collect(config.collect)


def windows_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """Open the collected dataset as the world model's train/val/test windows (its context and
    training horizon, its split) and read one of each."""
    data = world_model_config(config, outputs["collect"]["path"]).data
    summary: StageOutputs = {}
    for split in ("train", "val", "test"):
        windows = EpisodeWindows(
            data.path,
            data.window,
            split,
            split_fractions=tuple(data.split_fractions),
            seed=data.split_seed,
        )
        item = windows[len(windows) // 2]
        summary[split] = {
            "episodes": len(windows.episode_ids),
            "windows": len(windows),
            "frames_shape": list(item["frames"].shape),
        }
        windows.close()
    return summary


def rollout_frames(
    env_config: EnvConfig, gif: GifConfig, rng: np.random.Generator, seed: int
) -> np.ndarray:
    """Frames uint8 ``(steps + 1, num_envs, H, W, C)`` of one env acting under OU noise."""
    env = make_vector_env(env_config, gif.num_envs, obs_type="pixels")
    try:
        policy = OUPolicy(env.single_action_space, gif.num_envs, gif.theta, gif.sigma)
        observation, _ = env.reset(seed=seed)
        frames = np.empty((gif.steps + 1, *observation.shape), dtype=np.uint8)
        frames[0] = observation
        for step in range(gif.steps):
            observation, *_ = env.step(policy.act(observation, rng))
            frames[step + 1] = observation
    finally:
        env.close()
    return frames


def frame_grid(frames: np.ndarray, scale: int, border: int = 1) -> np.ndarray:
    """Tile ``(R, T, N, H, W, C)`` uint8 frames into ``(T, R*(H+2b)*s, N*(W+2b)*s, C)``.

    Each frame gets a grey ``border`` so the cells stay apart on the envs' white background.
    """
    rows, steps, cols, height, width, channels = frames.shape
    padded = np.pad(
        frames,
        ((0, 0), (0, 0), (0, 0), (border, border), (border, border), (0, 0)),
        constant_values=160,
    )
    height, width = height + 2 * border, width + 2 * border
    grid = padded.transpose(1, 0, 3, 2, 4, 5).reshape(steps, rows * height, cols * width, channels)
    return grid.repeat(scale, axis=1).repeat(scale, axis=2)


def gif_stage(config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path) -> StageOutputs:
    """Write ``pendulums.gif``: a grid of sub-envs of every env in ``config.gif.env_ids``."""
    import imageio.v3 as iio

    gif = config.gif
    if gif.steps < 1 or gif.scale < 1 or gif.fps < 1:
        raise ValueError(
            f"gif: expected positive steps, scale and fps, got {gif.steps}, {gif.scale}, {gif.fps}"
        )
    rng = np.random.default_rng(config.seed)
    rows = [
        rollout_frames(
            EnvConfig(name=env_id, id=env_id, kwargs={"image_size": gif.image_size}),
            gif,
            rng,
            config.seed + row,
        )
        for row, env_id in enumerate(gif.env_ids)
    ]
    grid = frame_grid(np.stack(rows), gif.scale)
    path = out_dir / "pendulums.gif"
    with atomic_path(path) as temporary:
        iio.imwrite(temporary, grid, extension=".gif", duration=1000 / gif.fps, loop=0)
    return {"path": str(path), "frames": len(grid), "size": list(grid.shape[1:3])}


def world_model_config(config: DemoConfig, dataset: str) -> TrainCommandConfig:
    """The training config of the demo's world model (also the Noether stage's baseline): the
    ``train`` command's own composition of ``experiment=PRESET`` and the stage's overrides, on
    the demo's dataset and seed."""
    stage = config.world_model
    composed = compose_command("train", [f"experiment={stage.preset}", *stage.overrides,
                                         f"data.path={dataset}", f"seed={config.seed}"])
    return to_dataclass(TrainCommandConfig, composed)


def world_model_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """Train the world model on the collected dataset, then evaluate it on the test episodes."""
    train_dir = out_dir / "world_model"
    training = world_model_config(config, outputs["collect"]["path"])
    train_world_model(training, train_dir)
    document = evaluate_checkpoint(
        EvaluateConfig(checkpoint=str(train_dir / "checkpoints" / "last.pt"),
                       horizon=config.world_model.horizon,
                       max_sequences=config.world_model.max_sequences, seed=config.seed),
        train_dir / "evaluate",
    )
    model_mse = document["per_horizon"]["mse"]
    references = {name: ref["mse"] for name, ref in document["references"].items()}
    shown = sorted({h for h in (1, 5, 10, 25) if h <= len(model_mse)} | {len(model_mse)})
    return {
        "run_dir": str(train_dir),
        "results": str(train_dir / "evaluate" / "results.json"),
        "mse": {f"h{h}": model_mse[h - 1] for h in shown},
        "references": {name: {f"h{h}": mse[h - 1] for h in shown}
                       for name, mse in references.items()},
        # the world model's yardstick: how many times lower than the better reference (2x at h10)
        "best_reference_over_model": {
            f"h{h}": min(mse[h - 1] for mse in references.values()) / model_mse[h - 1]
            for h in shown
        },
        "beats_references_at_every_horizon": all(
            m < min(ref[i] for ref in references.values()) for i, m in enumerate(model_mse)
        ),
    }


def noether_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """More-steps control vs Noether from the trained world model, compared side by side."""
    if not config.noether.enabled:
        return {"skipped": True}
    baseline = world_model_config(config, outputs["collect"]["path"])
    return demo_comparison(config.noether, baseline, out_dir / "world_model", out_dir / "noether")


def planning_config(config: DemoConfig, kind: str, checkpoint: str | None) -> PlanConfig:
    """The ``plan`` config of one agent of the planning stage."""
    stage = config.planning
    return PlanConfig(agent=AgentConfig(kind=kind), checkpoint=checkpoint,
                      env=config.collect.env, planner=stage.planner, episodes=stage.episodes,
                      num_envs=stage.episodes, seed=stage.seed, device="auto",
                      threads=config.threads, record=stage.record, progress=False)


def check_stages(config: DemoConfig) -> None:
    """Validate every stage's settings before the first stage runs, so that a bad value of a
    late stage fails at once, named by its demo key, rather than after minutes of work."""
    checks = [("world_model", lambda: world_model_config(config, "DATASET").validate())]
    if config.planning.enabled:
        checks.append(("planning", lambda: planning_config(
            config, "mpc", "the demo's world model").validate()))
    if config.noether.enabled and config.noether.meta_steps < 1:
        raise ValueError(f"noether.meta_steps: expected >= 1, got {config.noether.meta_steps}")
    for stage, check in checks:
        try:
            check()
        except ValueError as error:
            raise ValueError(f"{stage} stage: {error} (set under {stage}: in the demo config)") \
                from error


def planning_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """MPC through the trained world model and random actions on the same seeded episodes."""
    stage = config.planning
    if not stage.enabled:
        return {"skipped": True}
    checkpoint = str(out_dir / "world_model" / "checkpoints" / "last.pt")
    runs = {
        "mpc": plan_episodes(planning_config(config, "mpc", checkpoint),
                             out_dir / "planning" / "mpc"),
        "random": plan_episodes(planning_config(config, "random", None),
                                out_dir / "planning" / "random"),
    }
    rows = table_rows(runs, "random")
    write_outputs(rows, runs, "random", out_dir / "planning")
    print(markdown_table(rows, "random"), end="", flush=True)
    return {name: {"mean_return": run["mean_return"], "episode_returns": run["episode_returns"],
                   "ms_per_action": run["ms_per_action"], "gif": run["gif"]}
            for name, run in runs.items()} | {"table": str(out_dir / "planning" / "table.md")}


STAGES: list[Stage] = [
    Stage("collect", "collect a small dataset", collect_stage),
    Stage("windows", "check the dataset as train/val/test windows", windows_stage),
    Stage("gif", "render the pixel environments to a GIF", gif_stage),
    Stage("world_model", "train the world model; evaluate it", world_model_stage),
    Stage("noether", "continue it as control and as Noether; compare", noether_stage),
    Stage("planning", "plan through the trained model beside random actions", planning_stage),
]


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control demo``: run every stage, write ``results.json``."""
    config = to_dataclass(DemoConfig, cfg)
    if config.threads is not None:
        if config.threads < 1:
            raise ValueError(f"threads: expected a positive integer or null, got {config.threads}")
        torch.set_num_threads(config.threads)
    check_stages(config)
    seed_everything(config.seed)
    out_dir = Path(run_dir())
    outputs: dict[str, StageOutputs] = {}
    seconds: dict[str, float] = {}
    for number, stage in enumerate(STAGES, start=1):
        print(f"[{number}/{len(STAGES)}] {stage.name}: {stage.summary}", flush=True)
        started = time.perf_counter()
        outputs[stage.name] = stage.run(config, outputs, out_dir)
        seconds[stage.name] = time.perf_counter() - started
        print(f"      done in {seconds[stage.name]:.1f} s", flush=True)
    results = out_dir / "results.json"
    write_json(results, {**outputs, "seconds": seconds})
    print(
        f"dataset: {outputs['collect']['path']}\n"
        f"gif:     {outputs['gif']['path']}\n"
        + (f"planning gif: {outputs['planning']['mpc']['gif']}\n"
           if outputs["planning"].get("mpc") else "") +
        f"results: {results}"
    )
