"""Small real datasets and untrained world-model checkpoints shared by the agent tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from noether_control.agents.collect import CollectConfig, DatasetConfig, collect
from noether_control.data.env_config import EnvConfig
from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SIZE = 32
#: PixelPendulum-v0 at 32 px: fast to render and to encode.
PENDULUM_32 = EnvConfig(name="pixel-pendulum", id="NoetherControl/PixelPendulum-v0",
                        kwargs={"image_size": SIZE})


def collect_ou(root: Path, episodes: int, num_envs: int, episode_steps: int,
               **dataset: object) -> dict:
    """OU-policy episodes of :data:`PENDULUM_32` into a dataset under ``root``; collect's
    results (``path``, ``total_steps``, ...)."""
    config = CollectConfig(episodes=episodes, num_envs=num_envs, episode_steps=episode_steps,
                           progress=False, env=PENDULUM_32, policy={"kind": "ou"},  # type: ignore[arg-type]
                           dataset=DatasetConfig(root=str(root), **dataset))  # type: ignore[arg-type]
    return collect(config)


def tiny_checkpoint(path: Path, data_path: str, n_past: int,
                    split_fractions: tuple[float, float, float]) -> Path:
    """An untrained tiny 32 px model saved as a ``train`` checkpoint of ``data_path``."""
    torch.manual_seed(0)
    model = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, action_embed_dim=2))
    config = {"data": {"path": data_path, "n_past": n_past, "n_future": 3,
                       "split_fractions": list(split_fractions), "split_seed": 0}}
    return save_checkpoint(path, model=model, optimizer=None, step=0, config=config, rng={})


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package); the
    benchmarks folder is on ``sys.path`` while it loads, since some import their neighbours."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module
