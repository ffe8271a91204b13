"""Discovery on slowly dissipating recordings: trend-robust scores, noise and smoothing checks
on coarse irregular sampling, and the automatic random-state null."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from test_discovery_cli import TINY, _compose

from noether_control.discovery.data import Trajectories, generate
from noether_control.discovery.discover import run
from noether_control.discovery.expressions import binary, inp, param, unary
from noether_control.discovery.fitting import (
    FitData,
    fit_formulas,
    resolve_random,
    score_formulas,
)
from noether_control.discovery.scoring import ScoringConfig, usefulness_order
from noether_control.discovery.trend import (
    detrended,
    oscillation_cycles,
    trend_basis,
    trend_degrees,
)
from noether_control.discovery.units import parse_unit

Q, P = inp(0), inp(1)
UNITS = [parse_unit("rad"), parse_unit("rad/s")]
STIFFNESS = 9.0
LAW = binary("sub", unary("square", P), binary("mul", param(), unary("cos", Q)))
"""p**2 - k*cos(q)."""
KINETIC = unary("square", P)
"""p**2, which decays with the energy while it oscillates."""


def _recording(seed: int, noise: float = 0.02, damping: float = 0.006, frames: int = 320,
               rate: float = 6.25) -> tuple[Trajectories, np.ndarray]:
    """One damped pendulum recording, ``q' = p, p' = -(k/2) sin q - damping p`` (period ~3 s),
    a tenth of its frames dropped; returns it and its clean states."""
    rng = np.random.default_rng(seed)
    kept = np.sort(rng.choice(frames, frames - frames // 10, replace=False))
    times = kept / rate

    def field(_: float, y: np.ndarray) -> list[float]:
        return [y[1], -0.5 * STIFFNESS * math.sin(y[0]) - damping * y[1]]

    clean = solve_ivp(field, (0, times[-1]), [1.4, 0.0], t_eval=times, rtol=1e-10,
                      atol=1e-10).y.T
    states = clean + rng.normal(0.0, noise, clean.shape)
    return Trajectories(["q", "p"], UNITS, [states], [times]), clean


def _energy(states: np.ndarray) -> np.ndarray:
    return states[:, 1] ** 2 - STIFFNESS * np.cos(states[:, 0])


def _scores(recording: Trajectories, trend: bool) -> tuple[float, np.ndarray]:
    """Fitted k of LAW, and noise-corrected variance ratios (box null) of LAW at that k, LAW at
    k = 6 (a third off) and KINETIC."""
    noise = recording.noise_std()
    points, segments = recording.points()
    basis = trend_basis(recording.times, np.array([2])) if trend else None
    data = FitData.from_arrays(points, segments, random="box", rng=np.random.default_rng(0),
                               noise_var=np.broadcast_to(noise ** 2, points.shape), trend=basis)
    k = float(fit_formulas([LAW], data, steps=300, init=5.0).params[0, 0])
    params = torch.tensor([[k], [6.0], [0.0]], dtype=torch.float64)
    ratios, _, trivial = score_formulas([LAW, LAW, KINETIC], data, params)
    assert not trivial.any()
    return k, ratios.numpy()


def test_a_drifting_law_passes_the_trend_robust_score_and_a_drifting_wrong_formula_does_not(
) -> None:
    recording, clean = _recording(0)
    energy = _energy(clean)
    lost = (energy[0] - energy[-1]) / (energy[0] + STIFFNESS)
    assert 0.25 < lost < 0.45  # a third of the energy's range above its minimum
    k, ratios = _scores(recording, trend=True)
    assert k == pytest.approx(STIFFNESS, rel=0.02)
    assert ratios[0] > 1000
    # Both drift with the energy, but their oscillation is no trend.
    assert ratios[1] < 100 and ratios[2] < 100
    # Without the trend the drift dominates the law's variance along the recording.
    _, strict = _scores(recording, trend=False)
    assert strict[0] < 100


def test_the_trend_is_removed_only_from_trajectories_spanning_many_oscillations() -> None:
    recording, _ = _recording(1)
    noise = recording.noise_std()
    cycles = oscillation_cycles(recording.states[0], noise)
    assert cycles == pytest.approx(recording.times[0][-1] / 3.1, rel=0.15)
    assert trend_degrees(recording, 2, 5.0, noise).tolist() == [2]
    # HNN trajectories span about one oscillation: a quadratic in time would absorb the motion.
    hnn = generate("pendulum", 10, 0.1, np.random.default_rng(0)).smoothed(7)
    assert trend_degrees(hnn, 2, 5.0, hnn.noise_std()).tolist() == [0] * 10
    with pytest.raises(ValueError, match="trend_degree: expected >= 0, got -1"):
        trend_degrees(recording, -1, 5.0, noise)


def test_weighted_trend_removal_is_a_least_squares_polynomial_fit_per_trajectory() -> None:
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 5, 30)), np.sort(rng.uniform(0, 2, 20))]
    degrees = np.array([2, 1])
    basis = torch.as_tensor(trend_basis(times, degrees))
    segments = torch.as_tensor(np.repeat([0, 1], [30, 20]))
    values = torch.as_tensor(rng.normal(size=(3, 50)))
    weights = torch.as_tensor(rng.integers(0, 2, size=(3, 50)).astype(np.float64))
    weights[:, [0, 1, 2, 30, 31]] = 1.0  # enough kept points in each trajectory
    plain = detrended(values, basis, segments)
    torch.testing.assert_close(detrended(values, basis, segments, torch.ones_like(values)), plain)
    weighted = detrended(values, basis, segments, weights)
    for row in range(3):
        for segment, (stamps, degree) in enumerate(zip(times, degrees, strict=True)):
            mask = (segments == segment).numpy()
            keep = weights[row, mask].numpy() > 0
            y = values[row, mask].numpy()
            coefficients = np.polyfit(stamps[keep], y[keep], degree)
            np.testing.assert_allclose(weighted[row, mask].numpy(),
                                       y - np.polyval(coefficients, stamps), atol=1e-8)


def test_noise_and_smoothing_checks_on_coarse_irregular_sampling() -> None:
    recording, _ = _recording(2, noise=0.01)
    # Plain third differences ignore the time stamps: dropped frames put the motion into them.
    plain = np.sqrt(np.mean(np.diff(recording.states[0], n=3, axis=0) ** 2, axis=0) / 20)
    assert plain.min() > 0.03
    np.testing.assert_allclose(recording.noise_std(), 0.01, rtol=0.15)
    # 18 samples per oscillation: a 7-sample cubic flattens the motion, so raw states are used.
    window, excess = recording.checked_smoothing(7)
    assert (window, excess > 1.3) == (0, True)
    hnn = generate("pendulum", 20, 0.1, np.random.default_rng(0))
    window, excess = hnn.checked_smoothing(7)
    assert window == 7 and excess < 1.15


def test_random_null_is_chosen_from_the_number_of_trajectories() -> None:
    assert resolve_random("auto", 1) == ("box", "auto: one training trajectory")
    assert resolve_random("auto", 25)[0] == "pooled"
    assert resolve_random("pooled", 1) == ("pooled", "set by search.random")
    with pytest.raises(ValueError, match=r"search.random: expected one of .*got 'uniform'"):
        resolve_random("uniform", 3)


def test_discover_picks_and_reports_the_null_for_one_recording_or_several(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recording, _ = _recording(3, frames=400)
    one = tmp_path / "one.csv"
    one.write_text("t,q,p\n" + "".join(f"{t},{q},{p}\n" for t, (q, p) in
                                       zip(recording.times[0], recording.states[0], strict=True)))
    several = tmp_path / "several.csv"
    data = generate("pendulum", 6, 0.05, np.random.default_rng(0), points_per_trajectory=20)
    several.write_text("trial,t,q,p\n" + "".join(
        f"{trial},{t},{q},{p}\n" for trial, (states, times) in
        enumerate(zip(data.states, data.times, strict=True))
        for t, (q, p) in zip(times, states, strict=True)))
    monkeypatch.chdir(tmp_path)
    units = "data.units={q: rad, p: 'rad/s'}"
    base = [*TINY, "score=false", "search.uncertainty=false", units]
    run(_compose([*base, f"data.path={one}"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["random"] == "box" and results["trend_degrees"] == {"2": 1}
    out = capsys.readouterr().out
    assert "random-state null: box (auto: one training trajectory)" in out
    assert "trend of formula 1:" in out
    run(_compose([*base, f"data.path={several}", "data.trajectory=trial"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["random"] == "pooled" and results["trend_degrees"] == {"0": 3}
    assert "random-state null: pooled (auto: 3 training trajectories)" in capsys.readouterr().out
    # An explicit setting overrides the automatic choice (and pooled needs two trajectories).
    run(_compose([*base, f"data.path={several}", "data.trajectory=trial",
                  "search.random=box"]))
    assert json.loads((tmp_path / "results.json").read_text())["random"] == "box"
    with pytest.raises(ValueError, match="expected >= 2 training trajectories, got 1"):
        run(_compose([*base, f"data.path={one}", "search.random=pooled"]))


def test_the_best_conserved_candidate_is_displaced_only_by_a_significantly_more_useful_one(
) -> None:
    conserved = torch.tensor([1.0, 1.2, 0.9, 1.1, 1.0, 1.05])
    # Lower on average but inside the examples' scatter: the best-conserved stays first.
    noisy = torch.tensor([0.7, 1.3, 0.8, 1.0, 0.9, 1.0])
    assert usefulness_order([conserved, noisy, None], 0.95) == [0, 1, 2]
    assert usefulness_order([conserved, noisy, None], 0.0) == [1, 0, 2]  # mean loss alone
    # Lower on every example: significantly more useful, so it leads.
    clear = conserved - 0.2
    assert usefulness_order([conserved, noisy, clear], 0.95) == [2, 1, 0]
    assert usefulness_order([conserved[:1], noisy[:1]], 0.95) == [0, 1]  # nothing to test
    with pytest.raises(ValueError, match=r"choice_confidence: expected .*\[0, 1\), got 1.0"):
        ScoringConfig(choice_confidence=1.0)
