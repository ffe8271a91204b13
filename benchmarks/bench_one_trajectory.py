"""Discovery on one long, noisy, slightly damped measurement, read from a file.

The setting of Schmidt & Lipson's real pendulum: a single recording, irregular time stamps
(dropped samples), observation noise and a little friction. This script simulates one
(``H = p**2 - k*cos(q)`` with k = 2.4, damping 0.005 on p, 600 of 900 samples over 30 s kept,
noise 0.01), writes it as a CSV without a trajectory column, and runs the whole ``discover``
pipeline on it as a user would, with default settings (the random-state null is then ``box``,
chosen automatically for one trajectory; the training half is cut into tailoring examples of
``scoring.example_length`` samples). It prints the
chosen law with its constant and 95% interval, the RMSE table, the run time and the peak memory.

    python benchmarks/bench_one_trajectory.py [--seed 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

from noether_control.discovery.discover import DataConfig, DiscoverConfig, discover

STIFFNESS = 2.4
DAMPING = 0.005


def write_measurement(path: Path, seed: int) -> None:
    """The damped pendulum recording as ``t,q,p`` CSV."""
    rng = np.random.default_rng(seed)

    def vector_field(_: float, state: np.ndarray) -> list[float]:
        return [2.0 * state[1], -STIFFNESS * np.sin(state[0]) - DAMPING * state[1]]

    times = np.sort(rng.choice(np.linspace(0.0, 30.0, 900), 600, replace=False))
    solution = solve_ivp(vector_field, (0.0, 30.0), [1.2, 0.0], t_eval=times, rtol=1e-10,
                         atol=1e-10)
    states = solution.y.T + rng.normal(0.0, 0.01, size=(len(times), 2))
    rows = "".join(f"{t:.4f},{q:.5f},{p:.5f}\n" for t, (q, p) in zip(times, states, strict=True))
    path.write_text("t,q,p\n" + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3, help="seeds the simulated measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pendulum.csv"
        write_measurement(path, args.seed)
        config = DiscoverConfig(data=DataConfig(path=str(path), units={"q": "rad", "p": "rad/s"}),
                                plot=False)
        start = time.perf_counter()
        results = discover(config, Path(folder))
        seconds = time.perf_counter() - start
    chosen = results["formulas"][0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\nsimulated: p**2 - {STIFFNESS}*cos(q), damping {DAMPING}; chosen: {chosen['fitted']}"
          f" (fit {chosen['params_before_meta'] or chosen['params']}, 95% interval "
          f"{chosen['fit_interval']}); run {seconds / 60:.1f} min, peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
