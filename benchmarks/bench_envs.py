"""Frames per second of the pixel pendulum environments against Gymnasium's own renderer.

Usage: ``.venv/bin/python benchmarks/bench_envs.py [--quick] [--seconds S] [--rounds R]``

The reference, measured in the same run, is Gymnasium's ``Pendulum-v1`` with
``render_mode="rgb_array"`` (a 500×500 pygame frame per step) resized to 64×64 with PIL's
vectorised box filter: what one would do without this package. Each of our rows steps the native
vector environment (physics + 64×64 RGB observations of every sub-environment) with random
torques; the ratio column divides its frames/s by the reference's. The last rows show the
double pendulum (first link from a frame table, second link drawn directly, 24 RK4 substeps)
and the bare frame-table gather, an upper bound for the single pendulum. All configurations
are measured in interleaved rounds (3 of 1 s each by default, one of 0.3 s with ``--quick``)
and each row reports its median.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from PIL import Image

import noether_control.envs as envs
from noether_control.envs.rendering import pendulum_frame_table

# Gymnasium's rgb_array rendering initialises a pygame display; keep it headless.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

IMAGE_SIZE = 64


Stepper = Callable[[], int]
"""Advances a benchmark by one step and returns the number of frames it produced."""


def frames_per_second(step: Stepper, seconds: float) -> float:
    """Call ``step`` for about ``seconds``; return frames/s."""
    frames = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        frames += step()
        elapsed = time.perf_counter() - start
    return frames / elapsed


def gymnasium_reference(rng: np.random.Generator) -> Stepper:
    """Pendulum-v1 rendered by pygame at 500×500, box-filtered down to 64×64."""
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=0)
    torques = rng.uniform(-2.0, 2.0, (1024, 1)).astype(np.float32)
    counter = iter(range(1 << 62))

    def step() -> int:
        _, _, _, truncated, _ = env.step(torques[next(counter) % len(torques)])
        if truncated:
            env.reset()
        frame = env.render()
        Image.fromarray(frame).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
        return 1

    return step


def vector_env(env_id: str, num_envs: int, copy: bool, rng: np.random.Generator) -> Stepper:
    """Native vector env stepping ``num_envs`` sub-environments with pixel observations."""
    env = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        image_size=IMAGE_SIZE,
        copy=copy,
    )
    env.reset(seed=0)
    torques = rng.uniform(-2.0, 2.0, (64, num_envs, 1)).astype(np.float32)
    counter = iter(range(1 << 62))

    def step() -> int:
        env.step(torques[next(counter) % len(torques)])
        return num_envs

    return step


def table_gather(num_envs: int, rng: np.random.Generator) -> Stepper:
    """The frame-table gather alone into a preallocated buffer (no physics)."""
    table = pendulum_frame_table(IMAGE_SIZE)
    angles = rng.uniform(-np.pi, np.pi, num_envs)
    out = np.empty((num_envs, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)

    def step() -> int:
        table.gather(angles, out=out)
        return num_envs

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (about 5 s)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median)")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 1.0)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    rng = np.random.default_rng(0)

    steppers: list[tuple[str, Stepper]] = [
        ("Pendulum-v1 rgb_array → 64×64 (reference)", gymnasium_reference(rng))
    ]
    for num_envs in (1, 16, 256):
        for copy in (False, True):
            label = f"PixelPendulum-v0 vector, N={num_envs}, copy={copy}"
            steppers.append((label, vector_env(envs.PENDULUM_ID, num_envs, copy, rng)))
    for num_envs in (1, 16, 256):
        label = f"PixelDoublePendulum-v0 vector, N={num_envs}, copy=False"
        steppers.append((label, vector_env(envs.DOUBLE_PENDULUM_ID, num_envs, False, rng)))
    steppers.append(("frame-table gather only, N=256", table_gather(256, rng)))

    for _, step in steppers:
        step()  # warm-up: first allocations, pygame start-up
    # Rounds interleave all configurations so that load changes on a shared machine hit the
    # reference and the candidates alike; each row reports its median round.
    measured: list[list[float]] = [[] for _ in steppers]
    for _ in range(rounds):
        for index, (_, step) in enumerate(steppers):
            measured[index].append(frames_per_second(step, seconds))
    medians = [float(np.median(values)) for values in measured]
    reference = medians[0]

    width = max(len(label) for label, _ in steppers)
    print(f"{'configuration':<{width}}  {'frames/s':>12}  {'× reference':>11}")
    for (label, _), fps in zip(steppers, medians, strict=True):
        print(f"{label:<{width}}  {fps:>12,.0f}  {fps / reference:>11.1f}")


if __name__ == "__main__":
    main()
