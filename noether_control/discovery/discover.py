"""``noether-control discover``: find useful conserved quantities, with units, in trajectories.

Pipeline (each stage in its own module):

1. data: an HNN-style system (``system=spring|pendulum``) or a measured file (``data.path=...``),
   split into train/test trajectories;
2. enumeration of unit-correct formulas up to ``search.max_size`` nodes, duplicates removed
   (commutativity, then equivalence on random inputs up to an affine map); for more than two
   state columns a sparse linear combination of unit-correct terms instead (``sparse.py``);
3. batched fitting of every formula's constants to minimise its scale-free variance along the
   training trajectories (up to a slow polynomial trend in time on trajectories spanning many
   oscillations, ``trend.py``); conserved = variance ratio (noise-corrected) >=
   ``search.min_variance_ratio``;
4. usefulness: tailoring a pretrained MLP with each survivor, the best meta-tailored, the final
   choice by training loss; baselines MLP, true energy, HNN; long-horizon RMSE on test.

Writes ``results.json`` and ``quantity.png`` in the run directory and prints a summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from noether_control.discovery.data import SYSTEMS, Trajectories, generate, load_trajectories
from noether_control.discovery.expressions import (
    BINARY_OPS,
    UNARY_OPS,
    Expr,
    enumerate_formulas,
    infer_unit,
    param_names,
    param_units,
    to_sympy,
)
from noether_control.discovery.fitting import (
    FitData,
    FitResult,
    drift_per_time,
    fingerprint_duplicates,
    fit_formulas,
    jackknife_intervals,
    merge_equivalent,
    resolve_random,
    score_formulas,
)
from noether_control.discovery.scoring import (
    HNN,
    MLP,
    Batch,
    MetaTailored,
    ScoringConfig,
    formula_quantity,
    meta_tailor,
    pooled_scale,
    rmse,
    rollout,
    sweep_learning_rates,
    sympy_quantity,
    tailored_rollout,
    train_one_step,
    usefulness_order,
)
from noether_control.discovery.sparse import (
    FAMILY_RULES,
    FamilyChoice,
    resolve_method,
    sparse_search,
)
from noether_control.discovery.trend import trend_basis, trend_degrees
from noether_control.runtime import (
    require_choice,
    resolve_device,
    run_dir,
    seed_everything,
    to_dataclass,
    write_json,
)


@dataclass
class SystemConfig:
    """A generated HNN-style system (used when ``data.path`` is not set)."""

    name: str = "pendulum"
    """``spring`` (H = q^2 + p^2) or ``pendulum`` (H = 3(1 - cos q) + p^2)."""
    n_trajectories: int = 50
    """Trajectories generated (HNN: 50, split half/half)."""
    noise_std: float = 0.1
    """Gaussian observation noise on q and p (HNN: 0.1)."""
    points_per_trajectory: int | None = None
    """Samples per trajectory; null keeps the HNN values (spring 30, pendulum 45)."""


@dataclass
class DataConfig:
    """A measured file; see :func:`noether_control.discovery.data.load_trajectories`."""

    path: str | None = None
    """CSV or whitespace text file; null uses the generated ``system``."""
    columns: list[str] | None = None
    """The file's column names in order, overriding its header."""
    trajectory: str | None = None
    """Column identifying the trajectory/trial (null: one trajectory)."""
    time: str = "t"
    """Time column (its unit is taken as seconds)."""
    units: dict[str, str] | None = None
    """Unit of each state column, e.g. {q: rad, p: rad/s} (null in the YAML so that a command-line
    dict replaces it instead of being merged into a struct)."""
    energy: str | None = None
    """The known conserved quantity as a sympy expression over the columns, for the oracle row."""


@dataclass
class SearchConfig:
    """Enumeration, fitting and the conservation filter."""

    method: str = "auto"
    """``enumerate`` (every unit-correct formula up to ``max_size``), ``sparse`` (a linear
    combination of unit-correct candidate terms, made sparse by backward elimination; see
    :mod:`noether_control.discovery.sparse`) or ``auto``: ``enumerate`` for up to two state
    columns, ``sparse`` for more (the enumeration grows too fast)."""
    sparse_degree: int = 2
    """``sparse``: highest degree of the candidate terms' monomials in the state variables."""
    sparse_tolerance: float = 2.0
    """``sparse``: the chosen law is the sparsest one along the elimination whose variance ratio
    Var_within / Var_random is within this factor of the best along it."""
    family_rule: str = "diagonal_kinetic"
    """``sparse``: how one law is chosen when conservation leaves a family of them (more than one
    independent conserved combination, as the normal modes of coupled linear oscillators):
    ``diagonal_kinetic`` drops the terms that multiply two different velocity columns (point
    masses in Cartesian coordinates have a diagonal kinetic energy; velocities recognised by
    their units, e.g. ``m/s`` beside ``m``) and redoes the fit; ``none`` reports the member the
    fit returns. Never applied to a one-dimensional family."""
    max_size: int = 7
    """Largest formula size in nodes (``p**2 - k*cos(q)`` has 7)."""
    max_params: int = 2
    """Most trainable constants per formula."""
    ops: list[str] = field(default_factory=lambda: [*UNARY_OPS, *BINARY_OPS])
    """Operators allowed in formulas."""
    fingerprint_points: int = 64
    """Random states used to detect equivalent formulas."""
    fit_steps: int = 100
    """Adam steps fitting all constants at once."""
    fit_lr: float = 0.1
    """Initial Adam learning rate (cosine-decayed)."""
    refine_steps: int = 300
    """Adam steps refitting, from scratch, every candidate within 2x of the conservation
    threshold: reparametrised forms of one law (``q**2 + k*p**2``, ``q**2 - p**2/k``) converge
    at different speeds, and a form still short of its optimum after ``fit_steps`` would report
    another constant than its twin and not merge with it. 0: off."""
    fit_dtype: str = "float32"
    """Fitting precision: float32 (fast) or float64."""
    chunk_size: int = 1024
    """Formulas evaluated per tensor program chunk (bounds memory)."""
    smooth_window: int = 7
    """Fit on states smoothed by a local cubic over this many samples (< 4: raw states). Raw
    states are used instead when the smoothing removes significantly more than the noise
    explains, i.e. flattens the motion itself (coarse sampling; see
    :meth:`~noether_control.discovery.data.Trajectories.checked_smoothing`)."""
    random: str = "auto"
    """Random sequences: ``pooled`` (states of all trajectories), ``box`` (uniform in the data's
    range) or ``auto``: ``pooled`` with two or more training trajectories, ``box`` with one."""
    n_random: int = 512
    """Random states for ``random=box``."""
    min_variance_ratio: float = 100.0
    """Conserved when Var_random / Var_within (noise-corrected, see ``noise_correction``) is at
    least this."""
    noise_correction: bool = True
    """Subtract from Var_within what the observation noise (estimated from the data, reduced by
    the smoothing) explains; without it a law's ratio is capped by the noise level."""
    noise_floor: float = 0.1
    """The corrected Var_within is at least this fraction of the measured one (about one
    standard error of the correction), so a noise-explained law scores 1/noise_floor times its
    raw ratio."""
    survivor_tolerance: float = 1e-3
    """Fitted survivors whose values correlate to within this of +-1 are one law."""
    trend_degree: int = 2
    """Degree of the polynomial in time removed from each formula's values along a trajectory
    before its within-trajectory variance is measured, so that a slowly dissipating law still
    scores as conserved (0: only the mean, strict conservation). Applied only to trajectories
    spanning at least ``trend_min_cycles`` oscillations; see
    :mod:`noether_control.discovery.trend`."""
    trend_min_cycles: float = 5.0
    """Oscillations a trajectory must span for its trend to be removed: over fewer, a
    polynomial in time would absorb part of the motion itself."""
    drift_significance: float = 2.0
    """A conserved formula whose drift over a trajectory exceeds this many noise standard
    deviations is reported as only approximately conserved."""
    uncertainty: bool = True
    """Give each reported formula's fitted constants a standard error and a 95% interval, by a
    jackknife that refits them leaving out one training trajectory at a time (one of at most 50
    groups of them; with fewer than 10 trajectories, one block of ``uncertainty_block``
    samples)."""
    uncertainty_block: int = 10
    """Samples per left-out block when there are fewer than 10 training trajectories."""

    def __post_init__(self) -> None:
        require_choice("search.family_rule", self.family_rule, FAMILY_RULES)
        if self.uncertainty_block < 1:
            raise ValueError(f"search.uncertainty_block: expected >= 1 samples, got "
                             f"{self.uncertainty_block}")


@dataclass
class DiscoverConfig:
    """``noether-control discover``."""

    seed: int = 0
    """Seeds data generation, splits, model initialisation."""
    device: str = "auto"
    """auto, cpu or cuda[:N]."""
    threads: int = 1
    """torch CPU threads."""
    test_fraction: float = 0.5
    """Fraction of trajectories held out for the RMSE table."""
    top_formulas: int = 10
    """Formulas printed and written to results.json."""
    score: bool = True
    """Run the usefulness stage (MLP tailoring, baselines, RMSE table)."""
    plot: bool = True
    """Write quantity.png."""
    system: SystemConfig = field(default_factory=SystemConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid value, before any work is done."""
        if self.threads < 1:
            raise ValueError(f"threads: expected >= 1 torch CPU threads, got {self.threads}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: expected a fraction in (0, 1) of the trajectories "
                             f"held out for testing, got {self.test_fraction}")
        if self.top_formulas < 1:
            raise ValueError(f"top_formulas: expected >= 1 formulas to report, got "
                             f"{self.top_formulas}")
        # NaN passes every comparison (an optimiser then fails deep inside torch): refuse it
        for section, node in (("system", self.system), ("search", self.search),
                              ("scoring", self.scoring)):
            for item in fields(node):
                value = getattr(node, item.name)
                values = value if isinstance(value, list) else [value]
                if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                    raise ValueError(f"{section}.{item.name}: expected finite numbers, got "
                                     f"{value}")
        for name, value in (("search.fit_lr", self.search.fit_lr),
                            ("scoring.pretrain_lr", self.scoring.pretrain_lr),
                            ("scoring.meta_lr", self.scoring.meta_lr),
                            ("scoring.meta_formula_lr", self.scoring.meta_formula_lr),
                            *(("scoring.lr_sweep", lr) for lr in self.scoring.lr_sweep)):
            if not value > 0:
                raise ValueError(f"{name}: expected a learning rate > 0, got {value}")
        if self.search.fit_steps < 1 or self.search.refine_steps < 0:
            raise ValueError(f"search.fit_steps and search.refine_steps: expected >= 1 and >= 0,"
                             f" got {self.search.fit_steps} and {self.search.refine_steps}")


def constant_columns(trajectories: Trajectories) -> list[str]:
    """The state columns whose value never changes over all ``trajectories``."""
    points, _ = trajectories.points()
    return [name for name, column in zip(trajectories.names, points.T, strict=True)
            if np.ptp(column) == 0]


@dataclass
class Candidate:
    """A conserved formula with its constants (fitted, then meta-learned if meta-tailored)."""

    formula: Expr
    params: np.ndarray
    variance_ratio: float
    raw_ratio: float
    fit_params: np.ndarray | None = None
    sweep_error: float = math.inf
    lr: float = 0.0
    meta: MetaTailored | None = None
    test_rmse: float | None = None
    drift: tuple[float, float] = (0.0, 0.0)
    fit_stderr: np.ndarray | None = None
    fit_interval: np.ndarray | None = None

    @property
    def conservation_params(self) -> np.ndarray:
        """The constants the conservation fit gave (before any meta-tailoring moved them)."""
        return self.params if self.fit_params is None else self.fit_params


def load_data(config: DiscoverConfig, rng: np.random.Generator) -> Trajectories:
    """The trajectories named by the config: ``data.path`` if set, else the generated system."""
    if config.data.path is not None:
        trajectories = load_trajectories(config.data.path, config.data.units or {},
                                         columns=config.data.columns, time=config.data.time,
                                         trajectory=config.data.trajectory,
                                         energy=config.data.energy)
        if trajectories.energy is not None:
            # Checked now, not after the search and scoring that come before its first use.
            try:
                sympy_quantity(trajectories.energy, trajectories.names)
            except ValueError as error:
                raise ValueError(f"data.{error}") from error
        return trajectories
    system = config.system
    if system.name not in SYSTEMS:
        raise ValueError(f"system: expected one of {sorted(SYSTEMS)}, got {system.name!r}")
    return generate(system.name, system.n_trajectories, system.noise_std, rng,
                    system.points_per_trajectory)


@dataclass
class SearchResult:
    """What enumeration, fitting and filtering produced."""

    per_size: dict[int, int]
    distinct_per_size: dict[int, int]
    n_enumerated: int
    n_candidates: int
    survivors: list[Candidate]
    seconds: dict[str, float]
    dropped: dict[str, int]
    fit_data: FitData
    random: str = "pooled"
    random_reason: str = ""
    trend_degrees: np.ndarray | None = None
    smooth_window: int = 0
    smoothing_excess: float = 1.0
    method: str = "enumerate"
    sparse_path: list[tuple[int, float]] | None = None
    sparse_family: int = 1
    sparse_choice: FamilyChoice | None = None


def search(train: Trajectories, config: SearchConfig, rng: np.random.Generator,
           device: torch.device) -> SearchResult:
    """Enumerate (or, for many state columns, run the sparse search), de-duplicate, fit and
    filter; survivors sorted by variance ratio (best first)."""
    if config.fit_dtype not in ("float32", "float64"):
        raise ValueError(f"search.fit_dtype: expected float32 or float64, got {config.fit_dtype!r}")
    method = resolve_method(config.method, len(train.names))
    noise_var = None
    noise_std = train.noise_std()
    window, smoothing_excess = train.checked_smoothing(config.smooth_window)
    if config.noise_correction:
        gains = np.concatenate(train.smoothing_gains(window))
        noise_var = gains[:, None] * noise_std[None, :] ** 2
    train = train.smoothed(window)
    random, random_reason = resolve_random(config.random, len(train))
    degrees = trend_degrees(train, config.trend_degree, config.trend_min_cycles, noise_std)
    basis = trend_basis(train.times, degrees) if degrees.max() > 0 else None
    points, segments = train.points()
    low, high = points.min(axis=0), points.max(axis=0)
    probe = torch.as_tensor(rng.uniform(low, high, size=(config.fingerprint_points,
                                                         points.shape[1])).T.copy(),
                            dtype=torch.float64, device=device)
    # The sparse search solves exact eigenproblems: float64 whatever the fitting precision.
    dtype = torch.float64 if method == "sparse" else getattr(torch, config.fit_dtype)
    data = FitData.from_arrays(points, segments, random=random, n_random=config.n_random,
                               rng=rng, noise_var=noise_var, trend=basis, dtype=dtype,
                               device=device)
    if method == "sparse":
        formulas, fit, stats = _sparse_fit(train, data, config)
    else:
        formulas, fit, stats = _enumerate_and_fit(train, data, probe, config)
    seconds = stats.seconds
    start = time.perf_counter()
    conserved = torch.nonzero((fit.variance_ratio >= config.min_variance_ratio)
                              & ~fit.trivial).flatten()
    order = conserved[torch.argsort(fit.variance_ratio[conserved], descending=True)].tolist()
    # Different formulas can fit to the same law (k*q**2 + p**2 and q**2 + k*p**2): keep the
    # best-ratio one of each equivalence class under the fitted constants.
    survivors_formulas = [formulas[i] for i in order]
    fitted = fit.params[order].to(torch.float64)
    unique = merge_equivalent(survivors_formulas, probe, fitted.to(device),
                              config.survivor_tolerance, config.chunk_size)
    survivors = []
    for index in unique:
        formula = survivors_formulas[index]
        params = fitted[index, :formula.n_params].cpu().numpy()
        candidate = Candidate(formula, params, float(fit.variance_ratio[order[index]]),
                              float(fit.raw_ratio[order[index]]))
        quantity = formula_quantity(formula, torch.as_tensor(params))
        values = [quantity(torch.as_tensor(s)).numpy() for s in train.states]
        candidate.drift = drift_per_time(values, train.times)
        survivors.append(candidate)
    seconds["fit"] += time.perf_counter() - start
    return SearchResult(stats.per_size, stats.distinct_per_size, stats.n_enumerated,
                        len(formulas), survivors, seconds, stats.dropped, data, random,
                        random_reason, degrees, window, smoothing_excess, method, stats.path,
                        stats.family, stats.choice)


@dataclass
class _SearchStats:
    """What the formula-producing stage reports besides the fitted formulas."""

    per_size: dict[int, int]
    distinct_per_size: dict[int, int]
    n_enumerated: int
    dropped: dict[str, int]
    seconds: dict[str, float]
    path: list[tuple[int, float]] | None = None
    family: int = 1
    choice: FamilyChoice | None = None


def _enumerate_and_fit(train: Trajectories, data: FitData, probe: torch.Tensor,
                       config: SearchConfig) -> tuple[list[Expr], FitResult, _SearchStats]:
    """Every unit-correct formula up to ``search.max_size``, de-duplicated and fitted (those
    near the threshold refitted)."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    enumeration = enumerate_formulas(train.units, config.max_size, config.max_params, config.ops)
    seconds["enumerate"] = time.perf_counter() - start
    start = time.perf_counter()
    kept, dropped = fingerprint_duplicates(enumeration.formulas, probe,
                                           chunk_size=config.chunk_size)
    formulas = [enumeration.formulas[i] for i in kept]
    seconds["deduplicate"] = time.perf_counter() - start
    start = time.perf_counter()
    fit = fit_formulas(formulas, data, steps=config.fit_steps, lr=config.fit_lr,
                       chunk_size=config.chunk_size, noise_floor=config.noise_floor)
    near = torch.nonzero((fit.variance_ratio >= config.min_variance_ratio / 2)
                         & ~fit.trivial).flatten().tolist()
    if config.refine_steps and near:
        refined = fit_formulas([formulas[i] for i in near], data, steps=config.refine_steps,
                               lr=config.fit_lr, chunk_size=config.chunk_size,
                               noise_floor=config.noise_floor)
        fit.params[near, :refined.params.shape[1]] = refined.params
        fit.variance_ratio[near] = refined.variance_ratio
        fit.raw_ratio[near] = refined.raw_ratio
        fit.trivial[near] = refined.trivial
    seconds["fit"] = time.perf_counter() - start
    distinct = {size: sum(1 for f in formulas if f.size == size) for size in enumeration.per_size}
    return formulas, fit, _SearchStats(enumeration.per_size, distinct, len(enumeration.formulas),
                                       dropped, seconds)


def _sparse_fit(train: Trajectories, data: FitData, config: SearchConfig
                ) -> tuple[list[Expr], FitResult, _SearchStats]:
    """The sparse search's one law (see :mod:`noether_control.discovery.sparse`), scored like
    the enumerated formulas."""
    start = time.perf_counter()
    law = sparse_search(train.units, data, max_degree=config.sparse_degree,
                        tolerance=config.sparse_tolerance, family_rule=config.family_rule)
    params = torch.as_tensor(law.params, dtype=torch.float64).reshape(1, -1)
    ratio, raw_ratio, trivial = score_formulas([law.formula], data, params,
                                               noise_floor=config.noise_floor)
    fit = FitResult(params, ratio, raw_ratio, trivial, [])
    seconds = {"fit": time.perf_counter() - start}
    return [law.formula], fit, _SearchStats({}, {}, law.n_terms, {}, seconds, law.path,
                                            law.family, law.choice)


def constant_uncertainty(candidates: list[Candidate], data: FitData, config: SearchConfig
                         ) -> None:
    """Set each parametrised candidate's ``fit_stderr`` ``(n_params,)`` and ``fit_interval``
    ``(n_params, 2)``: the 95% delete-a-group jackknife of its conservation-fitted constants
    (see :attr:`SearchConfig.uncertainty` and
    :func:`~noether_control.discovery.fitting.jackknife_intervals`)."""
    parametrised = [c for c in candidates if c.formula.n_params > 0]
    if not config.uncertainty or not parametrised:
        return
    intervals = jackknife_intervals(
        [c.formula for c in parametrised], data, [c.conservation_params for c in parametrised],
        block=config.uncertainty_block, steps=config.refine_steps or config.fit_steps,
        lr=config.fit_lr, chunk_size=config.chunk_size)
    if intervals is None:
        print(f"discover: no uncertainty for the constants: {len(data.segments)} training "
              f"samples make one block of search.uncertainty_block={config.uncertainty_block}; "
              f"a smaller block gives some")
        return
    for candidate, (stderr, interval) in zip(parametrised, intervals, strict=True):
        candidate.fit_stderr = stderr
        candidate.fit_interval = interval


@dataclass
class ScoreResult:
    """The usefulness stage's outcome."""

    ranked: list[Candidate]
    rmse: dict[str, float | None]
    chosen_quantity: Any
    predictions: dict[str, np.ndarray]
    seconds: float


SCORING_DTYPE = torch.float32
"""The usefulness stage's models, batches and formula constants."""


@dataclass
class _Tailoring:
    """The pretrained, frozen MLP and the batches every candidate is tailored and tested on."""

    mlp: MLP
    train_batch: Batch
    test_batch: Batch
    config: ScoringConfig

    def constants(self, params: np.ndarray) -> torch.Tensor:
        """A formula's constants ``(n_params,)`` as the models' tensors."""
        return torch.as_tensor(params, dtype=SCORING_DTYPE, device=self.train_batch.states.device)

    def sweep(self, quantity: Any) -> tuple[float, float]:
        """``(error, lr)``: the best inner learning rate of tailoring with ``quantity``."""
        return sweep_learning_rates(self.mlp, quantity, pooled_scale(quantity, self.train_batch),
                                    self.train_batch, self.config.lr_sweep, self.config.tailored,
                                    self.config.inner_optimizer)

    def test_rollout(self, params: dict[str, torch.Tensor], quantity: Any, lr: float
                     ) -> torch.Tensor:
        """Rollouts of the test batch by the MLP with ``params``, tailored with ``quantity``."""
        scale = pooled_scale(quantity, self.train_batch)
        return tailored_rollout(self.mlp, params, quantity, scale, self.test_batch, lr,
                                self.config.tailored, optimizer=self.config.inner_optimizer
                                ).detach()


def _scoring_batches(train: Trajectories, test: Trajectories, config: ScoringConfig,
                     device: torch.device) -> tuple[Trajectories, Batch, Batch]:
    """The smoothed training trajectories, their tailoring examples and the test batch."""
    # Rollouts start from, and are compared with, the smoothed training states: from a noisy
    # first state every model drifts onto another energy level, and the outer loss then teaches
    # it to damp the dynamics.
    smoothed = train.smoothed(train.checked_smoothing(config.smooth_window)[0])
    train_batch = Batch.from_trajectories(smoothed.pieces(config.example_length), None,
                                          SCORING_DTYPE, device)
    test_batch = Batch.from_trajectories(test, test.clean, SCORING_DTYPE, device)
    return smoothed, train_batch, test_batch


def _initial_models(dim: int, config: ScoringConfig, device: torch.device,
                    generator: torch.Generator) -> tuple[MLP, HNN | None]:
    """The MLP and (for an even state dimension ``dim``, if enabled) the HNN, initialised from
    ``generator`` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        mlp = MLP([dim, config.hidden, config.hidden, dim]).to(device)
        hnn = HNN(dim, config.hidden).to(device) if config.hnn and dim % 2 == 0 else None
    return mlp, hnn


def _baselines(tailoring: _Tailoring, hnn: HNN | None, transitions: list[torch.Tensor]
               ) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The RMSE table with the plain MLP's and the HNN's (trained here on ``transitions``)
    entries, and the plain MLP's test predictions."""
    config, test_batch = tailoring.config, tailoring.test_batch
    rmse_table: dict[str, float | None] = {"mlp": None, "noether": None, "true_energy": None,
                                           "hnn": None}
    with torch.no_grad():
        plain = tailored_rollout(tailoring.mlp, None, None, None, test_batch, 0.0,
                                 config.tailored)
    rmse_table["mlp"] = rmse(test_batch, plain)
    if hnn is not None:
        train_one_step(hnn, *transitions, config.pretrain_steps, config.pretrain_lr)
        predicted = rollout(hnn, test_batch.states[:, 0], test_batch.steps).detach()
        rmse_table["hnn"] = rmse(test_batch, predicted)
    return rmse_table, {"mlp": plain.cpu().numpy()}


def _test_candidates(tailoring: _Tailoring, scored: list[Candidate]) -> None:
    """Each candidate's ``test_rmse``: the first ``top_k`` meta-tailored (their constants
    replaced by the meta-learned ones, the fitted ones kept in ``fit_params``), the others
    tailoring the pretrained MLP as fitted."""
    config, test_batch = tailoring.config, tailoring.test_batch
    for candidate in scored[:config.top_k]:
        formula = candidate.formula
        candidate.meta = meta_tailor(
            tailoring.mlp, lambda constants, f=formula: formula_quantity(f, constants),
            tailoring.constants(candidate.params), tailoring.train_batch, candidate.lr, config)
        quantity = formula_quantity(formula, candidate.meta.formula_params)
        candidate.test_rmse = rmse(test_batch, tailoring.test_rollout(
            candidate.meta.params, quantity, candidate.lr))
        candidate.fit_params = candidate.params
        candidate.params = candidate.meta.formula_params.cpu().numpy().astype(np.float64)
    for candidate in scored[config.top_k:]:
        quantity = formula_quantity(candidate.formula, tailoring.constants(candidate.params))
        candidate.test_rmse = rmse(test_batch, tailoring.test_rollout(
            dict(tailoring.mlp.named_parameters()), quantity, candidate.lr))


def _oracle_rmse(tailoring: _Tailoring, train: Trajectories) -> float:
    """Test RMSE of the MLP meta-tailored with the known energy ``train.energy``."""
    energy = sympy_quantity(train.energy, train.names)
    _, lr = tailoring.sweep(energy)
    oracle = meta_tailor(tailoring.mlp, lambda _: energy, None, tailoring.train_batch, lr,
                         tailoring.config)
    return rmse(tailoring.test_batch, tailoring.test_rollout(oracle.params, energy, lr))


def score(train: Trajectories, test: Trajectories, survivors: list[Candidate],
          config: ScoringConfig, device: torch.device, generator: torch.Generator
          ) -> ScoreResult:
    """Rank survivors by usefulness and measure long-horizon RMSE of every model on test."""
    start = time.perf_counter()
    smoothed, train_batch, test_batch = _scoring_batches(train, test, config, device)
    mlp, hnn = _initial_models(len(train.names), config, device, generator)
    transitions = [torch.as_tensor(a, dtype=SCORING_DTYPE, device=device)
                   for a in smoothed.transitions()]
    train_one_step(mlp, *transitions, config.pretrain_steps, config.pretrain_lr)
    for parameter in mlp.parameters():
        parameter.requires_grad_(False)
    tailoring = _Tailoring(mlp, train_batch, test_batch, config)
    rmse_table, predictions = _baselines(tailoring, hnn, transitions)
    scored = survivors[:config.max_scored]
    for candidate in scored:
        quantity = formula_quantity(candidate.formula, tailoring.constants(candidate.params))
        candidate.sweep_error, candidate.lr = tailoring.sweep(quantity)
    scored.sort(key=lambda c: c.sweep_error)
    _test_candidates(tailoring, scored)
    # Meta-tailored candidates, best-conserved first: it keeps first place unless another is
    # significantly more useful.
    conserved_first = sorted(scored[:config.top_k], key=lambda c: -c.variance_ratio)
    meta_ranked = [conserved_first[i] for i in usefulness_order(
        [c.meta.example_losses for c in conserved_first], config.choice_confidence)]
    ranked = [*meta_ranked, *scored[config.top_k:], *survivors[config.max_scored:]]
    chosen_quantity = None
    if meta_ranked:
        chosen = meta_ranked[0]
        chosen_quantity = formula_quantity(chosen.formula, chosen.meta.formula_params)
        rmse_table["noether"] = chosen.test_rmse
        predictions["noether"] = tailoring.test_rollout(chosen.meta.params, chosen_quantity,
                                                        chosen.lr).cpu().numpy()
    if train.energy is not None:
        rmse_table["true_energy"] = _oracle_rmse(tailoring, train)
    return ScoreResult(ranked, rmse_table, chosen_quantity, predictions,
                       time.perf_counter() - start)


def formula_record(candidate: Candidate, names: list[str], train: Trajectories,
                   drift_significance: float) -> dict[str, Any]:
    """The JSON entry of one formula: sympy ``expr`` with named constants and their units."""
    formula = candidate.formula
    constants = param_names(formula.n_params, names)
    units = param_units(formula, train.units)
    unit = infer_unit(formula, train.units)
    slope, significance = candidate.drift
    return {
        "expr": str(to_sympy(formula, names)),
        "params": {name: float(v) for name, v in zip(constants, candidate.params, strict=True)},
        "param_units": {name: str(u) for name, u in zip(constants, units, strict=True)},
        "params_before_meta": None if candidate.fit_params is None else {
            name: float(v) for name, v in zip(constants, candidate.fit_params, strict=True)},
        "fit_stderr": None if candidate.fit_stderr is None else {
            name: float(v) for name, v in zip(constants, candidate.fit_stderr, strict=True)},
        "fit_interval": None if candidate.fit_interval is None else {
            name: [float(low), float(high)]
            for name, (low, high) in zip(constants, candidate.fit_interval, strict=True)},
        "unit": "free" if unit is None else str(unit),
        "fitted": str(to_sympy(formula, names, candidate.params.tolist())),
        "size": formula.size,
        "variance_ratio": candidate.variance_ratio,
        "variance_ratio_raw": candidate.raw_ratio,
        "drift_per_time": slope,
        "approximately_conserved": bool(significance > drift_significance),
        "sweep_error": None if math.isinf(candidate.sweep_error) else candidate.sweep_error,
        "inner_lr": candidate.lr or None,
        "meta_train_loss": None if candidate.meta is None else candidate.meta.train_loss,
        # A formula can blow a rollout up (p**64 on raw states): no finite error, JSON null.
        "rmse": candidate.test_rmse if candidate.test_rmse is not None
        and math.isfinite(candidate.test_rmse) else None,
    }


def family_note(family: int, choice: FamilyChoice | None, rule: str, names: list[str]) -> str:
    """The console note on a conserved family of dimension ``family`` above 1 and on how
    ``search.family_rule`` (``rule``) chose its member (``choice``: ``None`` for ``none``)."""
    note = (f"note: conservation leaves a {family}-dimensional family of laws ({family} "
            f"independent combinations of the candidate terms are conserved, e.g. the energies "
            f"of the normal modes of coupled linear oscillators)")
    if choice is None:
        return f"{note}; search.family_rule={rule}: the law is the member the fit returns"
    velocities = ", ".join(names[i] for i in choice.velocities) or "none"
    if not choice.applied:
        return (f"{note}; search.family_rule={rule} cannot apply: the units give fewer than two "
                f"velocity columns (a column whose unit is another's per second; here: "
                f"{velocities}), so the law is the member the fit returns")
    dropped = ", ".join(str(to_sympy(term, names)) for term in choice.dropped)
    remaining = ("one law" if choice.family == 1
                 else f"a {choice.family}-dimensional family, of which the law is one member")
    return (f"{note}; search.family_rule={rule} chose the law: a diagonal kinetic energy, the "
            f"terms with two different velocities ({dropped}; velocities by their units: "
            f"{velocities}) dropped and the fit redone, leaving {remaining}")


def family_record(result: SearchResult, rule: str, names: list[str]) -> dict[str, Any] | None:
    """The ``results.json`` entry on how the law was chosen from a conserved family of dimension
    above 1 (``None`` without one)."""
    if result.method != "sparse" or result.sparse_family == 1:
        return None
    choice = result.sparse_choice
    if choice is None:
        return {"rule": rule, "applied": False, "family_after": result.sparse_family,
                "velocities": None, "dropped_terms": [], "eigenvalues_after": None}
    return {"rule": rule, "applied": choice.applied, "family_after": choice.family,
            "velocities": [names[i] for i in choice.velocities],
            "dropped_terms": [str(to_sympy(term, names)) for term in choice.dropped],
            "eigenvalues_after": choice.eigenvalues}


def fit_text(record: dict[str, Any], name: str) -> str:
    """`` (fit 1.065 ± 0.043)``: constant ``name``'s conservation fit and its standard error,
    when it has one."""
    if record["fit_stderr"] is None:
        return ""
    fitted = (record["params_before_meta"] or record["params"])[name]
    return f" (fit {fitted:.4g} ± {record['fit_stderr'][name]:.2g})"


def trend_text(record: dict[str, Any], train: Trajectories) -> str:
    """The chosen law's trend, e.g. ``trend of formula 1: -0.0123 [rad^2/s^2] per time unit,
    -0.55 over a training trajectory (45 time units; dissipating)``."""
    duration = float(np.mean([times[-1] - times[0] for times in train.times]))
    slope = record["drift_per_time"]
    unit = "" if record["unit"] in ("1", "free") else f" [{record['unit']}]"
    kind = "dissipating" if record["approximately_conserved"] else "within its noise"
    return (f"\ntrend of formula 1: {slope:.4g}{unit} per time unit, {slope * duration:.4g} over "
            f"a training trajectory ({duration:.4g} time units; {kind})")


def plot_quantity(path: Path, test: Trajectories, quantity: Any, label: str,
                  predictions: dict[str, np.ndarray]) -> None:
    """Plot the chosen quantity along the test trajectories (observed and predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    with torch.no_grad():
        for states, times in zip(test.states, test.times, strict=True):
            values = quantity(torch.as_tensor(states, dtype=torch.float32)).numpy()
            axes[0].plot(times, values, lw=0.8)
        axes[0].set(title=f"{label} along observed test trajectories", xlabel="time",
                    ylabel=label)
        for name, style in (("mlp", "--"), ("noether", "-")):
            if name not in predictions:
                continue
            for index in range(min(5, len(test))):
                values = quantity(torch.as_tensor(predictions[name][index])).numpy()
                length = len(test.times[index])
                axes[1].plot(test.times[index], values[:length], style, lw=0.9,
                             color=f"C{index}", label=name if index == 0 else None)
        axes[1].set(title="along predicted rollouts (5 test trajectories)", xlabel="time")
        axes[1].legend()
    figure.tight_layout()
    from noether_control.runtime import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)


def run(cfg: DictConfig) -> None:
    """The ``discover`` command: see the module docstring."""
    config = to_dataclass(DiscoverConfig, cfg)
    config.validate()
    torch.set_num_threads(config.threads)
    discover(config, run_dir())


def changing_data(config: DiscoverConfig, rng: np.random.Generator
                  ) -> tuple[Trajectories, list[str]]:
    """The config's trajectories and their constant columns.

    Raises:
        ValueError: when every state column is constant.
    """
    trajectories = load_data(config, rng)
    constant = constant_columns(trajectories)
    if len(constant) == len(trajectories.names):
        # every formula of constants is constant: the search would end with 0 candidates
        raise ValueError(f"data: every state column ({', '.join(constant)}) has one value in "
                         f"all {len(trajectories)} trajectories; expected states that change "
                         "over time (is data.columns right?): a conserved quantity is told "
                         "apart only from quantities that vary")
    return trajectories, constant


def print_search(result: SearchResult, config: SearchConfig, trajectories: Trajectories,
                 train: Trajectories, test: Trajectories, constant: list[str]) -> None:
    """The console summary of the data and the search."""
    names = trajectories.names
    columns = ", ".join(f"{n} [{u}]" for n, u in zip(names, trajectories.units, strict=True))
    print(f"discover: {len(trajectories)} trajectories ({len(train)} train / {len(test)} test), "
          f"columns {columns}")
    smoothing = (f"states smoothed over {result.smooth_window} samples"
                 if result.smooth_window > 3 else "raw states")
    trended = int(np.count_nonzero(result.trend_degrees))
    print(f"random-state null: {result.random} ({result.random_reason}); fitted on {smoothing} "
          f"(smoothing removes {result.smoothing_excess:.2f}x the noise variance at "
          f"search.smooth_window={config.smooth_window}); trend of degree "
          f"{config.trend_degree} in time removed along {trended} of {len(train)} "
          f"training trajectories (those spanning >= {config.trend_min_cycles:g} "
          f"oscillations)")
    seconds = sum(result.seconds.values())
    if result.sparse_path is not None:
        kept = len(result.sparse_path) - max(
            i for i, (_, value) in enumerate(result.sparse_path)
            if value <= config.sparse_tolerance * min(v for _, v in result.sparse_path))
        print(f"sparse search over {result.n_enumerated} unit-correct candidate terms: kept "
              f"{kept}; {len(result.survivors)} conserved (ratio >= "
              f"{config.min_variance_ratio:g}) in {seconds:.1f} s; "
              f"Var_within/Var_random by terms kept: " + ", ".join(
                  f"{n}: {value:.3g}" for n, value in result.sparse_path[-12:][::-1]))
        if result.sparse_family > 1:
            print(family_note(result.sparse_family, result.sparse_choice, config.family_rule,
                              names))
    else:
        print(f"enumerated {result.n_enumerated} unit-correct formulas (per size "
              f"{result.per_size}); {result.n_candidates} distinct candidates fitted (per size "
              f"{result.distinct_per_size}); "
              f"{len(result.survivors)} conserved (ratio >= {config.min_variance_ratio:g})"
              f" in {seconds:.1f} s ({candidates_per_second(result):.0f} candidates/s)")
    if constant:
        print(f"note: column(s) {', '.join(constant)} never change; formulas of them alone are "
              "constant and dropped as trivial")
    if result.n_candidates == 0:
        print("no candidates: every formula was constant or equal to a simpler one on these "
              "states (see 'dropped' in results.json)")


def candidates_per_second(result: SearchResult) -> float:
    """The search's speed: distinct formulas fitted per second of its stages."""
    return result.n_candidates / max(sum(result.seconds.values()), 1e-9)


def print_formulas(records: list[dict[str, Any]], train: Trajectories,
                   rmse_table: dict[str, float | None]) -> None:
    """The console list of the reported formulas, the chosen one's trend and the RMSE table."""
    print("\ntop formulas (best first):")
    for rank, record in enumerate(records, start=1):
        constants = ", ".join(f"{k}={v:.4g} [{record['param_units'][k]}]{fit_text(record, k)}"
                              for k, v in record["params"].items())
        approx = " (approximately: drift " \
                 f"{record['drift_per_time']:.3g}/time)" if record["approximately_conserved"] \
            else ""
        rmse_text = "" if record["rmse"] is None else f", test RMSE {record['rmse']:.4f}"
        print(f"  {rank:2d}. {record['expr']:<32} {constants}  ratio "
              f"{record['variance_ratio']:.1f}{rmse_text}{approx}")
    if records:
        print(trend_text(records[0], train))
    if rmse_table:
        print("\nlong-horizon test RMSE:")
        for name, value in rmse_table.items():
            print(f"  {name:<12} {'n/a' if value is None else f'{value:.4f}'}")


def results_record(config: DiscoverConfig, trajectories: Trajectories, result: SearchResult,
                   records: list[dict[str, Any]], scoring: ScoreResult | None,
                   uncertainty_seconds: float) -> dict[str, Any]:
    """The ``results.json`` content (see ``docs/discovery.md``)."""
    names = trajectories.names
    return {
        "n_candidates": result.n_candidates,
        "n_enumerated": result.n_enumerated,
        "candidates_per_size": {str(k): v for k, v in result.per_size.items()},
        "distinct_per_size": {str(k): v for k, v in result.distinct_per_size.items()},
        "n_conserved": len(result.survivors),
        "method": result.method,
        "sparse_path": result.sparse_path,
        "sparse_family": result.sparse_family if result.method == "sparse" else None,
        "sparse_family_choice": family_record(result, config.search.family_rule, names),
        "random": result.random,
        "random_reason": result.random_reason,
        "smooth_window": result.smooth_window,
        "trend_degrees": {str(d): int(np.count_nonzero(result.trend_degrees == d))
                          for d in np.unique(result.trend_degrees)},
        "dropped": result.dropped,
        "formulas": records,
        "rmse": scoring.rmse if scoring else {},
        "seconds": {**result.seconds, **({"score": scoring.seconds} if scoring else {}),
                    "uncertainty": uncertainty_seconds},
        "candidates_per_second": candidates_per_second(result),
        "columns": {n: str(u) for n, u in zip(names, trajectories.units, strict=True)},
        "config": asdict(config),
    }


def discover(config: DiscoverConfig, output: Path) -> dict[str, Any]:
    """Run the whole pipeline, print the summary, write ``results.json`` (and the plot) under
    ``output``; return the results dictionary."""
    config.validate()
    rng = seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    trajectories, constant = changing_data(config, rng)
    train, test = trajectories.split(config.test_fraction, rng)
    result = search(train, config.search, rng, device)
    print_search(result, config.search, trajectories, train, test, constant)
    scoring = None
    ranked = result.survivors
    if config.score and result.survivors:
        scoring = score(train, test, result.survivors, config.scoring, device, generator)
        ranked = scoring.ranked
    start = time.perf_counter()
    constant_uncertainty(ranked[:config.top_formulas], result.fit_data, config.search)
    uncertainty_seconds = time.perf_counter() - start
    records = [formula_record(c, trajectories.names, train, config.search.drift_significance)
               for c in ranked[:config.top_formulas]]
    print_formulas(records, train, scoring.rmse if scoring else {})
    results = results_record(config, trajectories, result, records, scoring, uncertainty_seconds)
    write_json(output / "results.json", results)
    if config.plot and scoring is not None and scoring.chosen_quantity is not None:
        plot_quantity(output / "quantity.png", test, scoring.chosen_quantity, records[0]["expr"],
                      scoring.predictions)
    print(f"\nwrote {output / 'results.json'}")
    return results
