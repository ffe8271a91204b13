"""Conservation up to a slow trend: per-trajectory polynomial trends in time.

A measured system loses a little energy (friction, drag), so its energy is conserved only up to
a slow trend: along one long recording the trend, not the noise, dominates the energy's
variance, and no formula passes a variance-ratio filter. Here each trajectory that spans many
oscillations gets a low-order polynomial in time (degree ``search.trend_degree``) removed from a
formula's values before its within-trajectory variance is measured, in place of the mean alone.

"Slow" is relative to the motion: over one or two oscillations a quadratic in time would absorb
part of the motion itself (a formula like ``q`` rises and falls once) and make non-conserved
formulas look conserved, so trajectories spanning fewer than ``search.trend_min_cycles``
oscillations keep degree 0 (the mean only, as before). Over N cycles a polynomial of degree d
absorbs only about (d / N)^2 of a sinusoid's variance, and a function of the slowly drifting
energy stays a function of time that the polynomial follows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from noether_control.discovery.data import Trajectories

HYSTERESIS = 0.3
"""Crossings are counted between ``mean ± HYSTERESIS * std`` of a column, so that noise near
the mean does not count as oscillation."""
MIN_SIGNAL_TO_NOISE = 3.0
"""Columns whose spread along a trajectory is below this many noise standard deviations do not
count oscillations (a nearly constant column's noise would cross the band many times)."""


def oscillation_cycles(states: np.ndarray, noise_std: np.ndarray) -> float:
    """Oscillations ``states`` ``(T, D)`` (one trajectory, smoothed) goes through: half the number
    of crossings between the bands ``mean ± 0.3 std`` of its most oscillating column, counting only
    columns that vary by at least 3 noise standard deviations ``noise_std`` ``(D,)``."""
    centred = states - states.mean(axis=0)
    spread = centred.std(axis=0)
    counts = [0.0]
    for column in np.flatnonzero(spread >= MIN_SIGNAL_TO_NOISE * noise_std):
        values = centred[:, column]
        band = HYSTERESIS * spread[column]
        side = np.sign(values) * (np.abs(values) > band)
        side = side[side != 0]
        counts.append(np.count_nonzero(np.diff(side)) / 2.0)
    return float(max(counts))


def trend_degrees(trajectories: Trajectories, degree: int, min_cycles: float,
                  noise_std: np.ndarray) -> np.ndarray:
    """Per trajectory ``(n,)`` int: ``degree`` for those spanning at least ``min_cycles``
    oscillations (:func:`oscillation_cycles`), 0 for the others."""
    if degree < 0:
        raise ValueError(f"search.trend_degree: expected >= 0, got {degree}")
    cycles = np.array([oscillation_cycles(states, noise_std) for states in trajectories.states])
    lengths = np.array([len(times) for times in trajectories.times])
    # A trend needs more samples than coefficients to leave anything to measure.
    return np.where((cycles >= min_cycles) & (lengths > 2 * (degree + 1)), degree, 0)


def trend_basis(times: Sequence[np.ndarray], degrees: np.ndarray) -> np.ndarray:
    """Per point an orthonormal polynomial basis of its trajectory, ``(N, max_degree + 1)``.

    Rows follow the trajectories' points stacked in order; for trajectory ``i`` the columns
    ``0 .. degrees[i]`` are orthonormal over its points (column 0 the constant), the rest zero,
    so projecting a formula's values on the columns within each trajectory removes its
    polynomial trend (degree 0: its mean).
    """
    width = int(degrees.max()) + 1
    blocks = []
    for stamps, degree in zip(times, degrees, strict=True):
        # Legendre-like: scaled time in [-1, 1], then QR for exact orthonormality.
        span = max(float(stamps[-1] - stamps[0]), 1e-300)
        scaled = 2.0 * (stamps - stamps[0]) / span - 1.0
        vandermonde = scaled[:, None] ** np.arange(degree + 1)[None, :]
        orthonormal, triangular = np.linalg.qr(vandermonde)
        orthonormal = orthonormal * np.sign(np.diag(triangular))[None, :]
        block = np.zeros((len(stamps), width))
        block[:, :degree + 1] = orthonormal
        blocks.append(block)
    return np.concatenate(blocks)


def detrended(values: Tensor, basis: Tensor, segments: Tensor,
              point_weights: Tensor | None = None) -> Tensor:
    """``values`` ``(n, N)`` minus each trajectory's polynomial trend (per row).

    Args:
        values: per formula its values at the stacked points.
        basis: from :func:`trend_basis`, ``(N, B)``, same dtype as ``values``.
        segments: each point's trajectory index ``(N,)``.
        point_weights: ``(n, N)`` non-negative weights of a weighted least-squares trend (a
            left-out point has weight 0); None for unit weights, where the orthonormal basis
            makes the fit a projection.
    """
    n_segments = int(segments.max()) + 1
    shape = (values.shape[0], n_segments, basis.shape[1])
    if point_weights is None:
        moments = values.new_zeros(shape).index_add(1, segments, values[:, :, None] * basis)
        return values - (moments[:, segments, :] * basis).sum(dim=2)
    weights = point_weights.to(values.dtype)
    moments = values.new_zeros(shape).index_add(1, segments,
                                                 (weights * values)[:, :, None] * basis)
    outer = basis[:, :, None] * basis[:, None, :]
    gram = values.new_zeros((*shape, basis.shape[1])).index_add(
        1, segments, weights[:, :, None, None] * outer)
    # Columns that are zero for a trajectory (its degree is lower) or a trajectory left out
    # entirely have a zero diagonal: 1 there gives them coefficient 0 and leaves the rest exact.
    empty = gram.diagonal(dim1=-2, dim2=-1) <= 0
    gram = gram + torch.diag_embed(empty.to(values.dtype))
    coefficients = torch.linalg.solve(gram, moments.unsqueeze(-1)).squeeze(-1)
    return values - (coefficients[:, segments, :] * basis).sum(dim=2)
