"""Are the uncertainties that `discover` reports for fitted constants calibrated?

For each system the true law (spring ``q**2 + c*p**2``, c = 1; pendulum ``p**2 - k*cos(q)``,
k = 3) is fitted as the pipeline fits it (smoothed training states, ``search.refine_steps`` Adam
steps) on many independent HNN-style data draws, and its constant gets the pipeline's
delete-one-trajectory jackknife (:func:`noether_control.discovery.discover.constant_uncertainty`,
default ``SearchConfig``). A calibrated standard error matches the scatter of the estimate over
draws (ratio of that scatter to the root-mean-square standard error ~1), and the 95% interval
covers the true constant on ~95% of draws.

    python benchmarks/bench_constant_uncertainty.py [--seeds 40] [--systems spring pendulum]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_spring_constant import SPRING_LAW  # run as a script: benchmarks/ is on the path

from noether_control.discovery.data import generate
from noether_control.discovery.discover import Candidate, SearchConfig, constant_uncertainty
from noether_control.discovery.expressions import Expr, binary, inp, param, unary
from noether_control.discovery.fitting import FitData, fit_formulas

LAWS: dict[str, tuple[Expr, float]] = {
    "spring": (SPRING_LAW, 1.0),
    "pendulum": (binary("sub", unary("square", inp(1)),
                        binary("mul", param(), unary("cos", inp(0)))), 3.0),
}
"""Each system's law with one constant, and that constant's true value."""


def one_draw(system: str, seed: int, config: SearchConfig) -> tuple[float, float, np.ndarray]:
    """(fitted constant, standard error, 95% interval) on data draw ``seed``, split
    as ``discover`` splits it."""
    law, _ = LAWS[system]
    rng = np.random.default_rng(seed)
    train, _ = generate(system, 50, 0.1, rng).split(0.5, rng)
    points, segments = train.smoothed(config.smooth_window).points()
    data = FitData.from_arrays(points, segments, dtype=getattr(torch, config.fit_dtype))
    fit = fit_formulas([law], data, steps=config.refine_steps, lr=config.fit_lr)
    candidate = Candidate(law, fit.params[0, :1].to(torch.float64).numpy(), 0.0, 0.0)
    constant_uncertainty([candidate], data, config)
    return float(candidate.params[0]), float(candidate.fit_stderr[0]), candidate.fit_interval[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="independent data draws")
    parser.add_argument("--systems", nargs="+", default=list(LAWS), choices=list(LAWS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SearchConfig()
    print(f"{args.seeds} data draws per system (25 training trajectories each)")
    print("system    true   mean est  std over draws  rms SE   std/SE  "
          "95% interval covers  s/draw")
    for system in args.systems:
        start = time.perf_counter()
        draws = [one_draw(system, seed, config) for seed in range(args.seeds)]
        seconds = (time.perf_counter() - start) / args.seeds
        estimates = np.array([d[0] for d in draws])
        errors = np.array([d[1] for d in draws])
        truth = LAWS[system][1]
        covered = np.mean([low <= truth <= high for _, _, (low, high) in draws])
        spread = float(estimates.std(ddof=1))
        rms_error = float(np.sqrt(np.mean(errors**2)))
        print(f"{system:<8} {truth:5.2f}  {estimates.mean():9.4f}  {spread:14.4f}  "
              f"{rms_error:6.4f}  {spread / rms_error:6.2f}  {covered:19.2f}  {seconds:6.2f}")


if __name__ == "__main__":
    main()
