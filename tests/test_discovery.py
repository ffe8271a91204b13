"""Discovery: units, typed formulas, enumeration and de-duplication, batched fitting, loader."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch

from noether_control.discovery.data import generate, load_trajectories
from noether_control.discovery.expressions import (
    UnitError,
    binary,
    enumerate_formulas,
    infer_unit,
    inp,
    param,
    param_units,
    to_sympy,
    unary,
)
from noether_control.discovery.fitting import (
    FitData,
    compile_programs,
    drift_per_time,
    evaluate_all,
    fingerprint_duplicates,
    fit_formulas,
    jackknife_stderr,
    jackknife_units,
    jackknife_weights,
    merge_equivalent,
    refit_params,
    score_formulas,
    variance_terms,
)
from noether_control.discovery.scoring import ScoringConfig, formula_quantity
from noether_control.discovery.units import DIMENSIONLESS, RADIAN, parse_unit
from noether_control.noether import tailor
from noether_control.noether.tailoring import gauss_newton_weights, residual_jacobian

Q, P = inp(0), inp(1)
PENDULUM_UNITS = [parse_unit("rad"), parse_unit("rad/s")]
SPRING_LAW = binary("add", unary("square", Q), binary("mul", param(), unary("square", P)))
"""q**2 + k*p**2."""
PENDULUM_LAW = binary("sub", unary("square", P), binary("mul", param(), unary("cos", Q)))
"""p**2 - k*cos(q)."""


def test_parse_unit_exact_rational_exponents() -> None:
    energy = parse_unit("kg*m^2/s^2")
    assert energy == parse_unit("J") == parse_unit("kg m**2 s^-2")
    assert energy.exponents[:3] == (Fraction(2), Fraction(1), Fraction(-2))
    assert parse_unit("m^(1/2)") ** 2 == parse_unit("m")
    assert parse_unit("1") == DIMENSIONLESS
    assert parse_unit("rad/s") == RADIAN / parse_unit("s")
    for bad in ("furlong", "m^", "", "m//s", "m^(1/0)", "m/(s"):
        with pytest.raises(ValueError, match="unit"):
            parse_unit(bad)


def test_parse_unit_reads_spaces_parentheses_and_its_own_output() -> None:
    assert parse_unit("kg * m^2 / s^2") == parse_unit("J")
    assert parse_unit("J/(kg*K)") == parse_unit("J/kg/K") == parse_unit("J / (kg K)")
    assert parse_unit("(kg*m)/s^2") == parse_unit("N")
    for text in ("1/m/s", "m^(1/2)/s", "kg*m^2/s^2", "rad/s", "1", "s^-2*rad^-1*K"):
        unit = parse_unit(text)
        assert parse_unit(str(unit)) == unit, str(unit)


def test_unit_checker_rejects_ill_typed_formulas() -> None:
    units = [parse_unit("m"), parse_unit("kg*m/s")]
    with pytest.raises(UnitError, match="only equal units add"):
        infer_unit(binary("add", inp(0), inp(1)), units)  # m + kg*m/s
    with pytest.raises(UnitError, match="dimensionless or angle"):
        infer_unit(unary("sin", inp(0)), units)  # sin(metres)
    with pytest.raises(UnitError):
        infer_unit(binary("sub", unary("square", inp(1)), unary("cos", Q)), PENDULUM_UNITS)
    # Well-typed: sin of an angle, q**2 + k*p**2 (k absorbs the unit), p**2 - k*cos(q).
    assert infer_unit(unary("sin", Q), PENDULUM_UNITS) == DIMENSIONLESS
    assert infer_unit(SPRING_LAW, units) == parse_unit("m^2")
    assert param_units(SPRING_LAW, units) == [parse_unit("m^2") / parse_unit("kg*m/s") ** 2]
    assert param_units(PENDULUM_LAW, PENDULUM_UNITS) == [parse_unit("rad^2/s^2")]
    assert str(to_sympy(PENDULUM_LAW, ["q", "p"])) == "-k0*cos(q) + p**2"


def test_enumeration_is_unit_correct_and_contains_the_laws() -> None:
    enumeration = enumerate_formulas(PENDULUM_UNITS, 7, 2)
    assert sum(enumeration.per_size.values()) == len(enumeration.formulas)
    assert enumeration.per_size[7] > 10_000
    assert enumeration.rejected_units > 0
    assert PENDULUM_LAW in enumeration.formulas
    for formula in enumeration.formulas[::97]:
        infer_unit(formula, PENDULUM_UNITS)  # raises if ill-typed
    # q + p (rad + rad/s) must never be enumerated, in either order, nor sin(p) (p in rad/s).
    forbidden = [binary("add", Q, P), binary("add", P, Q), unary("sin", P)]
    assert not any(f in enumeration.formulas for f in forbidden)


def test_enumeration_keeps_differences_of_formulas_with_their_own_constants() -> None:
    enumeration = enumerate_formulas(PENDULUM_UNITS, 9, 2, ops=["cos", "mul", "sub"])
    texts = {str(to_sympy(f, ["q", "p"])) for f in enumeration.formulas}
    assert "-cos(k0*q) + cos(k1*q)" in texts or "cos(k0*q) - cos(k1*q)" in texts
    assert not any(f == binary("sub", Q, Q) for f in enumeration.formulas)


def test_duplicates_removed_commutativity_and_equivalence() -> None:
    enumeration = enumerate_formulas([DIMENSIONLESS, DIMENSIONLESS], 3, 0)
    texts = [str(to_sympy(f, ["x", "y"])) for f in enumeration.formulas]
    assert texts.count("x*y") == 1  # x*y and y*x: one formula
    # Equivalent up to an affine map: x**2 and x*x, x - y and y - x, (x + y) and -(…)
    formulas = [binary("mul", Q, Q), unary("square", Q), binary("sub", Q, P),
                binary("sub", P, Q), binary("mul", Q, P), binary("mul", P, Q),
                binary("add", Q, P), unary("sin", Q)]
    probe = torch.as_tensor(np.random.default_rng(0).uniform(-2, 2, (2, 64)))
    kept, dropped = fingerprint_duplicates(formulas, probe)
    assert kept == [0, 2, 4, 6, 7]
    assert dropped["duplicate"] == 3
    constant = [binary("add", unary("square", unary("sin", Q)),
                       unary("square", unary("cos", Q)))]
    assert fingerprint_duplicates(constant, probe)[1]["constant"] == 1


def test_batched_evaluation_matches_sympy() -> None:
    enumeration = enumerate_formulas(PENDULUM_UNITS, 5, 2)
    formulas = enumeration.formulas
    rng = np.random.default_rng(1)
    points = rng.uniform(-2, 2, (2, 16))
    params = torch.as_tensor(rng.uniform(0.5, 2.0, (len(formulas), 2)))
    values = evaluate_all(compile_programs(formulas, chunk_size=37), len(formulas),
                          torch.as_tensor(points), params).numpy()
    q, p = sympy.symbols("q p")
    for index in range(0, len(formulas), 13):
        formula = formulas[index]
        values_by_name = {f"k{i}": v for i, v in enumerate(params[index].tolist())}
        expression = to_sympy(formula, ["q", "p"]).subs(values_by_name)
        expected = sympy.lambdify((q, p), expression, "numpy")(points[0], points[1])
        np.testing.assert_allclose(values[index], np.broadcast_to(expected, (16,)), rtol=1e-5,
                                   atol=1e-8, err_msg=str(expression))


def test_formula_quantity_follows_the_states_device_and_dtype() -> None:
    # q**2 + k*p**2 with k fitted in float64 (on the fitting device), evaluated on float32 states.
    k_p_squared = binary("mul", param(), unary("square", inp(1)))
    formula = binary("add", unary("square", inp(0)), k_p_squared)
    quantity = formula_quantity(formula, torch.tensor([2.5], dtype=torch.float64))
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for device in devices:
        states = torch.tensor([[1.0, 2.0], [0.5, -1.0]], device=device)
        values = quantity(states)
        assert values.dtype == torch.float32 and values.device == states.device
        torch.testing.assert_close(values.cpu(), torch.tensor([11.0, 2.75]))


def test_fitter_recovers_known_constants_on_synthetic_data() -> None:
    rng = np.random.default_rng(0)
    # Level sets of 0.5*q**2 + 2.5*p**2 (c = 5) and p**2 - 1.7*cos(q) (k = 1.7), no noise.
    trajectories = []
    for energy in rng.uniform(0.5, 2.0, 12):
        angle = np.linspace(0, 2 * np.pi, 25)
        trajectories.append(np.stack([np.sqrt(2 * energy) * np.cos(angle),
                                      np.sqrt(energy / 2.5) * np.sin(angle)], 1))
    for energy in rng.uniform(-1.5, 1.5, 12):
        q = np.linspace(-1.0, 1.0, 25)
        p = np.sqrt(energy + 1.7 * np.cos(q) + 2.0)
        trajectories.append(np.stack([q, p], 1))
    points = np.concatenate(trajectories)
    segments = np.repeat(np.arange(len(trajectories)), 25)
    results = []
    for formula, rows in ((SPRING_LAW, slice(0, 12 * 25)), (PENDULUM_LAW, slice(12 * 25, None))):
        data = FitData.from_arrays(points[rows], segments[rows] - segments[rows][0])
        results.append(fit_formulas([formula, unary("square", Q)], data, steps=300, lr=0.1))
    assert results[0].params[0, 0].item() == pytest.approx(5.0, rel=1e-3)
    assert results[1].params[0, 0].item() == pytest.approx(1.7, rel=1e-3)
    for fit in results:
        assert fit.variance_ratio[0] > 1e6  # exactly conserved
        assert fit.variance_ratio[1] < 10  # q**2 is not


def test_point_weights_count_points_as_if_repeated() -> None:
    rng = np.random.default_rng(0)
    trajectories = [rng.normal(size=(n, 2)) for n in (7, 9, 6)]
    values_of = [np.sin(t[:, 0]) + t[:, 1] ** 2 for t in trajectories]

    def terms(parts: list[np.ndarray], weights: np.ndarray | None = None) -> torch.Tensor:
        points = np.concatenate([trajectories[i] for i in parts])
        segments = np.concatenate([np.full(len(trajectories[i]), k) for k, i in
                                   enumerate(parts)])
        values = torch.as_tensor(np.concatenate([values_of[i] for i in parts]))[None]
        weight = None if weights is None else torch.as_tensor(weights)[None]
        return torch.stack(variance_terms(values, FitData.from_arrays(points, segments), weight))

    # Weight 2 on trajectory 0 and 0 on trajectory 2 = trajectory 0 twice, trajectory 2 gone.
    weights = np.concatenate([np.full(7, 2.0), np.ones(9), np.zeros(6)])
    torch.testing.assert_close(terms([0, 1, 2], weights), terms([0, 0, 1]))
    torch.testing.assert_close(terms([0, 1, 2], np.ones(22)), terms([0, 1, 2]))
    assert not torch.allclose(terms([0, 1, 2], weights), terms([0, 1, 2]))


def test_jackknife_leaves_out_trajectories_or_blocks() -> None:
    many = np.repeat(np.arange(12), 5)
    np.testing.assert_array_equal(jackknife_units(many), many)
    np.testing.assert_array_equal(jackknife_weights(many), 1.0 - np.eye(12)[:, many])
    grouped = jackknife_weights(np.repeat(np.arange(120), 3))  # 120 trajectories, 50 groups
    assert grouped.shape == (50, 360)
    assert sorted((grouped == 0).sum(axis=1) // 3) == [2] * 30 + [3] * 20
    assert ((grouped == 0).sum(axis=0) == 1).all()  # every point left out exactly once
    # Fewer than 10 trajectories: blocks of 10 samples restarting at each trajectory.
    few = np.repeat([0, 1], [35, 4])
    np.testing.assert_array_equal(jackknife_units(few, block=10),
                                  np.repeat([0, 1, 2, 3, 4], [10, 10, 10, 5, 4]))
    with pytest.raises(ValueError, match=">= 2 units"):
        jackknife_weights(jackknife_units(np.zeros(8, dtype=np.int64), block=10))
    with pytest.raises(ValueError, match="block: expected >= 1"):
        jackknife_units(few, block=0)


def test_jackknife_stderr_of_a_mean_is_the_textbook_one() -> None:
    values = np.random.default_rng(0).normal(size=(15, 1))
    leave_one_out = (values.sum() - values) / 14
    np.testing.assert_allclose(jackknife_stderr(leave_one_out),
                               values.std(ddof=1) / np.sqrt(15))


def test_jackknife_interval_covers_the_true_constant_at_its_level() -> None:
    # Scatter of the fitted spring constant over data draws vs the jackknife's standard error.
    estimates, errors = [], []
    for seed in range(20):
        train = generate("spring", 12, 0.05, np.random.default_rng(seed),
                         points_per_trajectory=20)
        points, segments = train.points()
        data = FitData.from_arrays(points, segments)
        fitted = fit_formulas([SPRING_LAW], data, steps=300, lr=0.1).params
        weights = torch.as_tensor(jackknife_weights(segments))
        refits = refit_params([SPRING_LAW], data, fitted, weights, steps=150, lr=0.1)
        estimates.append(float(fitted[0, 0]))
        errors.append(float(jackknife_stderr(refits[0].numpy())[0]))
    estimates_array, errors_array = np.array(estimates), np.array(errors)
    assert 0.6 < np.std(estimates_array, ddof=1) / np.sqrt(np.mean(errors_array**2)) < 1.6
    assert np.mean(np.abs(estimates_array - 1.0) <= 2.2 * errors_array) >= 0.75
    # The full data refit to the fit itself.
    again = refit_params([SPRING_LAW], data, fitted, torch.ones(1, len(segments)), steps=150,
                         lr=0.1)
    torch.testing.assert_close(again[0], fitted, rtol=1e-5, atol=0)


def test_box_random_states_do_not_reward_poles_next_to_them() -> None:
    # One trajectory (the box is the only null): q/(k - p*q) places its pole where the data
    # never goes but uniform states do; their variance used to rank it 1e10 above the law.
    pole = binary("div", Q, binary("sub", param(), binary("mul", P, Q)))
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        one = generate("pendulum", 2, 0.01, rng, points_per_trajectory=200).subset([0])
        points, segments = one.points()
        data = FitData.from_arrays(points, segments, random="box", rng=rng)
        fit = fit_formulas([PENDULUM_LAW, pole], data, steps=300, lr=0.1)
        assert fit.params[0, 0].item() == pytest.approx(3.0, rel=0.01)
        assert fit.variance_ratio[0] > 500 and fit.variance_ratio[1] < 1


def test_long_trajectories_are_cut_into_tailoring_examples() -> None:
    data = generate("spring", 2, 0.1, np.random.default_rng(0), points_per_trajectory=23)
    data = data.subset([0]).pieces(23)  # as long as the limit: whole
    assert [len(s) for s in data.states] == [23]
    pieces = generate("spring", 2, 0.1, np.random.default_rng(0),
                      points_per_trajectory=23).pieces(10)
    assert [len(s) for s in pieces.states] == [8, 8, 7, 8, 8, 7]
    np.testing.assert_array_equal(np.concatenate(pieces.times[:3]), data.times[0])
    np.testing.assert_array_equal(np.concatenate(pieces.states[:3]), data.states[0])
    np.testing.assert_array_equal(np.concatenate(pieces.clean[:3]), data.clean[0])
    with pytest.raises(ValueError, match="example_length: expected >= 5"):
        ScoringConfig(example_length=4)


def test_generated_pendulum_energy_is_conserved_up_to_noise() -> None:
    data = generate("pendulum", 4, 0.0, np.random.default_rng(0))
    for states in data.states:
        energy = 3 * (1 - np.cos(states[:, 0])) + states[:, 1] ** 2
        assert np.ptp(energy) < 1e-6
    noisy = generate("pendulum", 4, 0.1, np.random.default_rng(0))
    assert np.std(noisy.states[0] - noisy.clean[0]) == pytest.approx(0.1, rel=0.3)


def test_drift_per_time_reports_dissipation() -> None:
    times = [np.linspace(0, 2, 40)] * 3
    rng = np.random.default_rng(0)
    values = [5 - 0.3 * t + rng.normal(0, 0.01, t.shape) for t in times]
    slope, significance = drift_per_time(values, times)
    assert slope == pytest.approx(-0.3, rel=0.05)
    assert significance > 10
    flat = [5 + rng.normal(0, 0.01, t.shape) for t in times]
    assert drift_per_time(flat, times)[1] < 3


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def _rows(n: int = 6, trial: int = 0, start: float = 0.0) -> str:
    return "".join(f"{trial},{start + 0.1 * i:.2f},{np.sin(i):.3f},{np.cos(i):.3f}\n"
                   for i in range(n))


def test_loader_reads_headers_overrides_and_irregular_time(tmp_path: Path) -> None:
    units = {"q": "rad", "p": "rad/s"}
    path = _write(tmp_path, "# trial,t,q,p\n" + _rows() + "% a comment\n" + _rows(7, 1))
    data = load_trajectories(path, units, trajectory="trial")
    assert data.names == ["q", "p"] and len(data) == 2 and data.states[1].shape == (7, 2)
    # Wrong header, overridden by columns; whitespace-separated; irregular (dropped) steps.
    text = "a b c d\n0 0.0 1 2\n0 0.1 1 2\n0 0.35 1 2\n0 0.4 1 2\n0 0.9 1 2\n"
    path = _write(tmp_path, text)
    data = load_trajectories(path, units, columns=["trial", "t", "q", "p"], trajectory="trial")
    np.testing.assert_allclose(data.times[0], [0, 0.1, 0.35, 0.4, 0.9])
    assert data.units == [parse_unit("rad"), parse_unit("rad/s")]


def test_loader_reads_files_from_spreadsheets_and_r(tmp_path: Path) -> None:
    units = {"q": "rad", "p": "rad/s"}
    # Excel's UTF-8 byte-order mark, R's quoted names, a bare comment line before the header.
    path = tmp_path / "bom.csv"
    path.write_text("#\n" + '"trial","t","q","p"\n' + _rows(), encoding="utf-8-sig")
    data = load_trajectories(path, units, trajectory="trial")
    assert data.names == ["q", "p"] and data.states[0].shape == (6, 2)
    # With data.columns, a first row holding -inf is data (and an error), not a header.
    path = _write(tmp_path, "0,0,-inf,1\n" + _rows().replace("0,0.00", "0,0.01"))
    with pytest.raises(ValueError, match=r":1: column 'q' is '-inf'"):
        load_trajectories(path, units, columns=["trial", "t", "q", "p"], trajectory="trial")


def test_one_trajectory_splits_in_time(tmp_path: Path) -> None:
    path = _write(tmp_path, "t,q,p\n" + "".join(f"{0.1 * i:.1f},{i},{-i}\n" for i in range(20)))
    data = load_trajectories(path, {"q": "rad", "p": "rad/s"})
    train, test = data.split(0.25)
    np.testing.assert_allclose(train.times[0], 0.1 * np.arange(15))
    np.testing.assert_allclose(test.states[0][:, 0], [15, 16, 17, 18, 19])
    with pytest.raises(ValueError, match=r"20 samples.*16 train and 4 test.*>= 5"):
        data.split(0.2)


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("trial,t,q\n" + _rows(), {}, r"data.py|expected 3 values"),
        ("trial,t,q,p\n" + _rows(), {"time": "time"}, r"data.time column 'time' not found"),
        ("trial,t,q,p\n" + _rows().replace("0.909", "abc"), {}, r":4: column 'q'.*'abc'"),
        ("trial,t,q,p\n" + _rows(3), {}, r"3 samples; expected at least 5"),
        ("trial,t,q,p\n" + _rows().replace("0,0.20", "0,0.05"), {}, r":4: time 0.05 does not"),
        ("trial,t,q,p\n" + _rows().replace("0.540", "nan"), {}, r":3: column 'p' is 'nan'"),
        ("trial,t,q,x\n" + _rows(), {}, r"no unit for column\(s\) \['x'\]"),
    ],
)
def test_loader_errors_name_the_line_or_column(tmp_path: Path, text: str, kwargs: dict,
                                               message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_trajectories(path, {"q": "rad", "p": "rad/s"}, trajectory="trial", **kwargs)


def test_loader_rejects_unknown_units(tmp_path: Path) -> None:
    path = _write(tmp_path, "trial,t,q,p\n" + _rows())
    with pytest.raises(ValueError, match=r"data.units\['p'\].*furlong"):
        load_trajectories(path, {"q": "rad", "p": "furlong/s"}, trajectory="trial")


def test_fitted_survivors_of_one_law_merge() -> None:
    probe = torch.as_tensor(np.random.default_rng(0).uniform(-2, 2, (2, 64)))
    law_b = binary("add", unary("square", Q), binary("div", unary("square", P), param()))
    params = torch.tensor([[1.031], [1 / 1.0335], [3.0]], dtype=torch.float64)
    assert merge_equivalent([SPRING_LAW, law_b, PENDULUM_LAW], probe, params) == [0, 2]
    params[1, 0] = 1 / 1.5  # a different constant is a different law
    assert merge_equivalent([SPRING_LAW, law_b, PENDULUM_LAW], probe, params) == [0, 1, 2]


def test_noise_estimate_and_smoothing_gains_match_the_generated_noise() -> None:
    data = generate("pendulum", 20, 0.1, np.random.default_rng(1))
    np.testing.assert_allclose(data.noise_std(), [0.1, 0.1], rtol=0.1)
    gains = np.concatenate(data.smoothing_gains(7))
    errors = np.concatenate([s - c for s, c in zip(data.smoothed(7).states, data.clean,
                                                   strict=True)])
    middle = gains < 0.34  # samples with a centred window: gain 1/3 for a 7-sample cubic
    assert gains[middle].mean() == pytest.approx(1 / 3)
    np.testing.assert_allclose((errors[middle] ** 2).mean(0) / 0.01, 1 / 3, rtol=0.25)
    assert all(np.all(g == 1) for g in data.smoothing_gains(3))  # no smoothing, no gain


def test_noise_corrected_ratio_separates_the_law_from_near_misses() -> None:
    # Noisy circles: q**2 + p**2 is conserved up to noise, q**2 + 0.5*p**2 is not.
    rng = np.random.default_rng(0)
    sigma = 0.05
    angle = np.linspace(0, 2 * np.pi, 40)
    clean = [r * np.stack([np.cos(angle), np.sin(angle)], 1) for r in rng.uniform(0.5, 1.5, 30)]
    points = np.concatenate(clean) + rng.normal(0, sigma, (30 * 40, 2))
    segments = np.repeat(np.arange(30), 40)
    law = binary("add", unary("square", Q), unary("square", P))
    params = torch.tensor([[0.0], [0.5]], dtype=torch.float64)  # SPRING_LAW at k = 0.5: a near miss
    plain = FitData.from_arrays(points, segments)
    corrected = FitData.from_arrays(points, segments, noise_var=np.full(points.shape, sigma**2))
    _, raw, _ = score_formulas([law, SPRING_LAW], plain, params)
    ratio, raw_again, trivial = score_formulas([law, SPRING_LAW], corrected, params,
                                               noise_floor=0.1)
    torch.testing.assert_close(raw, raw_again)
    assert not trivial.any()
    assert float(raw[0]) < 100  # the noise caps the measured ratio of the true law ...
    assert float(ratio[0]) == pytest.approx(10 * float(raw[0]))  # ... lifted to the floor
    assert float(raw[1]) < float(ratio[1]) < 1.2 * float(raw[1])  # a real variation stays
    assert float(ratio[1]) < 100


def test_gauss_newton_weights_give_the_levenberg_marquardt_step() -> None:
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)  # (B, T, P)
    target = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    theta = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)

    def residuals(params: dict[str, torch.Tensor], _: object) -> torch.Tensor:
        return torch.einsum("btp,bp->bt", matrix, params["theta"]) ** 2 / 2 + \
            torch.einsum("btp,bp->bt", matrix, params["theta"]) - target

    start = {"theta": theta}
    at_start = residuals(start, None)
    jacobian = residual_jacobian(at_start, start)
    torch.testing.assert_close(jacobian, matrix)  # d r / d theta at theta = 0
    lr = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    weights = gauss_newton_weights(jacobian, at_start.detach(), lr)
    stepped = tailor(start, None, lambda p, b: (weights * residuals(p, b)).sum(1), lr=1.0)
    damping = (matrix @ matrix.transpose(1, 2)).diagonal(dim1=1, dim2=2).mean(1) / lr
    normal = matrix.transpose(1, 2) @ matrix + damping[:, None, None] * torch.eye(4)
    expected = -torch.linalg.solve(normal, (matrix.transpose(1, 2) @ -target[..., None]))
    torch.testing.assert_close(stepped["theta"], expected.squeeze(-1))
