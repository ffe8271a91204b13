"""Batched evaluation, de-duplication and fitting of candidate conserved quantities.

All formulas are evaluated as tensor programs: formulas sharing a tree *topology* (the post-order
sequence of node arities) form one :class:`Program`, evaluated over ``(n_formulas, n_points)``
tensors. Inside a program the leaves are gathered from the data or the parameter matrix, and at
each inner node the rows are split by operator (``+ - * /`` or ``sin cos square``), each operator
is applied once to its rows and the results are put back in row order. A size-7 enumeration has
only 89 topologies, so one evaluation of tens of thousands of formulas is a few hundred tensor
operations, never a Python step per formula.

Fitting minimises every formula's scale- and shift-free variance along the true trajectories,

    loss_c(theta_c) = Var_within(f_c) / Var_random(f_c),

where ``Var_within`` is the pooled within-trajectory variance and ``Var_random`` the variance on
random sequences: by default (``pooled``) sequences of states drawn at random from all
trajectories, whose expected variance is the variance over all points; with ``box`` (the only
choice for a single trajectory) states drawn uniformly from the data's bounding box. ``box`` lets
formulas with a pole or a heavy tail inside the box but away from the data (``q**4*p**4``) look
conserved, so ``pooled`` is the default. All parameters live in one
``(n_formulas, n_params)`` tensor optimised by one Adam over the sum of the (independent)
per-formula losses. A formula is *conserved* when ``Var_random / Var_within`` is at least the
configured ratio (100 by default) and it is not (nearly) constant on the random states; given the
observation noise's variance at each point, the scores first remove from ``Var_within`` the part
the noise explains (:func:`score_formulas`), without which noise caps every law's ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from noether_control.discovery.expressions import BINARY_OPS, UNARY_OPS, Expr
from noether_control.discovery.trend import detrended

FINGERPRINT_PARAMS = (0.7317, 1.3179, -0.4561, 2.1173)
"""Parameter values used to fingerprint formulas (arbitrary, distinct, not 0 or +-1)."""


@dataclass
class Program:
    """Formulas of one topology, evaluated together.

    Attributes:
        arities: post-order arity of each node (0 leaf, 1 unary, 2 binary).
        rows: index of each formula in the caller's list, ``(n,)`` int64.
        leaf_inputs: per leaf the input column, or -1 for a parameter, ``(n, n_leaves)``.
        leaf_params: per leaf the parameter slot, or -1 for an input, ``(n, n_leaves)``.
        node_ops: per inner node, a list of ``(op, rows_with_op)`` and the inverse permutation
            that restores row order after concatenating the per-op results (None when one op).
    """

    arities: tuple[int, ...]
    rows: Tensor
    leaf_inputs: Tensor
    leaf_params: Tensor
    node_ops: list[tuple[list[tuple[str, Tensor]], Tensor | None]]


def compile_programs(formulas: Sequence[Expr], chunk_size: int = 1024,
                     device: torch.device | None = None) -> list[Program]:
    """Group ``formulas`` by topology into :class:`Program` chunks of at most ``chunk_size``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, formula in enumerate(formulas):
        groups.setdefault(_arities(formula), []).append(index)
    programs = []
    for arities, members in groups.items():
        for start in range(0, len(members), chunk_size):
            programs.append(_compile_group(arities, members[start:start + chunk_size], formulas,
                                           device))
    return programs


def _arities(formula: Expr) -> tuple[int, ...]:
    return (*(a for child in formula.children for a in _arities(child)), len(formula.children))


def _postfix_nodes(formula: Expr) -> list[Expr]:
    return [*(node for child in formula.children for node in _postfix_nodes(child)), formula]


def _compile_group(arities: tuple[int, ...], members: list[int], formulas: Sequence[Expr],
                   device: torch.device | None) -> Program:
    leaf_inputs, leaf_params, inner_ops = [], [], []
    for index in members:
        nodes = _postfix_nodes(formulas[index])
        inputs, slots, ops = [], [], []
        param_slot = 0
        for node in nodes:
            if node.op == "input":
                inputs.append(node.index)
                slots.append(-1)
            elif node.op == "param":
                inputs.append(-1)
                slots.append(param_slot)
                param_slot += 1
            else:
                ops.append(node.op)
        leaf_inputs.append(inputs)
        leaf_params.append(slots)
        inner_ops.append(ops)
    node_ops = []
    for position in range(sum(1 for a in arities if a > 0)):
        column = [ops[position] for ops in inner_ops]
        present = [op for op in (*BINARY_OPS, *UNARY_OPS) if op in set(column)]
        split = [(op, torch.tensor([r for r, o in enumerate(column) if o == op], dtype=torch.long,
                                   device=device)) for op in present]
        inverse = None
        if len(split) > 1:
            order = torch.cat([rows for _, rows in split])
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(len(order), device=device)
        node_ops.append((split, inverse))
    return Program(arities, torch.tensor(members, dtype=torch.long, device=device),
                   torch.tensor(leaf_inputs, dtype=torch.long, device=device),
                   torch.tensor(leaf_params, dtype=torch.long, device=device), node_ops)


def _apply(op: str, operands: list[Tensor]) -> Tensor:
    if op == "add":
        return operands[0] + operands[1]
    if op == "sub":
        return operands[0] - operands[1]
    if op == "mul":
        return operands[0] * operands[1]
    if op == "div":
        return operands[0] / operands[1]
    if op == "sin":
        return torch.sin(operands[0])
    if op == "cos":
        return torch.cos(operands[0])
    return operands[0] * operands[0]


def evaluate_program(program: Program, inputs: Tensor, params: Tensor | None) -> Tensor:
    """Values of the program's formulas at every point.

    Args:
        program: from :func:`compile_programs`.
        inputs: the states, ``(n_inputs, n_points)`` (column-major so a leaf is one gather).
        params: the program's parameters ``(n, n_slots)`` in row order, or None if it has none.

    Returns:
        ``(n, n_points)`` values, same dtype as ``inputs``.
    """
    stack: list[Tensor] = []
    leaf = 0
    inner = 0
    n_points = inputs.shape[1]
    for arity in program.arities:
        if arity == 0:
            input_index = program.leaf_inputs[:, leaf]
            values = inputs[input_index.clamp(min=0)]
            if params is not None and bool((input_index < 0).any()):
                slot = program.leaf_params[:, leaf].clamp(min=0).unsqueeze(1)
                values = torch.where((input_index < 0).unsqueeze(1),
                                     params.gather(1, slot).expand(-1, n_points), values)
            stack.append(values)
            leaf += 1
            continue
        operands = stack[-arity:]
        del stack[-arity:]
        split, inverse = program.node_ops[inner]
        inner += 1
        if inverse is None:
            stack.append(_apply(split[0][0], operands))
        else:
            parts = [_apply(op, [operand[rows] for operand in operands]) for op, rows in split]
            stack.append(torch.cat(parts)[inverse])
    return stack[0]


def evaluate_all(programs: Sequence[Program], n_formulas: int, inputs: Tensor,
                 params: Tensor | None = None) -> Tensor:
    """Values of every formula ``(n_formulas, n_points)``; ``params`` is ``(n_formulas, slots)``."""
    out = torch.empty(n_formulas, inputs.shape[1], dtype=inputs.dtype, device=inputs.device)
    for program in programs:
        out[program.rows] = evaluate_program(
            program, inputs, None if params is None else params[program.rows])
    return out


def fingerprint_duplicates(formulas: Sequence[Expr], inputs: Tensor,
                           params: Tensor | None = None, chunk_size: int = 1024,
                           digits: int = 7) -> tuple[list[int], dict[str, int]]:
    """Indices of the formulas to keep: the first of each equivalence class.

    Two formulas are equivalent as conserved quantities when one is an affine function of the
    other (``a*f + b`` is conserved exactly when ``f`` is), so each formula's values at the
    random ``inputs`` ``(n_inputs, n_points)`` are standardised (mean 0, std 1, sign fixed by the
    first point) and rounded to ``digits`` significant digits before hashing. Parameters take
    ``params`` ``(n, slots)`` or the fixed :data:`FINGERPRINT_PARAMS`. Formulas that are
    non-finite or constant on the inputs are dropped.

    Returns:
        ``(kept_indices, dropped)`` with ``dropped`` counting ``duplicate``, ``constant`` and
        ``non_finite`` formulas.
    """
    if params is None:
        slots = max((f.n_params for f in formulas), default=0)
        params = torch.tensor(FINGERPRINT_PARAMS[:slots], dtype=inputs.dtype,
                              device=inputs.device).expand(len(formulas), slots)
    values = evaluate_all(compile_programs(formulas, chunk_size, inputs.device), len(formulas),
                          inputs, params)
    finite = torch.isfinite(values).all(dim=1)
    centred = values - values.mean(dim=1, keepdim=True)
    scale = centred.pow(2).mean(dim=1).sqrt()
    magnitude = values.abs().mean(dim=1)
    constant = ~(scale > 1e-9 * (magnitude + 1e-300))
    standard = centred / scale.unsqueeze(1)
    standard = standard * torch.where(standard[:, :1] < 0, -1.0, 1.0)
    rounded = np.round(standard.cpu().numpy(), digits - 1)
    kept: list[int] = []
    seen: set[bytes] = set()
    dropped = {"duplicate": 0, "constant": 0, "non_finite": 0}
    for index in range(len(formulas)):
        if not finite[index]:
            dropped["non_finite"] += 1
        elif constant[index]:
            dropped["constant"] += 1
        else:
            key = (rounded[index] + 0.0).tobytes()  # +0.0 folds -0.0 into 0.0
            if key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                kept.append(index)
    return kept, dropped


def merge_equivalent(formulas: Sequence[Expr], inputs: Tensor, params: Tensor,
                     tolerance: float = 1e-3, chunk_size: int = 1024) -> list[int]:
    """Indices of ``formulas`` to keep so that no two kept ones are affinely equivalent.

    For fitted survivors: different parametrisations of one law (``k*p**2 + q**2`` and
    ``q**2 + p**2/k``) fit to constants a fraction of a percent apart, which hashing rounded
    values cannot merge reliably. Here formulas ``i < j`` are one law when the correlation of
    their values at ``inputs`` ``(n_inputs, n_points)`` satisfies ``1 - |corr| < tolerance``;
    the earlier one (list order: best first) is kept. Pairwise, so meant for hundreds of
    formulas, not the whole enumeration.
    """
    if not formulas:
        return []
    values = evaluate_all(compile_programs(formulas, chunk_size, inputs.device), len(formulas),
                          inputs, params)
    centred = values - values.mean(dim=1, keepdim=True)
    standard = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-300)
    similar = (1 - (standard @ standard.T).abs()) < tolerance
    kept: list[int] = []
    for index in range(len(formulas)):
        if not any(bool(similar[index, other]) for other in kept):
            kept.append(index)
    return kept


RANDOM_NULLS = ("auto", "pooled", "box")
"""``search.random`` settings: ``auto`` picks ``pooled`` or ``box`` from the data."""


def resolve_random(setting: str, n_trajectories: int) -> tuple[str, str]:
    """The random-state null to use and why: ``(null, reason)``.

    ``auto`` takes ``pooled`` (states of the data themselves) for two or more training
    trajectories and ``box`` for one, where pooled sequences would compare the recording with
    itself; ``pooled`` or ``box`` given explicitly are kept.
    """
    if setting not in RANDOM_NULLS:
        raise ValueError(f"search.random: expected one of {RANDOM_NULLS}, got {setting!r}")
    if setting != "auto":
        return setting, "set by search.random"
    if n_trajectories < 2:
        return "box", "auto: one training trajectory"
    return "pooled", f"auto: {n_trajectories} training trajectories"


@dataclass
class FitData:
    """The points a fit sees.

    Attributes:
        true_points: states along the training trajectories, ``(n_inputs, n_true)``.
        segments: each true point's trajectory index, ``(n_true,)`` int64.
        random_points: random states from the data's bounding box ``(n_inputs, n_random)``, or
            None for pooled random sequences (states drawn from all trajectories).
        noise_var: variance of each true point's observation noise ``(n_inputs, n_true)`` (after
            any smoothing), or None: the scores then take the measured variance at face value.
        trend: per true point its trajectory's orthonormal polynomial basis in time
            ``(n_true, B)`` (:func:`noether_control.discovery.trend.trend_basis`): the
            within-trajectory variance is then measured after removing each trajectory's
            polynomial trend; None removes only each trajectory's mean.
    """

    true_points: Tensor
    segments: Tensor
    random_points: Tensor | None = None
    noise_var: Tensor | None = None
    trend: Tensor | None = None

    @classmethod
    def from_arrays(cls, points: np.ndarray, segments: np.ndarray, *, random: str = "pooled",
                    n_random: int = 512, rng: np.random.Generator | None = None,
                    noise_var: np.ndarray | None = None, trend: np.ndarray | None = None,
                    dtype: torch.dtype = torch.float64,
                    device: torch.device | None = None) -> FitData:
        """Build from stacked states ``(N, D)``, trajectory ids ``(N,)`` and optionally each
        state's noise variance ``noise_var`` ``(N, D)`` and trend basis ``trend`` ``(N, B)``.

        ``random="pooled"`` compares with sequences drawn from all trajectories (needs >= 2
        trajectories); ``random="box"`` draws ``n_random`` states uniformly from the per-column
        ``[min, max]`` of ``points`` with ``rng``.
        """
        if random not in ("pooled", "box"):
            raise ValueError(f"random: expected 'pooled' or 'box', got {random!r}")
        true_points = torch.as_tensor(points.T.copy(), dtype=dtype, device=device)
        segment_ids = torch.as_tensor(segments, dtype=torch.long, device=device)
        noise = None if noise_var is None else torch.as_tensor(noise_var.T.copy(),
                                                               dtype=torch.float64, device=device)
        if noise is not None and noise.shape != true_points.shape:
            raise ValueError(f"noise_var: expected one variance per state {tuple(points.shape)}, "
                             f"got {tuple(noise_var.shape)}")
        if trend is not None and trend.shape[0] != points.shape[0]:
            raise ValueError(f"trend: expected one basis row per state ({points.shape[0]}), got "
                             f"{trend.shape[0]}")
        basis = None if trend is None else torch.as_tensor(trend, dtype=dtype, device=device)
        if random == "pooled":
            if len(np.unique(segments)) < 2:
                raise ValueError(f"random='pooled' compares across trajectories: expected >= 2 "
                                 f"training trajectories, got {len(np.unique(segments))}; use "
                                 f"random='box' for one")
            return cls(true_points, segment_ids, None, noise, basis)
        if n_random < 2 or rng is None:
            raise ValueError(f"random='box': expected n_random >= 2 and an rng, got {n_random} "
                             f"and {rng!r}")
        low, high = points.min(axis=0), points.max(axis=0)
        box = rng.uniform(low, high, size=(n_random, points.shape[1]))
        return cls(true_points, segment_ids,
                   torch.as_tensor(box.T.copy(), dtype=dtype, device=device), noise, basis)

    @property
    def all_points(self) -> Tensor:
        """The points every formula is evaluated at: true then (box) random states."""
        if self.random_points is None:
            return self.true_points
        return torch.cat([self.true_points, self.random_points], dim=1)


def variance_terms(values: Tensor, data: FitData, point_weights: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Pooled within-trajectory variance and random-sequence variance, each ``(n,)``.

    ``values`` is ``(n, n_points)`` as evaluated on :attr:`FitData.all_points`;
    ``point_weights`` ``(n, n_true)`` (non-negative; 0 leaves a point out) weighs each true
    point in every mean, as if it occurred that many times; None weighs them all 1 (and skips
    the weighting: this runs for every formula at every fitting step).
    """
    n_true = data.true_points.shape[1]
    true_values = values[:, :n_true]
    # Centring first keeps float64 cancellation harmless when a formula has a large offset.
    true_values = true_values - true_values.mean(dim=1, keepdim=True)
    n_segments = int(data.segments.max()) + 1
    zeros = torch.zeros(values.shape[0], n_segments, dtype=values.dtype, device=values.device)
    if point_weights is None:
        weights = None
        total: Tensor | float = float(n_true)
        segment_weights = torch.bincount(data.segments, minlength=n_segments).to(values.dtype)
    else:
        weights = point_weights.to(values.dtype)
        total = weights.sum(dim=1)
        segment_weights = zeros.index_add(1, data.segments, weights)

    def weighted(per_point: Tensor) -> Tensor:
        return per_point if weights is None else weights * per_point

    if data.trend is None:
        means = zeros.index_add(1, data.segments, weighted(true_values)) / \
            segment_weights.clamp_min(torch.finfo(values.dtype).tiny)
        residuals = true_values - means[:, data.segments]
    else:
        residuals = detrended(true_values, data.trend.to(values.dtype), data.segments, weights)
    within = weighted(residuals.pow(2)).sum(dim=1) / total
    if data.random_points is None:
        if weights is not None:
            true_values = true_values - (weighted(true_values).sum(dim=1) / total).unsqueeze(1)
        return within, weighted(true_values.pow(2)).sum(dim=1) / total
    return within, values[:, n_true:].var(dim=1)


def _random_values(values: Tensor, data: FitData) -> Tensor:
    return values if data.random_points is None else values[:, data.true_points.shape[1]:]


def variance_ratio_loss(values: Tensor, data: FitData, point_weights: Tensor | None = None
                        ) -> Tensor:
    """The fitting loss ``Var_within / Var_random`` per formula, ``(n,)`` (``point_weights``:
    see :func:`variance_terms`).

    A plain ratio rather than its logarithm: the log's gradient explodes next to an exactly
    conserved optimum and Adam's second-moment estimate then freezes the parameter short of it.
    """
    within, random = variance_terms(values, data, point_weights)
    # A relative floor keeps the ratio finite for formulas that collapse to a constant.
    floor = 1e-12 * _random_values(values, data).pow(2).mean(dim=1).detach() + 1e-30
    return within / (random + floor)


@dataclass
class FitResult:
    """Fitted parameters and conservation scores of every formula.

    Attributes:
        params: ``(n_formulas, n_slots)`` fitted parameters (unused slots are meaningless).
        variance_ratio: ``Var_random / Var_within`` per formula, ``(n_formulas,)`` (0 when not
            finite or trivial), with ``Var_within`` noise-corrected when the data has
            ``noise_var`` (see :func:`score_formulas`).
        raw_ratio: the same with the measured ``Var_within``.
        trivial: formulas constant on random states (or non-finite), ``(n_formulas,)`` bool.
        losses: mean fitting loss over parametrised formulas after each Adam step.
    """

    params: Tensor
    variance_ratio: Tensor
    raw_ratio: Tensor
    trivial: Tensor
    losses: list[float]


def fit_formulas(formulas: Sequence[Expr], data: FitData, *, steps: int = 200, lr: float = 0.1,
                 init: float = 1.0, chunk_size: int = 1024, noise_floor: float = 0.1
                 ) -> FitResult:
    """Fit every formula's parameters to minimise :func:`variance_ratio_loss`, all at once.

    One Adam (cosine-decayed learning rate) optimises the ``(n_formulas, n_slots)`` parameter
    matrix; each step evaluates every topology program once and back-propagates the summed loss.
    Formulas without parameters are evaluated once, not optimised. ``noise_floor``: see
    :func:`score_formulas`.
    """
    if steps < 0:
        raise ValueError(f"steps: expected >= 0, got {steps}")
    points = data.all_points
    slots = max((f.n_params for f in formulas), default=0)
    params = torch.full((len(formulas), max(slots, 1)), float(init), dtype=points.dtype,
                        device=points.device)
    with_params = [i for i, f in enumerate(formulas) if f.n_params > 0]
    losses: list[float] = []
    if with_params and steps > 0:
        params[with_params], losses = _minimise([formulas[i] for i in with_params], data,
                                                params[with_params], steps, lr, chunk_size)
    ratio, raw_ratio, trivial = score_formulas(formulas, data, params, chunk_size, noise_floor)
    return FitResult(params, ratio, raw_ratio, trivial, losses)


def _minimise(formulas: Sequence[Expr], data: FitData, init: Tensor, steps: int, lr: float,
              chunk_size: int, point_weights: Tensor | None = None
              ) -> tuple[Tensor, list[float]]:
    """Adam (cosine-decayed) on the summed :func:`variance_ratio_loss` of parametrised
    ``formulas`` from ``init`` ``(n, slots)``; returns the parameters and the mean loss per step.
    """
    points = data.all_points
    programs = compile_programs(formulas, chunk_size, points.device)
    fitted = init.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([fitted], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=False)
        total = 0.0
        for program in programs:
            values = evaluate_program(program, points, fitted[program.rows])
            weights = None if point_weights is None else point_weights[program.rows]
            loss = variance_ratio_loss(values, data, weights)
            loss = torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))
            loss.sum().backward()
            total += float(loss.detach().sum())
        # A formula that hits a pole yields NaN gradients for its own row only; freeze it.
        fitted.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        optimizer.step()
        schedule.step()
        losses.append(total / len(formulas))
    return fitted.detach(), losses


def jackknife_units(segments: np.ndarray, block: int = 10, min_trajectories: int = 10
                    ) -> np.ndarray:
    """The independent unit of each point of ``segments`` ``(N,)`` (each point's trajectory
    index, points of a trajectory contiguous and in time order), ``(N,)`` ids from 0.

    Whole trajectories when there are at least ``min_trajectories`` (noise and smoothing
    correlate the samples of one trajectory, so trajectories are the independent units); with
    fewer, contiguous blocks of ``block`` samples within the trajectories (so one long
    measurement still has several).
    """
    if block < 1:
        raise ValueError(f"block: expected >= 1 samples, got {block}")
    if int(segments.max()) + 1 >= min_trajectories:
        return segments
    starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
    position = np.arange(len(segments)) - np.repeat(starts, np.diff(np.r_[starts,
                                                                           len(segments)]))
    _, units = np.unique(np.stack([segments, position // block]), axis=1, return_inverse=True)
    return units.reshape(-1)


def jackknife_weights(units: np.ndarray, max_groups: int = 50) -> np.ndarray:
    """Delete-a-group jackknife resamples as point weights ``(G, N)`` (0 or 1) for points of
    ``units`` ``(N,)`` (from :func:`jackknife_units`): resample ``g`` leaves out group ``g``.
    More than ``max_groups`` units are dealt round-robin into ``max_groups`` groups, which
    bounds the number of refits.
    """
    n_units = int(units.max()) + 1
    if n_units < 2 or max_groups < 2:
        raise ValueError(f"a jackknife needs >= 2 units and groups, got {n_units} units and "
                         f"max_groups {max_groups}")
    groups = units % min(n_units, max_groups)
    return (groups[None, :] != np.arange(int(groups.max()) + 1)[:, None]).astype(np.float64)


def jackknife_stderr(estimates: np.ndarray) -> np.ndarray:
    """Standard error ``(P,)`` from delete-a-group estimates ``(G, P)``:
    ``sqrt((G - 1) / G * sum_g (theta_g - mean theta)^2)``."""
    groups = estimates.shape[0]
    return np.sqrt((groups - 1) / groups * ((estimates - estimates.mean(axis=0)) ** 2).sum(axis=0))


def refit_params(formulas: Sequence[Expr], data: FitData, params: Tensor, point_weights: Tensor,
                 *, steps: int = 300, lr: float = 0.1, chunk_size: int = 1024) -> Tensor:
    """Each formula's parameters refitted on every reweighting of the data, ``(n, R, slots)``.

    Args:
        formulas: ``n`` formulas, each with at least one parameter.
        data: the points of the original fit.
        params: their fitted parameters ``(n, slots)``; every refit starts there, so it finds
            the same local optimum moved by the reweighting.
        point_weights: ``(R, n_true)``, e.g. from :func:`jackknife_weights`.
        steps, lr: Adam steps and initial learning rate of the refits (all at once).
    """
    if any(f.n_params == 0 for f in formulas):
        raise ValueError("refit_params: every formula needs a parameter to refit")
    n_weightings = point_weights.shape[0]
    replicated = [formula for formula in formulas for _ in range(n_weightings)]
    weights = point_weights.to(data.true_points).repeat(len(formulas), 1)
    init = params.to(data.true_points).repeat_interleave(n_weightings, dim=0)
    fitted, _ = _minimise(replicated, data, init, steps, lr, chunk_size, weights)
    return fitted.view(len(formulas), n_weightings, -1)


def jackknife_intervals(formulas: Sequence[Expr], data: FitData, params: Sequence[np.ndarray],
                        *, block: int = 10, steps: int = 300, lr: float = 0.1,
                        chunk_size: int = 1024, confidence: float = 0.95
                        ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per formula the standard error ``(n_params,)`` and ``confidence`` interval
    ``(n_params, 2)`` of its fitted ``params`` ``(n_params,)``: delete-a-group jackknife refits
    (:func:`jackknife_units` with ``block``, :func:`jackknife_weights`, :func:`refit_params`),
    all formulas and groups fitted at once; the interval is the constant ± the t quantile with
    G - 1 degrees of freedom times the standard error. ``None`` when the data make a single
    jackknife unit (nothing to leave out).
    """
    units = jackknife_units(data.segments.cpu().numpy(), block)
    if units.max() < 1:
        return None
    weights = jackknife_weights(units)
    start = torch.zeros(len(formulas), max(f.n_params for f in formulas), dtype=torch.float64)
    for row, values in enumerate(params):
        start[row, :len(values)] = torch.as_tensor(values)
    refits = refit_params(formulas, data, start, torch.as_tensor(weights), steps=steps, lr=lr,
                          chunk_size=chunk_size)
    quantile = float(scipy.stats.t.ppf((1 + confidence) / 2, len(weights) - 1))
    intervals = []
    for formula, centre, estimates in zip(formulas, params,
                                          refits.to(torch.float64).cpu().numpy(), strict=True):
        stderr = jackknife_stderr(estimates[:, :formula.n_params])
        intervals.append((stderr, np.stack([centre - quantile * stderr,
                                            centre + quantile * stderr], axis=1)))
    return intervals


@torch.no_grad()
def score_formulas(formulas: Sequence[Expr], data: FitData, params: Tensor,
                   chunk_size: int = 1024, noise_floor: float = 0.1
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """``(variance_ratio, raw_ratio, trivial)`` per formula at the given parameters ``(n, slots)``.

    ``raw_ratio`` is ``Var_random / Var_within``; with generated random states (``box``)
    ``Var_random`` is measured robustly, from the interquartile range (:func:`_robust_variance`):
    uniform states can fall next to a formula's pole where the data never goes, and the
    variance of a handful of huge values would make ``q/cos(q)**8`` look conserved. With
    ``data.noise_var`` the measured within-trajectory variance is corrected for what the
    observation noise alone puts there, ``Var_noise = mean_t sum_i noise_var[i, t] *
    (df/dx_i)^2`` (first-order propagation, derivatives by central differences), and
    ``variance_ratio = Var_random / max(Var_within - Var_noise, noise_floor * Var_within)``: a
    law whose measured variance the noise explains scores ``raw_ratio / noise_floor``, the
    resolution of the estimate. Without it ``variance_ratio = raw_ratio``.
    """
    programs = compile_programs(formulas, chunk_size, params.device)
    ratio = torch.zeros(len(formulas), dtype=params.dtype, device=params.device)
    raw_ratio = torch.zeros_like(ratio)
    trivial = torch.ones(len(formulas), dtype=torch.bool, device=params.device)
    points = data.all_points
    for program in programs:
        rows_params = params[program.rows]
        values = evaluate_program(program, points, rows_params)
        within, random_variance = variance_terms(values, data)
        scale = _random_values(values, data).pow(2).mean(dim=1)
        is_trivial = ~torch.isfinite(values).all(dim=1) | ~(random_variance > 1e-12 * scale)
        random = random_variance if data.random_points is None else _robust_variance(
            _random_values(values, data))
        measured = within.clamp_min(1e-300)
        program_raw = random / measured
        if data.noise_var is not None:
            noise = _noise_variance(program, data, rows_params).to(within.dtype)
            corrected = torch.maximum(within - noise, noise_floor * within).clamp_min(1e-300)
            program_ratio = random / torch.where(torch.isfinite(noise), corrected, measured)
        else:
            program_ratio = program_raw
        for target, source in ((ratio, program_ratio), (raw_ratio, program_raw)):
            target[program.rows] = torch.where(is_trivial | ~torch.isfinite(source),
                                               torch.zeros_like(source), source)
        trivial[program.rows] = is_trivial
    return ratio, raw_ratio, trivial


def _robust_variance(values: Tensor) -> Tensor:
    """``((q75 - q25) / 1.349)^2`` per row of ``values`` ``(n, m)``: the variance for Gaussian
    values, but a few huge values (a formula's pole next to some random states) leave it
    unchanged."""
    finite = values.nan_to_num(nan=0.0, posinf=torch.finfo(values.dtype).max,
                               neginf=torch.finfo(values.dtype).min)
    quartiles = torch.quantile(finite, torch.tensor([0.25, 0.75], dtype=values.dtype,
                                                    device=values.device), dim=1)
    return ((quartiles[1] - quartiles[0]) / 1.349).pow(2)


def _noise_variance(program: Program, data: FitData, params: Tensor) -> Tensor:
    """``mean_t sum_i noise_var[i, t] * (df/dx_i)^2`` per formula of ``program``, ``(n,)``."""
    points = data.true_points.to(torch.float64)
    params = params.to(torch.float64)
    total = torch.zeros(len(program.rows), points.shape[1], dtype=torch.float64,
                        device=points.device)
    for index in range(points.shape[0]):
        # float64 central differences: relative step 1e-6 balances truncation and rounding.
        step = 1e-6 * float(points[index].abs().max().clamp_min(1e-12))
        shifted = [points.clone(), points.clone()]
        shifted[0][index] += step
        shifted[1][index] -= step
        slope = (evaluate_program(program, shifted[0], params)
                 - evaluate_program(program, shifted[1], params)) / (2 * step)
        total += data.noise_var[index] * slope.pow(2)
    return total.mean(dim=1)


def drift_per_time(values: Sequence[np.ndarray], times: Sequence[np.ndarray]
                   ) -> tuple[float, float]:
    """Least-squares slope of a quantity against time, pooled over trajectories.

    Args:
        values: per trajectory the quantity's values ``(T_i,)``.
        times: per trajectory the time stamps ``(T_i,)``.

    Returns:
        ``(slope, significance)``: the slope in quantity units per time unit (fitted with a
        separate offset per trajectory) and ``|slope| * mean duration / residual std``, which is
        above about 2 when the drift stands out of the noise.
    """
    centred_t = [t - t.mean() for t in times]
    centred_v = [v - v.mean() for v in values]
    covariance = sum(float(np.dot(t, v)) for t, v in zip(centred_t, centred_v, strict=True))
    variance = sum(float(np.dot(t, t)) for t in centred_t)
    slope = covariance / variance if variance > 0 else 0.0
    residual = np.concatenate([v - slope * t for t, v in zip(centred_t, centred_v, strict=True)])
    duration = float(np.mean([t[-1] - t[0] for t in times]))
    noise = float(residual.std())
    significance = abs(slope) * duration / noise if noise > 0 else math.inf * abs(slope)
    return slope, significance
