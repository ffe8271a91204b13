"""Batched trajectory optimisers ("planners") for model-predictive control.

Every planner solves ``E`` independent problems at once (one per parallel episode): find an
action sequence ``(H, A)`` inside the box ``[low, high]`` that maximises an objective.

- The objective (:data:`Objective`) maps candidates float ``(E, N, H, A)`` to returns float
  ``(E, N)``, higher is better, and is called once per planner iteration with every candidate of
  that iteration in one batch. Candidates are clipped to the bounds before the call, so it never
  sees an action outside them. A NaN return (a diverged rollout) ranks below every other return.
- ``planner.plan(objective, initial_mean, generator)`` takes the warm start ``initial_mean``
  float ``(E, H, A)`` and returns a plan float ``(E, H, A)`` inside the bounds, on the warm
  start's device and dtype. Planners keep no episode state: the caller shifts the previous plan
  into the next warm start itself.
- All randomness comes from the ``torch.Generator`` given to ``plan`` (on the warm start's
  device), so a seeded generator makes a plan reproducible.

The sampling planners (:class:`RandomShooting`, :class:`CEM`, :class:`ICEM`, :class:`MPPI`) run
the objective under ``torch.no_grad``; :class:`GradientPlanner` differentiates through it.

Each planner has a typed config dataclass mirrored by ``conf/planner/<kind>.yaml``; build one
with :func:`make_planner`. Stds and noise are in units of the half-range of the action box, so
the defaults suit any box. Default sizes aim at real-time control on a CPU: planning through the
true pendulum dynamics (:mod:`noether_control.agents.oracle`) for two episodes on one thread
takes about 2 ms per control step with MPPI, 4 ms with random shooting, 8 ms with iCEM and 11 ms
with CEM, and every default planner swings ``Pendulum-v1`` up from hanging down (returns of -380
to -400 per 200-step episode; random shooting -490 to -500). A horizon of 15 steps (0.75 s)
matters more than the sample counts: at 12 steps MPPI with 500 samples never gets up.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from noether_control.runtime import kind_dataclass

Objective = Callable[[Tensor], Tensor]
"""``objective(actions float (E, N, H, A)) -> returns float (E, N)``: ``E`` independent problems
(parallel episodes), ``N`` candidate action sequences each, horizon ``H``, action dim ``A``.
Called once per planner iteration with every candidate of that iteration (one batch)."""


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"planner.{name}: expected an int >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not _is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"planner.{name}: expected a finite number > 0, got {value!r}")


def _check_finite_at_least(name: str, value: Any, minimum: int) -> None:
    if not _is_number(value) or not minimum <= value < math.inf:
        raise ValueError(f"planner.{name}: expected a finite number >= {minimum}, got {value!r}")


def _check_interval(name: str, value: Any, low: float, high: float, *, closed: bool) -> None:
    """``value`` in ``[low, high]`` (``[low, high)`` unless ``closed``), else ValueError."""
    inside = _is_number(value) and low <= value and (value <= high if closed else value < high)
    if not inside:
        interval = f"[{low}, {high}]" if closed else f"[{low}, {high})"
        raise ValueError(f"planner.{name}: expected a number in {interval}, got {value!r}")


def _check_elites(elites: Any, config: Any) -> None:
    """``1 <= elites <= samples // samples_per_elite`` of ``config``."""
    floor = config.samples_per_elite
    limit = config.samples // floor
    if not _is_int(elites) or not 1 <= elites <= limit:
        bound = "samples" if floor == 1 else f"samples / {floor}"
        raise ValueError(
            f"planner.elites: expected 1 <= elites <= {bound} ({limit}), got {elites!r}"
        )


_SETTING_RULES: dict[str, Callable[[str, Any, Any], None]] = {
    # rule(setting, value, config), by setting name: a name means the same in every planner
    "horizon": lambda name, value, _: _check_int(name, value, 1),
    "iterations": lambda name, value, _: _check_int(name, value, 1),
    "samples": lambda name, value, config: _check_int(name, value, config.samples_per_elite),
    "elites": lambda _, value, config: _check_elites(value, config),
    "init_std": lambda name, value, _: _check_positive(name, value),
    "alpha": lambda name, value, _: _check_interval(name, value, 0.0, 1.0, closed=False),
    "population_decay": lambda name, value, _: _check_finite_at_least(name, value, 1),
    "keep_elites": lambda name, value, _: _check_interval(name, value, 0.0, 1.0, closed=True),
    "noise_beta": lambda name, value, _: _check_finite_at_least(name, value, 0),
    "noise_std": lambda name, value, _: _check_positive(name, value),
    "temperature": lambda name, value, _: _check_positive(name, value),
    "lr": lambda name, value, _: _check_positive(name, value),
}


@dataclass
class _PlannerConfig:
    """What every planner config holds: its ``kind`` and the horizon; and the checks of all.

    Each planner's config redeclares ``kind`` with its own name as the default (the name
    ``conf/planner/<kind>.yaml`` and :data:`PLANNER_CONFIGS` use) and adds its own settings, or
    redeclares a shared one with its own default. Every setting is checked, in field order, by
    the rule of its name in :data:`_SETTING_RULES`.
    """

    kind: str
    #: planning horizon H in steps (>= 1)
    horizon: int = 15

    #: iCEM's population never shrinks below 2 candidates per elite, every other planner's
    #: below 1: ``elites <= samples / samples_per_elite``, so also ``samples >= samples_per_elite``
    samples_per_elite: ClassVar[int] = 1

    def __post_init__(self) -> None:
        own_kind = type(self).kind  # a dataclass field's default is its class attribute
        if self.kind != own_kind:
            raise ValueError(
                f"planner.kind: expected {own_kind!r} for {type(self).__name__}, got {self.kind!r}"
            )
        for setting in fields(self)[1:]:  # after kind, the first field
            _SETTING_RULES[setting.name](setting.name, getattr(self, setting.name), self)


@dataclass
class _IterativeConfig(_PlannerConfig):
    """A planner that calls the objective ``iterations`` times on sampled candidates."""

    #: objective calls (>= 1)
    iterations: int = 1
    #: candidates N per iteration (>= 1)
    samples: int = 1


@dataclass
class _GaussianConfig(_IterativeConfig):
    """A cross-entropy planner: a diagonal Gaussian refit to the ``elites`` best candidates.

    The mean and std move towards the elites' with momentum ``alpha``:
    ``new = alpha * old + (1 - alpha) * elite`` (PETS's update).
    """

    #: best candidates that refit the Gaussian, 1 <= elites <= samples
    elites: int = 50
    #: initial std, in half-ranges of the action box (> 0)
    init_std: float = 0.5
    #: weight of the previous mean/std in each update, in [0, 1); PETS uses 0.1
    alpha: float = 0.1


@dataclass
class RandomShootingConfig(_PlannerConfig):
    """Random shooting: the best of ``samples`` uniform sequences (one objective call).

    Nagabandi et al. 2018, "Neural network dynamics for model-based deep reinforcement learning
    with model-free fine-tuning". The warm start is one of the candidates, so a good previous
    plan is never lost.
    """

    kind: str = "random"
    #: candidates N per problem, the warm start included (>= 1)
    samples: int = 1000


@dataclass
class CEMConfig(_GaussianConfig):
    """Cross-entropy method with a diagonal Gaussian per problem, step and action dim.

    Rubinstein 1999, "The cross-entropy method for combinatorial and continuous optimization";
    as used for planning by PETS (Chua et al. 2018) and PlaNet (Hafner et al. 2019). Each
    iteration samples ``samples`` sequences around the mean, keeps the ``elites`` best and
    refits the Gaussian to them.
    """

    kind: str = "cem"
    #: objective calls (>= 1)
    iterations: int = 5
    #: candidates N per iteration (>= 1)
    samples: int = 500


@dataclass
class ICEMConfig(_GaussianConfig):
    """Improved CEM: coloured noise, a shrinking population and elites carried over.

    Pinneri et al. 2020, "Sample-efficient cross-entropy method for real-time planning" (CoRL).
    Iteration ``i`` samples ``N_i = max(2 elites, floor(N_{i-1} / population_decay))``
    sequences (``N_0 = samples``) with noise whose power spectrum along the horizon falls as
    ``f^-noise_beta``, adds the best ``round(keep_elites * elites)`` elites of iteration ``i-1``
    and, in the last iteration, the mean, so an objective call sees ``N_i`` plus those. The
    plan is the best sequence evaluated (what the paper executes). Carrying elites over from the
    previous control step, as the paper also does, is left to the caller's warm start: the
    planner keeps no episode state.
    """

    kind: str = "icem"
    #: objective calls (>= 1); the paper uses 3-5
    iterations: int = 4
    #: sampled candidates N_0 of the first iteration (>= 2 * elites)
    samples: int = 300
    #: best candidates that refit the Gaussian, 1 <= elites <= samples / 2
    elites: int = 30
    samples_per_elite: ClassVar[int] = 2
    #: population shrink factor per iteration (>= 1; 1 keeps it constant)
    population_decay: float = 1.25
    #: fraction of the previous iteration's elites evaluated again, in [0, 1]
    keep_elites: float = 0.3
    #: exponent beta of the noise spectrum f^-beta along the horizon (>= 0; 0 white, 2 brown)
    noise_beta: float = 2.0


@dataclass
class MPPIConfig(_IterativeConfig):
    """Model-predictive path integral control: a softmax-weighted average of noisy sequences.

    Williams et al. 2017, "Information theoretic MPC for model-based reinforcement learning"
    (ICRA). Each iteration samples ``mean + noise`` (clipped), weights candidate ``n`` by
    ``softmax((R_n - max R) / temperature)`` and sets the mean to the weighted average of the
    clipped candidates. The paper's control-cost term is left out, as in PDDM (Nagabandi et al.
    2019): the reward already prices the actions. One iteration per control step suffices
    because the warm start carries the optimisation over to the next step.
    """

    kind: str = "mppi"
    #: objective calls (>= 1)
    iterations: int = 1
    #: candidates N per iteration (>= 1)
    samples: int = 500
    #: std of the Gaussian perturbations, in half-ranges of the action box (> 0)
    noise_std: float = 0.5
    #: lambda, in reward units of the returns (rewards summed over the horizon) (> 0); smaller
    #: is greedier, larger averages more candidates
    temperature: float = 1.0
    #: colour of the perturbations along the horizon, power spectrum ``f^-noise_beta`` (>= 0):
    #: 0 white (Williams et al.), 1 pink, 2 brown (iCEM's: smoother, longer pushes)
    noise_beta: float = 0.0


@dataclass
class GradientConfig(_IterativeConfig):
    """Gradient ascent with Adam through a differentiable objective, from several starts.

    As in Srinivas et al. 2018 ("Universal planning networks") and Henaff et al. 2017 ("Model-based
    planning with discrete and continuous actions"); several starts guard against local optima
    (cf. Bharadhwaj et al. 2020, "Model-predictive control via cross-entropy and gradient-based
    optimization"). Start 0 is the warm start, the others the warm start plus Gaussian noise;
    every iteration evaluates all starts (one objective call), takes an Adam step on the sum of
    their returns and projects them back into the box. The plan is the best sequence evaluated.
    """

    kind: str = "gradient"
    #: objective calls (>= 1); the last one only scores, so iterations - 1 Adam steps
    iterations: int = 20
    #: parallel starts N (>= 1), the warm start included
    samples: int = 16
    #: Adam step size, in action units (> 0): Adam's steps are about lr per coordinate
    lr: float = 0.1
    #: std of the starts' perturbations, in half-ranges of the action box (> 0)
    noise_std: float = 0.5


PlannerConfig = RandomShootingConfig | CEMConfig | ICEMConfig | MPPIConfig | GradientConfig

PLANNER_CONFIGS: dict[str, type[PlannerConfig]] = {
    "random": RandomShootingConfig,
    "cem": CEMConfig,
    "icem": ICEMConfig,
    "mppi": MPPIConfig,
    "gradient": GradientConfig,
}


@runtime_checkable
class Planner(Protocol):
    """A batched trajectory optimiser (see the module docstring)."""

    horizon: int

    def plan(
        self, objective: Objective, initial_mean: Tensor, generator: torch.Generator
    ) -> Tensor:
        """``initial_mean`` float ``(E, H, A)`` (the warm start, inside the bounds) -> plan
        float ``(E, H, A)`` inside the bounds."""
        ...


def _check_bounds(low: Tensor | np.ndarray, high: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """The action bounds as float64 CPU tensors ``(A,)``: 1-D, same shape, finite, low < high."""
    low_t = torch.as_tensor(low).detach().to("cpu", torch.float64)
    high_t = torch.as_tensor(high).detach().to("cpu", torch.float64)
    if low_t.ndim != 1 or low_t.shape != high_t.shape or low_t.numel() == 0:
        raise ValueError(
            f"bounds: expected low and high of the same shape (A,), "
            f"got {tuple(low_t.shape)} and {tuple(high_t.shape)}"
        )
    if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()):
        raise ValueError(f"bounds: expected finite values, got {low_t.tolist()}, {high_t.tolist()}")
    if not (low_t < high_t).all():
        raise ValueError(f"bounds: expected low < high, got {low_t.tolist()}, {high_t.tolist()}")
    return low_t, high_t


def _take(candidates: Tensor, index: Tensor) -> Tensor:
    """``candidates[e, index[e, k]]``: ``(E, N, H, A)`` and ``(E, K)`` -> ``(E, K, H, A)``."""
    return torch.take_along_dim(candidates, index[:, :, None, None], dim=1)


def _scores(returns: Tensor, candidates: Tensor) -> Tensor:
    """``returns`` ``(E, N)`` detached in the dtype of ``candidates``, NaN replaced by ``-inf``."""
    if not isinstance(returns, Tensor) or returns.shape != candidates.shape[:2]:
        got = tuple(returns.shape) if isinstance(returns, Tensor) else type(returns).__name__
        raise ValueError(
            f"objective: expected returns of shape {tuple(candidates.shape[:2])}, got {got}"
        )
    returns = returns.detach().to(candidates.dtype)
    # topk and argmax rank NaN above everything: a diverged rollout would become the plan
    return torch.where(torch.isnan(returns), -math.inf, returns)


@dataclass
class _Problem:
    """One ``plan`` call: the objective, the clipped warm start ``mean`` float ``(E, H, A)``,
    the bounds ``low``, ``high`` ``(A,)`` on its device and dtype, and the generator."""

    objective: Objective
    mean: Tensor
    low: Tensor
    high: Tensor
    generator: torch.Generator

    def scale(self, std: float) -> Tensor:
        """``std`` half-ranges of the action box, in action units ``(A,)``."""
        return std * (self.high - self.low) / 2

    def normal(self, samples: int) -> Tensor:
        """Standard normal noise float ``(E, samples, H, A)``."""
        return self._draw(torch.randn, samples)

    def colored(self, beta: float, samples: int) -> Tensor:
        """Gaussian noise float ``(E, samples, H, A)`` coloured ``f^-beta`` along the horizon
        (:func:`colored_noise`; ``beta = 0`` draws the same white noise as :meth:`normal`)."""
        if beta == 0:
            return self.normal(samples)
        E, H, A = self.mean.shape
        return colored_noise(beta, (E, samples, A, H), self.generator, device=self.mean.device,
                             dtype=self.mean.dtype).transpose(-1, -2)

    def uniform(self, samples: int) -> Tensor:
        """Sequences drawn uniformly from the box, float ``(E, samples, H, A)``."""
        unit = self._draw(torch.rand, samples)
        # low + (high - low) * u can round past high; the clamp keeps the bound exact
        return self.clip(self.low + (self.high - self.low) * unit)

    def _draw(self, sampler: Callable[..., Tensor], samples: int) -> Tensor:
        E, H, A = self.mean.shape
        return sampler((E, samples, H, A), generator=self.generator, device=self.mean.device,
                       dtype=self.mean.dtype)

    def clip(self, actions: Tensor) -> Tensor:
        """``actions`` ``(..., A)`` clipped to the box."""
        return actions.clamp(self.low, self.high)

    def scores(self, candidates: Tensor) -> Tensor:
        """The returns ``(E, N)`` of ``candidates`` ``(E, N, H, A)``: detached, NaN as ``-inf``."""
        return _scores(self.objective(candidates), candidates)


class _BestSoFar:
    """The best evaluated sequence of each problem: ``plan`` ``(E, H, A)``, its return ``value``
    ``(E,)``; the warm start, valued ``-inf``, until a sequence is evaluated."""

    def __init__(self, warm_start: Tensor) -> None:
        self.plan = warm_start
        self.value = torch.full(warm_start.shape[:1], -math.inf, device=warm_start.device,
                                dtype=warm_start.dtype)

    def update(self, values: Tensor, plans: Tensor) -> None:
        """Keep ``plans`` ``(E, H, A)`` where their returns ``values`` ``(E,)`` beat the best."""
        improved = values > self.value
        self.value = torch.where(improved, values, self.value)
        self.plan = torch.where(improved[:, None, None], plans, self.plan)


def _refit(mean: Tensor, std: Tensor, elites: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """``mean``, ``std`` ``(E, H, A)`` moved towards those of ``elites`` ``(E, K, H, A)``:
    ``alpha * old + (1 - alpha) * elite``."""
    return (alpha * mean + (1 - alpha) * elites.mean(dim=1),
            alpha * std + (1 - alpha) * elites.std(dim=1, correction=0))


class _BoxPlanner(ABC):
    """Config, bounds and horizon, and the warm-start checks every planner shares.

    ``plan`` checks the warm start and hands the problem to the planner's ``_search``, under
    ``torch.no_grad`` unless the planner ``differentiates`` through the objective.

    Args:
        config: the planner's config dataclass (``config_type``).
        low, high: action bounds float ``(A,)``: finite, ``low < high``.
    """

    config_type: ClassVar[type[PlannerConfig]]
    differentiates: ClassVar[bool] = False

    def __init__(
        self, config: PlannerConfig, low: Tensor | np.ndarray, high: Tensor | np.ndarray
    ) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(
                f"config: expected a {self.config_type.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.horizon = config.horizon
        self.low, self.high = _check_bounds(low, high)

    def plan(
        self, objective: Objective, initial_mean: Tensor, generator: torch.Generator
    ) -> Tensor:
        """``initial_mean`` float ``(E, H, A)`` (the warm start) -> plan float ``(E, H, A)``
        inside the bounds (see the module docstring)."""
        problem = self._start(objective, initial_mean, generator)
        if self.differentiates:
            return self._search(problem)
        with torch.no_grad():
            return self._search(problem)

    @abstractmethod
    def _search(self, problem: _Problem) -> Tensor:
        """The plan float ``(E, H, A)`` of ``problem``, inside the bounds."""

    def _start(
        self, objective: Objective, initial_mean: Tensor, generator: torch.Generator
    ) -> _Problem:
        """The problem: bounds on the warm start's device and dtype, the clipped warm start."""
        shape = (self.horizon, self.low.shape[0])
        if (
            not isinstance(initial_mean, Tensor)
            or initial_mean.ndim != 3
            or tuple(initial_mean.shape[1:]) != shape
            or not initial_mean.is_floating_point()
        ):
            got = (
                f"{initial_mean.dtype} {tuple(initial_mean.shape)}"
                if isinstance(initial_mean, Tensor)
                else type(initial_mean).__name__
            )
            raise ValueError(
                f"initial_mean: expected a float tensor (E, {shape[0]}, {shape[1]}), got {got}"
            )
        low = self.low.to(initial_mean.device, initial_mean.dtype)
        high = self.high.to(initial_mean.device, initial_mean.dtype)
        # float32 rounding of a shifted or model-made warm start may step just past a bound
        return _Problem(objective, initial_mean.detach().clamp(low, high), low, high, generator)


class RandomShooting(_BoxPlanner):
    """The best of ``samples`` uniform sequences; see :class:`RandomShootingConfig`.

    ``plan`` returns the best candidate ``(E, H, A)``: the warm start unless a sample beats it.
    """

    config_type = RandomShootingConfig
    config: RandomShootingConfig

    def _search(self, problem: _Problem) -> Tensor:
        samples = problem.uniform(self.config.samples - 1)
        candidates = torch.cat((problem.mean[:, None], samples), dim=1)
        best = problem.scores(candidates).argmax(dim=1)
        return _take(candidates, best[:, None])[:, 0]


class CEM(_BoxPlanner):
    """Cross-entropy method; see :class:`CEMConfig`.

    ``plan`` returns the final mean ``(E, H, A)``, as PETS and PlaNet do: an average of elites,
    smoother than any single sample and inside the box (every elite is clipped to it and the box
    is convex). The final mean itself is never evaluated; :class:`ICEM` returns the best
    evaluated sequence instead.
    """

    config_type = CEMConfig
    config: CEMConfig

    def _search(self, problem: _Problem) -> Tensor:
        c = self.config
        mean, std = problem.mean, problem.scale(c.init_std).expand_as(problem.mean)
        for _ in range(c.iterations):
            candidates = problem.clip(mean[:, None] + std[:, None] * problem.normal(c.samples))
            returns = problem.scores(candidates)
            elites = _take(candidates, returns.topk(c.elites, dim=1).indices)
            mean, std = _refit(mean, std, elites, c.alpha)
        # a convex combination of in-box values can still round past a float32 bound
        return problem.clip(mean)


def colored_noise(
    beta: float,
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gaussian noise float ``shape`` with power spectrum ``∝ f^-beta`` along the last dim.

    The algorithm of ``colorednoise.powerlaw_psd_gaussian`` (Timmer & König 1995, "On generating
    power law noise"), written in torch so that it draws from ``generator`` on ``device``:
    independent Gaussian Fourier coefficients scaled by ``f^(-beta/2)`` (the lowest frequency
    ``1/T`` stands in for ``f = 0``), real DC and Nyquist coefficients, ``irfft``, then division
    by the package's theoretical std. As there, that std leaves the DC term out, so strongly
    coloured noise over a short last dim has a variance somewhat above 1 (about 1.3 for
    ``beta = 2`` over 15 steps). ``beta = 0`` is white, ``1`` pink, ``2`` brown noise. A last
    dim of 1 has no frequency but DC, so there the noise is white.
    """
    length = shape[-1]
    if length == 1:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    frequencies = torch.fft.rfftfreq(length, device=device, dtype=dtype)
    frequencies[0] = 1.0 / length
    scale = frequencies ** (-beta / 2.0)
    weights = scale[1:].clone()
    # an even length's Nyquist coefficient is real: half the variance of a complex one
    weights[-1] *= (1 + length % 2) / 2.0
    sigma = 2.0 * torch.sqrt(torch.sum(weights**2)) / length
    spectrum_shape = (*shape[:-1], frequencies.shape[0])
    real = scale * torch.randn(spectrum_shape, generator=generator, device=device, dtype=dtype)
    imaginary = scale * torch.randn(spectrum_shape, generator=generator, device=device, dtype=dtype)
    imaginary[..., 0] = 0.0
    real[..., 0] *= math.sqrt(2.0)
    if length % 2 == 0:
        imaginary[..., -1] = 0.0
        real[..., -1] *= math.sqrt(2.0)
    return torch.fft.irfft(torch.complex(real, imaginary), n=length, dim=-1) / sigma


class ICEM(_BoxPlanner):
    """Improved cross-entropy method; see :class:`ICEMConfig`.

    ``plan`` returns the best sequence evaluated over all iterations ``(E, H, A)``.
    """

    config_type = ICEMConfig
    config: ICEMConfig

    def _search(self, problem: _Problem) -> Tensor:
        c = self.config
        mean, std = problem.mean, problem.scale(c.init_std).expand_as(problem.mean)
        E, H, A = mean.shape
        kept = round(c.keep_elites * c.elites)
        best = _BestSoFar(mean)
        sampled = c.samples
        kept_elites = mean.new_empty((E, 0, H, A))
        for iteration in range(c.iterations):
            noise = problem.colored(c.noise_beta, sampled)
            parts = [problem.clip(mean[:, None] + std[:, None] * noise), kept_elites]
            if iteration == c.iterations - 1:
                parts.append(mean[:, None])
            candidates = torch.cat(parts, dim=1)
            top = problem.scores(candidates).topk(c.elites, dim=1)
            elites = _take(candidates, top.indices)  # best first
            kept_elites = elites[:, :kept]
            best.update(top.values[:, 0], elites[:, 0])
            mean, std = _refit(mean, std, elites, c.alpha)
            sampled = max(2 * c.elites, int(sampled / c.population_decay))
        return best.plan


class MPPI(_BoxPlanner):
    """Model-predictive path integral control; see :class:`MPPIConfig`.

    ``plan`` returns the final weighted mean ``(E, H, A)``, inside the box as a convex
    combination of clipped candidates.
    """

    config_type = MPPIConfig
    config: MPPIConfig

    def _search(self, problem: _Problem) -> Tensor:
        c = self.config
        mean, std = problem.mean, problem.scale(c.noise_std)
        for _ in range(c.iterations):
            candidates = problem.clip(mean[:, None] + std * problem.colored(c.noise_beta,
                                                                            c.samples))
            returns = problem.scores(candidates)
            # softmax subtracts the max itself; it gives NaN weights only when every return is
            # -inf, and then the mean is kept
            weights = torch.softmax(returns / c.temperature, dim=1)
            update = torch.einsum("en,enha->eha", weights, candidates)
            mean = torch.where(torch.isnan(update), mean, update)
        return problem.clip(mean)


class GradientPlanner(_BoxPlanner):
    """Projected gradient ascent with Adam from several starts; see :class:`GradientConfig`.

    The objective must be differentiable in the actions (a learned model, not the simulator).
    Gradients are enabled inside ``plan``, so it works when the caller is under ``no_grad``
    (not under ``inference_mode``), and are taken for the actions only: a model's parameters
    accumulate no ``.grad``. ``plan`` returns the best sequence evaluated ``(E, H, A)``.
    """

    config_type = GradientConfig
    config: GradientConfig
    differentiates = True

    def _search(self, problem: _Problem) -> Tensor:
        c = self.config
        mean = problem.mean
        noise = problem.normal(c.samples - 1)
        starts = problem.clip(mean[:, None] + problem.scale(c.noise_std) * noise)
        actions = torch.cat((mean[:, None], starts), dim=1).requires_grad_(True)
        optimiser = torch.optim.Adam([actions], lr=c.lr)
        best = _BestSoFar(mean)
        for iteration in range(c.iterations):
            with torch.enable_grad():
                raw = problem.objective(actions)
                total = raw.sum()
            top = _scores(raw, actions).max(dim=1)
            best.update(top.values, _take(actions.detach(), top.indices[:, None])[:, 0])
            if iteration == c.iterations - 1:
                break
            if not raw.requires_grad:
                raise ValueError(
                    "objective: expected returns differentiable in the actions for the "
                    "gradient planner, got returns without a gradient"
                )
            (gradient,) = torch.autograd.grad(total, actions)
            # ascent: Adam descends. A diverged rollout's NaN/inf gradient would make its
            # actions NaN for good
            actions.grad = -gradient.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
            optimiser.step()
            with torch.no_grad():
                actions.clamp_(problem.low, problem.high)
        return best.plan


def planner_config(cfg: DictConfig | dict[str, Any] | PlannerConfig) -> PlannerConfig:
    """Validate a planner config node (its ``kind`` picks the dataclass) and return it."""
    return kind_dataclass("planner", cfg, PLANNER_CONFIGS)


def make_planner(
    cfg: DictConfig | dict[str, Any] | PlannerConfig,
    low: Tensor | np.ndarray,
    high: Tensor | np.ndarray,
) -> RandomShooting | CEM | ICEM | MPPI | GradientPlanner:
    """Build the planner described by ``cfg`` for actions in ``[low, high]`` (float ``(A,)``)."""
    config = planner_config(cfg)
    planner_type = {
        RandomShootingConfig: RandomShooting,
        CEMConfig: CEM,
        ICEMConfig: ICEM,
        MPPIConfig: MPPI,
        GradientConfig: GradientPlanner,
    }[type(config)]
    return planner_type(config, low, high)
