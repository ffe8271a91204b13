"""Sparse search for conserved quantities of systems with many state variables.

Enumerating every formula up to size 7 is hopeless beyond two variables (a double pendulum's
energy ``w1**2 + a*w2**2 + b*cos(q1 - q2)*w1*w2 - c*cos(q1) - d*cos(q2)`` alone has 25 nodes).
Instead the conserved quantity is sought as a linear combination ``f = sum_j c_j theta_j`` of
candidate terms ``theta_j`` built with units (:func:`candidate_terms`): products of up to two
state variables, and ``sin``/``cos`` of angles (and of sums and differences of angles of one
unit) times products of up to two non-angle variables. For a linear combination the fitting loss
of the enumeration, ``Var_within(f) / Var_random(f)``, is a ratio of quadratic forms
``c^T W c / c^T R c``, so its optimum over the coefficients is exact: the generalised eigenvector
of ``(W, R)`` with the smallest eigenvalue. Sparsity comes from backward elimination: starting
from all terms, the term whose removal raises that eigenvalue least is dropped, one at a time,
all removals of a step evaluated as one batched eigenvalue problem; the chosen law is the
sparsest combination whose eigenvalue stays within ``tolerance`` times the best one along the
path (dropping a term the law needs raises it by orders of magnitude, dropping one it does not
need barely moves it).

When more than one independent combination of the terms is conserved (a *family*: the normal
modes of coupled linear oscillators each conserve their own energy), conservation cannot single
out the total energy: for ``a = -M^-1 K x`` every ``(M', K')`` with ``M'^-1 K' = M^-1 K`` gives the
same motion. ``search.family_rule`` then supplies a physical prior. ``diagonal_kinetic`` (the
default): point masses in Cartesian coordinates have a kinetic energy without products of two
different velocities, so the terms in which two different velocity columns occur (``v1*v2``;
velocities recognised by their units, :func:`~noether_control.discovery.units.velocity_columns`)
are dropped and the search redone on the others. ``none`` keeps one member of the family as the
eigenproblem returns it. A one-dimensional family (the double pendulum, whose energy needs
``w1*w2*cos(q1 - q2)``) is never touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noether_control.discovery.expressions import Expr, binary, infer_unit, inp, param, unary
from noether_control.discovery.fitting import FitData, compile_programs, evaluate_all
from noether_control.discovery.trend import detrended
from noether_control.discovery.units import Unit, velocity_columns
from noether_control.runtime import require_choice

FAMILY_GAP = 10.0
"""The conserved family is the generalised eigenvalues below the largest jump (ratio of
consecutive eigenvalues) among the smallest :data:`FAMILY_SPAN` + 1, when that jump is at least
this; otherwise one law. Measured on the training trajectories of ``bench_coupled.py``'s
systems: two coupled linear oscillators (whose normal modes conserve their energies separately;
4-40 trajectories, seeds 0-2), jumps 2-23x between the two mode energies, then 149-1,857x to
the rest (e.g. 2.3e-4, 6.9e-4, then 0.83); the double pendulum (4-20 trajectories, seeds 0-1)
32-193x after the energy, then at most 9x (e.g. 1.6e-4, 8.4e-3 for the best of 62 terms
orthogonal to the energy, not a law, 1.4e-2). A fixed factor of the smallest eigenvalue
instead (10x) counted one law for the oscillators on some data sets (a 23x jump between the
modes)."""
FAMILY_SPAN = 5
"""Largest conserved family counted."""
FAMILY_RULES = ("diagonal_kinetic", "none")
"""``search.family_rule`` settings: how one law is chosen from a conserved family of dimension
above 1 (see the module docstring)."""
PENALTY = 1e6
"""Eigenvalue given to removed terms' directions (the standardised problem's eigenvalues of
interest are below 1 for the pooled null and of order 1 at most for the box null)."""


METHODS = ("auto", "enumerate", "sparse")
"""``search.method`` settings."""
MAX_ENUMERATED_COLUMNS = 2
"""``auto`` enumerates formulas over at most this many state columns."""


def resolve_method(setting: str, n_columns: int) -> str:
    """``enumerate`` or ``sparse`` for ``search.method`` ``setting`` and ``n_columns`` state
    columns (``auto``: enumerate up to :data:`MAX_ENUMERATED_COLUMNS`)."""
    if setting not in METHODS:
        raise ValueError(f"search.method: expected one of {METHODS}, got {setting!r}")
    if setting != "auto":
        return setting
    return "enumerate" if n_columns <= MAX_ENUMERATED_COLUMNS else "sparse"


def _is_angle(unit: Unit) -> bool:
    return unit.is_angle or unit.is_dimensionless


def _product(factors: Sequence[int]) -> Expr:
    """``x_i``, ``x_i**2`` or ``x_i*x_j`` for ``factors`` ``(i,)`` or ``(i, j)``."""
    if len(factors) == 1:
        return inp(factors[0])
    first, second = factors
    return unary("square", inp(first)) if first == second else binary("mul", inp(first),
                                                                       inp(second))


def candidate_terms(units: Sequence[Unit], max_degree: int = 2) -> list[Expr]:
    """Unit-correct candidate terms over state variables with ``units``.

    Monomials of degree 1 to ``max_degree`` in all variables; ``cos`` and ``sin`` of every
    angle (unit ``rad`` or ``1``) and of the sum and difference of every pair of angles of the
    same unit; and each of those times every monomial of degree 1 to ``max_degree`` in the
    non-angle variables. Every term is checked with the unit checker.
    """
    if max_degree < 1:
        raise ValueError(f"search.sparse_degree: expected >= 1, got {max_degree}")
    n_inputs = len(units)
    angles = [i for i in range(n_inputs) if _is_angle(units[i])]
    others = [i for i in range(n_inputs) if i not in angles]
    monomials = [_product(f) for degree in range(1, max_degree + 1)
                 for f in itertools.combinations_with_replacement(range(n_inputs), degree)]
    arguments = [inp(i) for i in angles]
    for first, second in itertools.combinations(angles, 2):
        if units[first] == units[second]:
            arguments += [binary("sub", inp(first), inp(second)),
                          binary("add", inp(first), inp(second))]
    trig = [unary(op, argument) for argument in arguments for op in ("cos", "sin")]
    factors = [_product(f) for degree in range(1, max_degree + 1)
               for f in itertools.combinations_with_replacement(others, degree)]
    terms = [*monomials, *trig, *(binary("mul", t, m) for t in trig for m in factors)]
    for term in terms:
        infer_unit(term, units)  # raises UnitError for an ill-typed term
    return terms


@dataclass
class FamilyChoice:
    """How ``search.family_rule`` chose one law from a conserved family of dimension above 1.

    Attributes:
        rule: the rule's setting (one of :data:`FAMILY_RULES` other than ``none``).
        applied: whether the rule removed any term (``diagonal_kinetic`` needs two velocity
            columns; without them the law is the family's member the eigenproblem returns).
        velocities: the state columns the units make velocities.
        dropped: the candidate terms the rule removed (each has two different velocities).
        family: the dimension of the conserved family of the remaining terms.
        eigenvalues: the remaining terms' smallest generalised eigenvalues (up to 5).
    """

    rule: str
    applied: bool
    velocities: list[int]
    dropped: list[Expr]
    family: int
    eigenvalues: list[float]


@dataclass
class SparseLaw:
    """The result of :func:`sparse_search`.

    Attributes:
        formula: ``theta_a + k0*theta_b + k1*theta_c + ...`` over the kept terms (the term with
            the largest standardised coefficient leads with coefficient 1).
        params: the other terms' coefficients ``(n_terms - 1,)``, in the formula's parameter
            order.
        path: per step of the elimination ``(n_terms_left, eigenvalue)``, full model first (after
            any terms the family rule removed).
        n_terms: candidate terms considered.
        family: independent conserved combinations of all the terms (the full problem's
            eigenvalues below its largest gap, see :data:`FAMILY_GAP`); above 1, conservation
            alone cannot single out one law (each normal mode of coupled linear oscillators
            conserves its own energy, and every combination of them is conserved).
        eigenvalues: the full problem's smallest generalised eigenvalues (up to 5).
        choice: how the family rule chose the law when ``family`` is above 1 (``None`` for a
            one-dimensional family or ``family_rule='none'``).
    """

    formula: Expr
    params: np.ndarray
    path: list[tuple[int, float]]
    n_terms: int
    family: int = 1
    eigenvalues: list[float] | None = None
    choice: FamilyChoice | None = None


def _quadratic_forms(values: Tensor, data: FitData) -> tuple[Tensor, Tensor]:
    """``(W, R)`` ``(n, n)``: within-trajectory (detrended) and random-null covariances of the
    terms' ``values`` ``(n, n_points)`` evaluated on ``data.all_points``."""
    n_true = data.true_points.shape[1]
    true_values = values[:, :n_true]
    true_values = true_values - true_values.mean(dim=1, keepdim=True)
    if data.trend is None:
        n_segments = int(data.segments.max()) + 1
        counts = torch.bincount(data.segments, minlength=n_segments).to(values.dtype)
        means = values.new_zeros(values.shape[0], n_segments).index_add(
            1, data.segments, true_values) / counts
        residuals = true_values - means[:, data.segments]
    else:
        residuals = detrended(true_values, data.trend.to(values.dtype), data.segments)
    within = residuals @ residuals.T / n_true
    if data.random_points is None:
        random = true_values @ true_values.T / n_true
    else:
        random_values = values[:, n_true:]
        random_values = random_values - random_values.mean(dim=1, keepdim=True)
        random = random_values @ random_values.T / random_values.shape[1]
    return within, random


def _smallest_eigen(within: Tensor, random: Tensor, masks: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Smallest generalised eigenvalue ``(K,)`` and its vector ``(K, n)`` of ``(W, R)``
    restricted to the terms of each mask ``(K, n)`` bool (removed terms' coefficients 0), and
    all eigenvalues ``(K, n)`` in ascending order (the removed terms' ones last)."""
    keep = masks.to(within.dtype)
    outer = keep[:, :, None] * keep[:, None, :]
    eye = torch.eye(within.shape[0], dtype=within.dtype, device=within.device)
    removed = torch.diag_embed(1.0 - keep)
    masked_within = within * outer + PENALTY * removed
    masked_random = random * outer + removed
    cholesky = torch.linalg.cholesky(masked_random + 1e-12 * eye)
    whitened = torch.linalg.solve_triangular(
        cholesky, torch.linalg.solve_triangular(cholesky, masked_within, upper=False).mT,
        upper=False)
    eigenvalues, eigenvectors = torch.linalg.eigh(whitened)
    vectors = torch.linalg.solve_triangular(cholesky.mT, eigenvectors[:, :, :1],
                                            upper=True).squeeze(-1)
    return eigenvalues[:, 0], vectors * keep, eigenvalues


def conserved_family(within: Tensor, random: Tensor, active: Tensor) -> tuple[int, list[float]]:
    """The dimension of the conserved family of the ``active`` terms ``(n,)`` bool (the
    eigenvalues below the largest jump, see :data:`FAMILY_GAP`) and their smallest eigenvalues
    (up to 5)."""
    _, _, spectrum = _smallest_eigen(within, random, active[None])
    spectrum = spectrum[0, :int(active.sum())]
    # Exactly conserved laws of noise-free data have eigenvalues at rounding level, even
    # negative: their ratios mean nothing.
    head = spectrum[:FAMILY_SPAN + 1].clamp(min=1e-12 * float(spectrum[-1]))
    jumps = head[1:] / head[:-1]
    family = 1
    if len(jumps) and float(jumps.max()) >= FAMILY_GAP:
        family = int(torch.argmax(jumps)) + 1
    return family, spectrum[:5].tolist()


def _inputs(term: Expr) -> set[int]:
    """The state columns ``term`` reads."""
    return {leaf.index for leaf in term.leaves() if leaf.op == "input"}


def _diagonal_kinetic(terms: Sequence[Expr], units: Sequence[Unit], within: Tensor,
                      random: Tensor, active: Tensor) -> tuple[FamilyChoice, Tensor]:
    """The ``diagonal_kinetic`` rule: ``active`` ``(n,)`` without the terms in which two different
    velocity columns occur, and how that changed the family."""
    velocities = velocity_columns(units)
    dropped = [index for index, term in enumerate(terms)
               if len(_inputs(term) & set(velocities)) >= 2]
    if not dropped:
        family, eigenvalues = conserved_family(within, random, active)
        return FamilyChoice("diagonal_kinetic", False, velocities, [], family, eigenvalues), active
    kept = active.clone()
    kept[dropped] = False
    family, eigenvalues = conserved_family(within, random, kept)
    return FamilyChoice("diagonal_kinetic", True, velocities, [terms[i] for i in dropped], family,
                        eigenvalues), kept


def _eliminate(within: Tensor, random: Tensor, active: Tensor
               ) -> tuple[list[tuple[int, float]], list[tuple[Tensor, Tensor]]]:
    """Backward elimination from the ``active`` terms ``(n,)`` bool: per step ``(n_terms_left,
    eigenvalue)`` and ``(mask (n,), eigenvector (n,))``, all active terms first."""
    value, vector, _ = _smallest_eigen(within, random, active[None])
    path = [(int(active.sum()), float(value[0]))]
    solutions = [(active.clone(), vector[0])]
    while int(active.sum()) > 1:
        candidates = torch.nonzero(active).flatten()
        masks = active[None].repeat(len(candidates), 1)
        masks[torch.arange(len(candidates)), candidates] = False
        values_k, vectors_k, _ = _smallest_eigen(within, random, masks)
        best = int(torch.argmin(values_k))
        active = masks[best]
        path.append((int(active.sum()), float(values_k[best])))
        solutions.append((active.clone(), vectors_k[best]))
    return path, solutions


def sparse_search(units: Sequence[Unit], data: FitData, *, max_degree: int = 2,
                  tolerance: float = 2.0, family_rule: str = "diagonal_kinetic") -> SparseLaw:
    """The sparsest linear combination of :func:`candidate_terms` that is as conserved (within
    ``tolerance`` times the smallest variance ratio ``W / R`` along the elimination path) as
    any combination; when more than one combination is conserved, ``family_rule`` (one of
    :data:`FAMILY_RULES`) chooses among them first; see the module docstring.

    Raises:
        ValueError: when no candidate term varies on the random states, or for a bad setting.
    """
    if tolerance < 1:
        raise ValueError(f"search.sparse_tolerance: expected >= 1, got {tolerance}")
    require_choice("search.family_rule", family_rule, FAMILY_RULES)
    terms = candidate_terms(units, max_degree)
    points = data.all_points.to(torch.float64)
    values = evaluate_all(compile_programs(terms, device=points.device), len(terms), points)
    within, random = _quadratic_forms(values, data)
    scale = random.diagonal().sqrt()
    varies = torch.isfinite(scale) & (scale > 1e-12 * scale.max())
    if not bool(varies.any()):
        raise ValueError("sparse search: expected candidate terms that vary on the random "
                         "states, got none")
    # Standardised terms keep the eigenproblems well conditioned; constant terms are left out.
    safe = torch.where(varies, scale, torch.ones_like(scale))
    within = within / (safe[:, None] * safe[None, :])
    random = random / (safe[:, None] * safe[None, :])
    family, eigenvalues = conserved_family(within, random, varies)
    choice, active = None, varies
    if family > 1 and family_rule == "diagonal_kinetic":
        choice, active = _diagonal_kinetic(terms, units, within, random, varies)
    path, solutions = _eliminate(within, random, active)
    smallest = min(value for _, value in path)
    chosen = max(index for index, (_, value) in enumerate(path)
                 if value <= tolerance * smallest)
    mask, vector = solutions[chosen]
    coefficients = (vector / safe).cpu().numpy()
    kept = torch.nonzero(mask).flatten().tolist()
    lead = max(kept, key=lambda index: abs(float(vector[index])))
    formula = terms[lead]
    params = []
    for index in kept:
        if index != lead:
            formula = binary("add", formula, binary("mul", param(), terms[index]))
            params.append(coefficients[index] / coefficients[lead])
    return SparseLaw(formula, np.asarray(params, dtype=np.float64), path, len(terms), family,
                     eigenvalues, choice)
