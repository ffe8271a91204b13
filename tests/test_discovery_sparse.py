"""The sparse search for conserved quantities of systems with four state variables."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import sympy
import torch
from scipy.integrate import solve_ivp

import noether_control.envs  # noqa: F401  (registers the environments)
from noether_control.discovery.data import Trajectories
from noether_control.discovery.discover import (
    SearchConfig,
    family_note,
    family_record,
    search,
)
from noether_control.discovery.expressions import to_sympy
from noether_control.discovery.sparse import candidate_terms, conserved_family, resolve_method
from noether_control.discovery.units import Unit, parse_unit, velocity_columns

ANGLES = ["q1", "q2", "w1", "w2"]
ANGLE_UNITS = [parse_unit(u) for u in ("rad", "rad", "rad/s", "rad/s")]
SPRINGS = ["x1", "x2", "v1", "v2"]
SPRING_UNITS = [parse_unit(u) for u in ("m", "m", "m/s", "m/s")]


def _double_pendulum(episodes: int, steps: int, noise: float) -> Trajectories:
    """Torque-free episodes of the env's double pendulum, noisy states (q1, q2, w1, w2)."""
    env = gym.make("NoetherControl/PixelDoublePendulum-v0", obs_type="state")
    rng = np.random.default_rng(0)
    states, times = [], []
    for episode in range(episodes):
        _, info = env.reset(seed=episode)
        clean = [info["state"]]
        for _ in range(steps - 1):
            clean.append(env.step(np.zeros(1, dtype=np.float32))[4]["state"])
        states.append(np.asarray(clean) + rng.normal(0.0, noise, (steps, 4)))
        times.append(np.arange(steps) * 0.05)
    env.close()
    return Trajectories(ANGLES, ANGLE_UNITS, states, times)


def _coefficients(expression: sympy.Expr, reference: str = "w1**2") -> dict[str, float]:
    """Coefficient of each term of an expanded expression, normalised on ``reference``."""
    terms = {}
    for argument in sympy.Add.make_args(sympy.expand(expression)):
        coefficient, term = argument.as_coeff_Mul()
        terms[str(term)] = float(coefficient)
    scale = terms[reference]
    return {term: value / scale for term, value in terms.items()}


def test_candidate_terms_are_unit_correct_and_include_the_coupling() -> None:
    terms = [str(to_sympy(term, ANGLES)) for term in candidate_terms(ANGLE_UNITS)]
    assert len(terms) == len(set(terms))
    assert {"w1**2", "cos(q1)", "w1*w2*cos(q1 - q2)", "sin(q1 + q2)"} <= set(terms)
    assert not any(f"cos({w})" in t or f"sin({w})" in t for t in terms for w in ("w1", "w2"))
    spring = [str(to_sympy(t, SPRINGS)) for t in candidate_terms(SPRING_UNITS)]
    assert len(spring) == 14 and not any("cos" in t or "sin" in t for t in spring)
    assert resolve_method("auto", 2) == "enumerate" and resolve_method("auto", 4) == "sparse"
    with pytest.raises(ValueError, match=r"search.method: expected one of .*got 'beam'"):
        resolve_method("beam", 4)


def test_sparse_search_recovers_the_double_pendulum_energy() -> None:
    # Default masses and lengths 1, g = 10: E = (2/3) w1**2 + (1/6) w2**2
    # + (1/2) cos(q1 - q2) w1 w2 + 15 cos(q1) + 5 cos(q2).
    train = _double_pendulum(episodes=4, steps=100, noise=0.01)
    result = search(train, SearchConfig(), np.random.default_rng(0), torch.device("cpu"))
    assert result.method == "sparse" and result.sparse_family == 1
    (law,) = result.survivors
    found = _coefficients(to_sympy(law.formula, ANGLES, law.params.tolist()))
    truth = {"w1**2": 1.0, "w2**2": 0.25, "w1*w2*cos(q1 - q2)": 0.75, "cos(q1)": 22.5,
             "cos(q2)": 7.5}
    assert set(found) == set(truth)
    for term, value in truth.items():
        assert found[term] == pytest.approx(value, rel=0.02), term
    # Dropping any one of its five terms breaks conservation by orders of magnitude.
    eigenvalues = dict(result.sparse_path)
    assert eigenvalues[4] > 100 * eigenvalues[5]


def _coupled_springs(trajectories: int, units: list[Unit] = SPRING_UNITS) -> Trajectories:
    """Two masses (1, 2) between two walls on springs (1.5, 0.8, 1.2): noisy (x1, x2, v1, v2)
    with ``units``."""
    def field(_: float, y: np.ndarray) -> list[float]:
        x1, x2, v1, v2 = y
        return [v1, v2, -1.5 * x1 + 0.8 * (x2 - x1), (-1.2 * x2 - 0.8 * (x2 - x1)) / 2]

    rng = np.random.default_rng(0)
    stamps = np.linspace(0, 20, 100)
    states = [solve_ivp(field, (0, 20), rng.uniform(-1, 1, 4), t_eval=stamps, rtol=1e-10,
                        atol=1e-10).y.T + rng.normal(0, 0.01, (100, 4))
              for _ in range(trajectories)]
    return Trajectories(SPRINGS, units, states, [stamps] * trajectories)


def test_a_diagonal_kinetic_energy_chooses_the_total_energy_of_coupled_oscillators() -> None:
    # Each normal mode conserves its own energy, so conservation cannot single out the total;
    # without v1*v2 only the total is conserved. Twice the energy: v1**2 + 2 v2**2
    # + 2.3 x1**2 + 2.0 x2**2 - 1.6 x1 x2.
    result = search(_coupled_springs(8), SearchConfig(), np.random.default_rng(0),
                    torch.device("cpu"))
    assert result.method == "sparse" and result.sparse_family == 2
    choice = result.sparse_choice
    assert choice is not None and choice.rule == "diagonal_kinetic" and choice.applied
    assert choice.family == 1 and [SPRINGS[i] for i in choice.velocities] == ["v1", "v2"]
    assert [str(to_sympy(term, SPRINGS)) for term in choice.dropped] == ["v1*v2"]
    note = family_note(result.sparse_family, choice, "diagonal_kinetic", SPRINGS)
    assert "a 2-dimensional family" in note and "family_rule=diagonal_kinetic chose" in note
    assert family_record(result, "diagonal_kinetic", SPRINGS) == {
        "rule": "diagonal_kinetic", "applied": True, "family_after": 1,
        "velocities": ["v1", "v2"], "dropped_terms": ["v1*v2"],
        "eigenvalues_after": choice.eigenvalues}
    (law,) = result.survivors
    assert law.variance_ratio > 1000
    found = _coefficients(to_sympy(law.formula, SPRINGS, law.params.tolist()), "v1**2")
    truth = {"v1**2": 1.0, "v2**2": 2.0, "x1**2": 2.3, "x2**2": 2.0, "x1*x2": -1.6}
    assert set(found) == set(truth)
    for term, value in truth.items():
        assert found[term] == pytest.approx(value, rel=0.05), term


def test_without_a_family_rule_coupled_oscillators_give_a_mixture_of_mode_energies() -> None:
    result = search(_coupled_springs(8), SearchConfig(family_rule="none"),
                    np.random.default_rng(0), torch.device("cpu"))
    assert result.method == "sparse" and result.sparse_family == 2
    assert result.sparse_choice is None
    assert family_record(result, "none", SPRINGS)["family_after"] == 2
    (law,) = result.survivors
    assert law.variance_ratio > 1000
    assert "v1*v2" in str(to_sympy(law.formula, SPRINGS))


@pytest.mark.parametrize(("eigenvalues", "family"), [
    ([2.4e-4, 5.6e-3, 0.83, 0.85], 2),  # coupled oscillators' mode energies: 23x, then 149x
    ([1.6e-4, 8.4e-3, 1.2e-2, 0.081, 0.19], 1),  # the double pendulum: 52x, then at most 9x
    ([1e-17, -1e-18, 0.8, 0.9], 2),  # exactly conserved, at rounding level
    ([0.2, 0.4, 0.8, 0.9], 1),  # no gap, no family
])
def test_the_conserved_family_ends_at_the_largest_gap_of_the_spectrum(
        eigenvalues: list[float], family: int) -> None:
    within = torch.diag(torch.tensor(eigenvalues, dtype=torch.float64))
    random = torch.eye(len(eigenvalues), dtype=torch.float64)
    active = torch.ones(len(eigenvalues), dtype=torch.bool)
    assert conserved_family(within, random, active)[0] == family


def test_velocities_are_recognised_by_their_units() -> None:
    assert velocity_columns(SPRING_UNITS) == [2, 3]
    assert velocity_columns(ANGLE_UNITS) == [2, 3]
    assert velocity_columns([parse_unit("1")] * 4) == []
    assert velocity_columns([parse_unit(u) for u in ("m", "rad/s", "kg")]) == []


def test_a_family_rule_needs_velocities_and_a_known_setting() -> None:
    # Dimensionless columns have no velocities: the rule cannot apply and says so.
    result = search(_coupled_springs(8, [parse_unit("1")] * 4), SearchConfig(),
                    np.random.default_rng(0), torch.device("cpu"))
    assert result.sparse_family > 1
    assert result.sparse_choice is not None and not result.sparse_choice.applied
    note = family_note(result.sparse_family, result.sparse_choice, "diagonal_kinetic", SPRINGS)
    assert "search.family_rule=diagonal_kinetic cannot apply" in note
    with pytest.raises(ValueError, match=r"search.family_rule: expected one of "
                                         r"\('diagonal_kinetic', 'none'\), got 'symmetric'"):
        SearchConfig(family_rule="symmetric")
