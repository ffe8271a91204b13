"""How precisely can any fit pin down the spring's constant from HNN-style data?

The discovery target: the spring law ``q**2 + c*p**2``, c within 2% of 1, from 25 training
trajectories of 30 samples with observation noise sigma = 0.1. This script fits that one formula
(the pipeline's fitter, :func:`fit_formulas`) on many independent data draws and prints, per
smoothing window, the mean and scatter of the fitted c, the fraction of draws within 2% of 1, and
the Cramér-Rao-style lower bound on the standard error of c that the same data implies for an
estimator that, like every conservation fit, sees states but not the dynamics:

    SE(c) >= 1 / sqrt(sum_j sum_t (p_t^2 - mean_j p^2)^2 / (sigma^2 |grad f|^2))

over trajectories j and samples t of the clean states (the information about c carried by each
sample's displacement across the level sets of f = q^2 + p^2, with each trajectory's level a free
nuisance parameter). When the measured scatter sits at this bound, no better objective can meet
a tolerance well under it on a single draw.

A last row goes past what discovery may know: an oracle handed the dynamics themselves (every
trajectory is q = a.(cos 2t, sin 2t), p = b.(cos 2t, sin 2t)) fits the amplitudes by least
squares and returns c = sum |a|^2 / sum |b|^2, noise-debiased. Time structure and the true
model pool all 30 samples of a trajectory into two amplitudes; if even this misses 2% on many
draws, the data, not the estimator, is the limit.

The script also prints the exact Cramér-Rao bound for that setting: any unbiased estimator that
knows every trajectory is the ellipse ``q**2 + c*p**2 = const`` traversed at a common angular
frequency omega (unknown: a Hamiltonian ``a*(q**2 + c*p**2)`` has omega = 2a*sqrt(c)), i.e.
``q = A cos(omega t + phi)``, ``p = -A sin(omega t + phi) / sqrt(c)`` with one amplitude and phase
per trajectory, has SE(c) at least sqrt of the (c, c) entry of the inverse Fisher information of
(c, omega, A_1, phi_1, ..., A_n, phi_n), and so lands within 2% of 1 with probability at most
about erf(0.02 / (sqrt(2) SE)) (the Gaussian estimator at the bound). ``--trajectories`` scales
the data to show how many trajectories "within 2%" on most draws needs.

    python benchmarks/bench_spring_constant.py [--seeds 40] [--windows 0 7 15] [--trajectories 25]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from noether_control.discovery.data import Trajectories, generate
from noether_control.discovery.expressions import binary, inp, param, unary
from noether_control.discovery.fitting import FitData, fit_formulas

SPRING_LAW = binary("add", unary("square", inp(0)),
                    binary("mul", param(), unary("square", inp(1))))
"""q**2 + c*p**2."""


def fitted_constant(train: Trajectories, window: int) -> float:
    """c fitted by minimising the variance ratio on ``train`` smoothed over ``window`` samples."""
    points, segments = train.smoothed(window).points()
    fit = fit_formulas([SPRING_LAW], FitData.from_arrays(points, segments), steps=300, lr=0.05)
    return float(fit.params[0, 0])


def standard_error_bound(train: Trajectories, noise_std: float) -> float:
    """The lower bound above, from the clean states of ``train``."""
    information = 0.0
    for clean in train.clean:
        q, p = clean[:, 0], clean[:, 1]
        displacement = p**2 - np.mean(p**2)
        gradient_sq = 4.0 * (q**2 + p**2)
        information += float(np.sum(displacement**2 / (noise_std**2 * gradient_sq)))
    return 1.0 / math.sqrt(information)


def model_bound(train: Trajectories, noise_std: float, frequency: float = 2.0) -> float:
    """Cramér-Rao bound on SE(c) when the solution form is known (see the module docstring)."""
    n = len(train.clean)
    rows = []
    for j, (clean, times) in enumerate(zip(train.clean, train.times, strict=True)):
        q, p = clean[:, 0], clean[:, 1]
        amplitude = float(np.sqrt(np.mean(q**2 + p**2)))
        velocity = np.stack([2.0 * p, -2.0 * q], axis=1)  # d(q, p)/dt of the true system
        # derivatives of the observed (q, p) (T, 2) at c = 1 for c, omega, then A_j, phi_j
        jacobian = np.zeros((len(times), 2, 2 + 2 * n))
        jacobian[:, 1, 0] = -0.5 * p
        jacobian[:, :, 1] = times[:, None] * velocity / frequency
        jacobian[:, :, 2 + 2 * j] = clean / amplitude
        jacobian[:, :, 3 + 2 * j] = velocity / frequency
        rows.append(jacobian.reshape(-1, 2 + 2 * n))
    design = np.concatenate(rows)
    fisher = design.T @ design / noise_std**2
    return float(math.sqrt(np.linalg.inv(fisher)[0, 0]))


def oracle_constant(train: Trajectories, noise_std: float, frequency: float = 2.0) -> float:
    """c from amplitudes fitted with the true solution form (see the module docstring)."""
    squared = np.zeros(2)
    for states, times in zip(train.states, train.times, strict=True):
        basis = np.stack([np.cos(frequency * times), np.sin(frequency * times)], axis=1)
        amplitudes = np.linalg.lstsq(basis, states, rcond=None)[0]  # (2 basis, 2 coordinates)
        # E|a_hat|^2 = |a|^2 + sigma^2 trace((X^T X)^-1): remove the noise's share
        squared += (amplitudes**2).sum(axis=0) - noise_std**2 * np.trace(
            np.linalg.inv(basis.T @ basis))
    return float(squared[0] / squared[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40, help="independent data draws")
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 7, 15],
                        help="smoothing windows (0: raw states; 7: the discovery default)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--trajectories", type=int, default=25,
                        help="training trajectories per draw (HNN: 25 of 50)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    constants: dict[int, list[float]] = {window: [] for window in args.windows}
    bounds, model_bounds, oracle = [], [], []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        train, _ = generate("spring", 2 * args.trajectories, args.noise, rng).split(0.5, rng)
        bounds.append(standard_error_bound(train, args.noise))
        model_bounds.append(model_bound(train, args.noise))
        oracle.append(oracle_constant(train, args.noise))
        for window in args.windows:
            constants[window].append(fitted_constant(train, window))
    print(f"spring, {args.trajectories} training trajectories x 30 samples, noise {args.noise}, "
          f"{args.seeds} data draws (seed 0 = discover's default data)")
    print(f"lower bound on SE(c): {np.mean(bounds):.4f} (mean over draws)")
    model_se = float(np.mean(model_bounds))
    print(f"Cramer-Rao bound on SE(c) knowing the solution form: {model_se:.4f}; "
          f"within 2% of 1 at most ~{math.erf(0.02 / (math.sqrt(2) * model_se)):.2f} of draws")
    print("window  mean c   std c   std/bound  within 2% of 1  seed 0")
    for window, values in constants.items():
        values_array = np.asarray(values)
        spread = float(values_array.std(ddof=1))
        within = np.mean(np.abs(values_array - 1) < 0.02)
        print(f"{window:6d}  {values_array.mean():.4f}  {spread:.4f}  "
              f"{spread / np.mean(bounds):9.2f}  {within:14.2f}  {values_array[0]:.4f}")
    oracle_array = np.asarray(oracle)
    print(f"oracle  {oracle_array.mean():.4f}  {oracle_array.std(ddof=1):.4f}  "
          f"{oracle_array.std(ddof=1) / np.mean(bounds):9.2f}  "
          f"{np.mean(np.abs(oracle_array - 1) < 0.02):14.2f}  {oracle_array[0]:.4f}"
          "  (knows the dynamics)")


if __name__ == "__main__":
    main()
