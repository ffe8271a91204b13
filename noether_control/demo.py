"""``noether-control demo``: the main job end to end with the small default config.

The demo is a sequence of :class:`Stage` s run in order; each stage takes the validated
:class:`DemoConfig` and the outputs of the stages before it, and returns its own outputs (a
JSON-able dict) which end up under its name in the run directory's ``results.json``. New
stages are appended to :data:`STAGES`. The whole demo takes about one minute on a quiet 2-core
CPU, almost all of it in the ``noether`` stage.

Stages now:

1. ``collect``: a small Minari dataset of the pendulum under smooth random (OU) actions,
   written inside the run directory;
2. ``windows``: opens that dataset as :class:`~noether_control.data.windows.EpisodeWindows`
   (train/val/test) to check it is ready for the world model;
3. ``gif``: a GIF of a grid of sub-envs (rows: PixelPendulum, PixelPendulumRandom,
   PixelDoublePendulum; columns: sub-envs) acting under OU noise;
4. ``noether``: a small Algorithm 1 on the collected dataset — baseline, more-steps control and
   Noether trained briefly, then compared side by side on the same test windows
   (:func:`noether_control.noether.compare.demo_comparison`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from noether_control.agents.policies import OUPolicy
from noether_control.data.collect import CollectConfig, collect
from noether_control.data.env_config import EnvConfig, make_vector_env
from noether_control.data.windows import EpisodeWindows
from noether_control.noether.compare import DemoComparisonConfig, demo_comparison
from noether_control.runtime import atomic_path, run_dir, seed_everything, to_dataclass, write_json


@dataclass
class WindowsCheckConfig:
    """How the ``windows`` stage opens the collected dataset."""

    #: steps per window (the world model's context + horizon)
    window: int = 12
    #: train/val/test fractions of episodes
    split_fractions: list[float] = field(default_factory=lambda: [0.75, 0.125, 0.125])


@dataclass
class GifConfig:
    """The ``gif`` stage: a grid animation of a few sub-envs of each pixel env."""

    #: one row per env id
    env_ids: list[str] = field(
        default_factory=lambda: [
            "NoetherControl/PixelPendulum-v0",
            "NoetherControl/PixelPendulumRandom-v0",
            "NoetherControl/PixelDoublePendulum-v0",
        ]
    )
    #: columns: sub-envs per env
    num_envs: int = 4
    #: frames after the first (at most the envs' 200-step limit)
    steps: int = 100
    #: frame side in pixels as rendered by the envs
    image_size: int = 64
    #: integer upscaling of each frame in the GIF
    scale: int = 2
    #: frames per second of the GIF
    fps: int = 20
    #: OU noise of the actions (see conf/policy/ou.yaml)
    theta: float = 0.15
    sigma: float = 0.3


@dataclass
class DemoConfig:
    """Config of ``noether-control demo`` (``conf/commands/demo/demo.yaml``)."""

    #: seeds every stage
    seed: int = 0
    collect: CollectConfig = field(default_factory=CollectConfig)
    windows: WindowsCheckConfig = field(default_factory=WindowsCheckConfig)
    gif: GifConfig = field(default_factory=GifConfig)
    noether: DemoComparisonConfig = field(default_factory=DemoComparisonConfig)


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
    """Collect the demo dataset (see ``noether_control.data.collect``)."""
    return collect(config.collect)


def windows_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """Open the collected dataset as train/val/test windows and read one of each."""
    summary: StageOutputs = {}
    for split in ("train", "val", "test"):
        windows = EpisodeWindows(
            outputs["collect"]["path"],
            config.windows.window,
            split,
            split_fractions=tuple(config.windows.split_fractions),
            seed=config.seed,
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


def noether_stage(
    config: DemoConfig, outputs: dict[str, StageOutputs], out_dir: Path
) -> StageOutputs:
    """Baseline vs more-steps control vs Noether, trained briefly and compared side by side."""
    if not config.noether.enabled:
        return {"skipped": True}
    return demo_comparison(config.noether, outputs["collect"]["path"], out_dir / "noether",
                           config.seed)


STAGES: list[Stage] = [
    Stage("collect", "collect a small dataset", collect_stage),
    Stage("windows", "check the dataset as train/val/test windows", windows_stage),
    Stage("gif", "render the pixel environments to a GIF", gif_stage),
    Stage("noether", "train baseline, control and Noether briefly; compare", noether_stage),
]


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control demo``: run every stage, write ``results.json``."""
    config = to_dataclass(DemoConfig, cfg)
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
        f"results: {results}"
    )
