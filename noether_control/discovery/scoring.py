"""Scoring conserved quantities by usefulness: Noether tailoring of a learned dynamics model.

A pretrained MLP vector field ``F_theta(x)`` (HNN settings: 2 hidden tanh layers of 200
units, full-batch Adam 1e-3) predicts the next state with one RK4 step of the actual time step,
and is trained as such a next-state predictor on the smoothed training trajectories. For a
candidate law ``g``, each example (a trajectory, known from its first state) is *tailored*: one
inner step on its own copy of the tailored parameters lowers the conservation loss

    L_b = mean_t (g(x_hat_t) - g(x_hat_0))^2 / Var_pooled(g)          (Eq. 2(a) of the paper)

along its own predicted rollout, and the tailored model predicts again. The step is by default
one damped Gauss-Newton step on the residuals of ``L_b`` (a gradient step cannot undo the drift
of a long rollout). Every surviving candidate is scored by the training prediction error after
one step with the inner rate swept over ``1e-3 ... 1e1``; the best few are meta-tailored (the
outer prediction loss back-propagated through the inner step, training ``theta`` and the
formula's constants), and the final choice is the lowest training loss. All tailoring goes
through :func:`noether_control.noether.tailor`.

Baselines: the untailored MLP, the MLP meta-tailored with the true energy, and a Hamiltonian Neural
Network (an MLP scalar ``H`` whose symplectic gradient ``(dH/dp, -dH/dq)`` is the vector field).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.stats
import sympy
import torch
from torch import Tensor, nn

from noether_control.discovery.data import Trajectories
from noether_control.discovery.expressions import Expr
from noether_control.noether import expand_params, tailor
from noether_control.noether.tailoring import OPTIMIZERS, gauss_newton_weights, residual_jacobian

INNER_OPTIMIZERS = ("gauss_newton", *OPTIMIZERS)
"""Tailoring steps: a damped Gauss-Newton step, or one of :func:`noether_control.noether.tailor`'s
optimizers."""

Field = Callable[[Tensor], Tensor]
Quantity = Callable[[Tensor], Tensor]
"""A conserved-quantity candidate: states ``(..., D)`` -> values ``(...)``."""


@dataclass
class ScoringConfig:
    """Usefulness scoring and baselines (HNN-paper model settings by default)."""

    hidden: int = 200
    """Width of the two hidden tanh layers of the MLP and the HNN."""
    pretrain_steps: int = 2000
    """Full-batch Adam steps to pretrain the MLP and the HNN on one-step transitions."""
    pretrain_lr: float = 1e-3
    """Adam learning rate of pretraining."""
    inner_optimizer: str = "gauss_newton"
    """Tailoring step: ``gauss_newton`` (one damped Gauss-Newton step on the conservation
    residuals, ``lr`` setting the damping; see :func:`noether_control.noether.tailoring.
    gauss_newton_weights`), ``normalized`` (each example moves ``lr`` along its unit gradient) or
    ``sgd``."""
    smooth_window: int = 7
    """Samples per local cubic fit denoising the training trajectories the models learn from
    and are meta-tailored on (< 4: raw states)."""
    lr_sweep: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0])
    """Inner learning rates tried for each candidate's one tailoring step (for ``gauss_newton``
    they set the damping: 1e-3 is a short gradient step, 10 nearly the full Gauss-Newton step)."""
    max_scored: int = 100
    """Score at most this many surviving candidates (highest variance ratio first)."""
    top_k: int = 3
    """Number of best-scoring candidates to meta-tailor."""
    meta_steps: int = 20
    """Outer (meta-tailoring) Adam steps for each of the top candidates and the true energy (0:
    rank by the training error after the tailoring step alone). Each step costs about 1.7 s on
    one CPU thread for the HNN pendulum; see docs/discovery.md for what more steps did."""
    meta_lr: float = 1e-4
    """Outer Adam learning rate for the MLP weights."""
    meta_formula_lr: float = 1e-3
    """Outer Adam learning rate for the formula's constants (0 keeps the fitted values)."""
    tailored: list[str] = field(default_factory=lambda: [
        "layers.0.bias", "layers.1.bias", "layers.2.weight", "layers.2.bias"])
    """MLP parameters adapted per example (the rest stay shared): all biases and the output
    layer, the analogue of the video model's per-example normalisation parameters; tailoring the
    200x200 hidden weights per example costs ~10x more for no measured gain."""
    hnn: bool = True
    """Train the Hamiltonian Neural Network baseline (needs an even number of columns: q then p)."""
    choice_confidence: float = 0.95
    """The best-conserved meta-tailored candidate is chosen unless another's per-example
    training losses are lower at this one-sided confidence (paired t-test over the examples;
    see :func:`usefulness_order`); 0 ranks by mean training loss alone."""
    example_length: int = 50
    """Training trajectories longer than this many samples are cut into consecutive pieces of at
    most this length, each its own tailoring example: the second-order meta-gradient's memory
    grows with the square of the rollout length (one 300-sample example grew past 5 GB and was
    killed; cut into pieces of 50 the run peaked at 1.04 GB). The HNN systems' 30 and 45 samples
    are left whole. At least 5, so that every piece has at least 3 samples."""

    def __post_init__(self) -> None:
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"scoring.inner_optimizer: expected one of {INNER_OPTIMIZERS}, got "
                             f"{self.inner_optimizer!r}")
        if not 0 <= self.choice_confidence < 1:
            raise ValueError(f"scoring.choice_confidence: expected a confidence in [0, 1), got "
                             f"{self.choice_confidence}")
        if self.example_length < 5:
            raise ValueError(f"scoring.example_length: expected >= 5 samples, got "
                             f"{self.example_length}")


class MLP(nn.Module):
    """A tanh MLP whose weights can also be given per example (see :func:`apply_mlp`)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: Tensor) -> Tensor:
        return apply_mlp(dict(self.named_parameters()), x)


def apply_mlp(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Functional forward of :class:`MLP` parameters ``params`` on ``x`` ``(B, D_in)``.

    Weights ``layers.i.weight`` are ``(out, in)`` (shared) or ``(B, out, in)`` (per example).
    """
    n_layers = sum(1 for name in params if name.endswith(".weight"))
    hidden = x
    for index in range(n_layers):
        weight, bias = params[f"layers.{index}.weight"], params[f"layers.{index}.bias"]
        if weight.dim() == 3:
            hidden = torch.einsum("bi,boi->bo", hidden, weight) + bias
        else:
            hidden = hidden @ weight.T + bias
        if index < n_layers - 1:
            hidden = torch.tanh(hidden)
    return hidden


def rk4_step(vector_field: Field, state: Tensor, dt: Tensor) -> Tensor:
    """One classical Runge-Kutta step: ``state`` ``(B, D)``, ``dt`` ``(B,)`` (0 keeps the state)."""
    dt = dt.unsqueeze(-1)
    k1 = vector_field(state)
    k2 = vector_field(state + 0.5 * dt * k1)
    k3 = vector_field(state + 0.5 * dt * k2)
    k4 = vector_field(state + dt * k3)
    return state + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rollout(vector_field: Field, start: Tensor, steps: Tensor) -> Tensor:
    """Predict ``(B, T, D)`` from ``start`` ``(B, D)`` with time steps ``steps`` ``(B, T-1)``."""
    states = [start]
    for index in range(steps.shape[1]):
        states.append(rk4_step(vector_field, states[-1], steps[:, index]))
    return torch.stack(states, dim=1)


class HNN(nn.Module):
    """Hamiltonian Neural Network (Greydanus et al. 2019): ``F(x) = (dH/dp, -dH/dq)``.

    The state is ``(q_1..q_n, p_1..p_n)``; ``H`` is a tanh MLP with a scalar output.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"HNN: expected an even state size (q then p), got {dim}")
        self.half = dim // 2
        self.energy = MLP([dim, hidden, hidden, 1])

    def forward(self, state: Tensor) -> Tensor:
        with torch.enable_grad():
            if not state.requires_grad:
                state = state.requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.energy(state).sum(), state, create_graph=True)
        return torch.cat([gradient[:, self.half:], -gradient[:, :self.half]], dim=1)


@dataclass
class Batch:
    """Padded trajectories for rollouts.

    Attributes:
        states: observed (or clean, for evaluation) states ``(B, T, D)``.
        steps: time steps ``(B, T-1)``; 0 after a trajectory's end.
        mask: ``(B, T)`` float, 1 where a sample exists.
    """

    states: Tensor
    steps: Tensor
    mask: Tensor

    @classmethod
    def from_trajectories(cls, trajectories: Trajectories, clean: Sequence[np.ndarray] | None,
                          dtype: torch.dtype, device: torch.device) -> Batch:
        """Pad ``trajectories`` (or their ``clean`` states, when given) to a batch."""
        sources = clean if clean is not None else trajectories.states
        length = max(len(s) for s in sources)
        dim = len(trajectories.names)
        states = np.zeros((len(sources), length, dim))
        steps = np.zeros((len(sources), length - 1))
        mask = np.zeros((len(sources), length))
        for index, (values, times) in enumerate(zip(sources, trajectories.times, strict=True)):
            states[index, :len(values)] = values
            states[index, len(values):] = values[-1]
            steps[index, :len(values) - 1] = np.diff(times)
            mask[index, :len(values)] = 1.0
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(as_tensor(states), as_tensor(steps), as_tensor(mask))

    def repeat(self, times: int) -> Batch:
        """Tile the batch ``times`` times along the example dimension."""
        return Batch(self.states.repeat(times, 1, 1), self.steps.repeat(times, 1),
                     self.mask.repeat(times, 1))

    def squared_errors(self, predicted: Tensor) -> tuple[Tensor, Tensor]:
        """Squared errors ``(B, T - 1)`` of the predicted samples (every one after the given
        start state; 0 after a trajectory's end), averaged over dimensions, and their mask."""
        mask = self.mask[:, 1:]
        return (predicted - self.states)[:, 1:].pow(2).mean(dim=-1) * mask, mask

    def error(self, predicted: Tensor) -> Tensor:
        """Per-example mean squared error over the predicted samples, ``(B,)``."""
        squared, mask = self.squared_errors(predicted)
        return squared.sum(dim=1) / mask.sum(dim=1)


def rmse(batch: Batch, predicted: Tensor) -> float:
    """Root mean squared error over all predicted samples and dimensions."""
    squared, mask = batch.squared_errors(predicted)
    return math.sqrt(float(squared.sum() / mask.sum()))


def formula_quantity(formula: Expr, params: Tensor) -> Quantity:
    """``formula`` with constants ``params`` ``(P,)`` as a function of states ``(..., D)``.

    The constants follow the states' device and dtype, so a quantity fitted on a GPU evaluates
    CPU states (plots, reports) as well.
    """

    def evaluate(node: Expr, state: Tensor, slot: list[int]) -> Tensor:
        if node.op == "input":
            return state[..., node.index]
        if node.op == "param":
            value = params[slot[0]].to(device=state.device, dtype=state.dtype)
            slot[0] += 1
            return value.expand(state.shape[:-1])
        args = [evaluate(child, state, slot) for child in node.children]
        if node.op == "sin":
            return torch.sin(args[0])
        if node.op == "cos":
            return torch.cos(args[0])
        if node.op == "square":
            return args[0] * args[0]
        left, right = args
        return {"add": torch.add, "sub": torch.sub, "mul": torch.mul,
                "div": torch.div}[node.op](left, right)

    return lambda state: evaluate(formula, state, [0])


def sympy_quantity(text: str, names: Sequence[str]) -> Quantity:
    """A sympy expression string over the column ``names`` as a torch function of states."""
    symbols = sympy.symbols(list(names))
    try:
        expression = sympy.sympify(text, locals=dict(zip(names, symbols, strict=True)))
    except (sympy.SympifyError, SyntaxError, TypeError) as error:
        raise ValueError(f"energy: expected a sympy expression over {list(names)}, got "
                         f"{text!r}") from error
    unknown = {str(s) for s in expression.free_symbols} - set(names)
    if unknown:
        raise ValueError(f"energy {text!r}: unknown symbols {sorted(unknown)}; expected "
                         f"columns {list(names)}")
    function = sympy.lambdify(symbols, expression, modules=[
        {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "sqrt": torch.sqrt,
         "log": torch.log}, "math"])

    def quantity(state: Tensor) -> Tensor:
        value = function(*(state[..., i] for i in range(len(names))))
        return value if isinstance(value, Tensor) else torch.full(state.shape[:-1], float(value))

    return quantity


def conservation_residuals(quantity: Quantity, scale: Tensor,
                           shared: Mapping[str, Tensor] | None = None,
                           ) -> Callable[[dict[str, Tensor], Batch], Tensor]:
    """Per-example residuals ``(B, T)`` of Eq. 2(a) along each example's own predicted rollout.

    ``r_t = (g(x_hat_t) - g(x_hat_0)) / sqrt(Var_pooled(g) * T_b)`` on existing samples (0 after
    a trajectory's end), so that ``sum_t r_t^2`` is the conservation loss. The returned
    ``residuals(params, batch)`` runs the MLP with the per-example ``params`` on top of the
    ``shared`` (untailored) parameters.
    """
    shared = dict(shared or {})

    def residuals(params: dict[str, Tensor], batch: Batch) -> Tensor:
        merged = {**shared, **params}
        predicted = rollout(lambda x: apply_mlp(merged, x), batch.states[:, 0], batch.steps)
        values = quantity(predicted)
        weight = batch.mask / (batch.mask.sum(dim=1, keepdim=True) * scale)
        return (values - values[:, :1]) * weight.sqrt()

    return residuals


def conservation_loss(quantity: Quantity, scale: Tensor, shared: Mapping[str, Tensor] | None = None,
                      ) -> Callable[[dict[str, Tensor], Batch], Tensor]:
    """Per-example Eq. 2(a) loss ``mean_t (g(x_hat_t) - g(x_hat_0))^2 / Var_pooled(g)``, ``(B,)``.

    See :func:`conservation_residuals`, whose squares it sums.
    """
    residuals = conservation_residuals(quantity, scale, shared)
    return lambda params, batch: residuals(params, batch).pow(2).sum(dim=1)


def pooled_scale(quantity: Quantity, batch: Batch) -> Tensor:
    """Variance of ``quantity`` over all existing samples: normalises its conservation loss."""
    values = quantity(batch.states)[batch.mask > 0]
    return values.var().clamp_min(1e-12)


def train_one_step(model: nn.Module, states: Tensor, following: Tensor, steps_dt: Tensor,
                   steps: int, lr: float) -> list[float]:
    """Full-batch Adam training ``model`` as a next-state predictor: one RK4 step of the vector
    field ``model`` over ``steps_dt`` ``(N,)`` from ``states`` ``(N, D)`` should land on
    ``following`` ``(N, D)``. Returns the loss after each step.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (rk4_step(model, states, steps_dt) - following).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def tailored_rollout(mlp: MLP, params: Mapping[str, Tensor] | None, quantity: Quantity | None,
                     scale: Tensor | None, batch: Batch, lr: float | Tensor,
                     tailored: Sequence[str], second_order: bool = False,
                     optimizer: str = "gauss_newton") -> Tensor:
    """Predict ``batch`` after one tailoring step per example of the ``tailored`` parameters (no
    tailoring if ``quantity`` is None). ``params`` defaults to the MLP's own weights."""
    everything = dict(mlp.named_parameters()) if params is None else dict(params)
    if quantity is None or scale is None:
        return rollout(lambda x: apply_mlp(everything, x), batch.states[:, 0], batch.steps)
    unknown = set(tailored) - set(everything)
    if unknown or not tailored:
        raise ValueError(f"scoring.tailored: expected MLP parameter names from "
                         f"{sorted(everything)}, got {list(tailored)}")
    shared = {name: value for name, value in everything.items() if name not in tailored}
    per_example = expand_params({name: everything[name] for name in tailored},
                                batch.states.shape[0])
    if optimizer == "gauss_newton":
        residuals = conservation_residuals(quantity, scale, shared)
        with torch.enable_grad():
            # The weights come from a second expansion of the same parameters: constants for the
            # inner gradient (taken at ``per_example``), as Gauss-Newton's curvature is, but, with
            # ``second_order``, differentiable in the outer parameters and the formula's constants.
            start = {name: value if value.requires_grad and second_order
                     else value.detach().requires_grad_(True)
                     for name, value in expand_params({name: everything[name] for name in tailored},
                                                      batch.states.shape[0]).items()}
            at_start = residuals(start, batch)
            jacobian = residual_jacobian(at_start, start, create_graph=second_order)
            weights = gauss_newton_weights(jacobian, at_start, lr, batch.mask)
        if not second_order:
            weights = weights.detach()
        # One SGD step of rate 1 on sum_t w_t r_t is the damped Gauss-Newton step on the
        # conservation loss.
        adapted = tailor(per_example, batch,
                         lambda params, examples: (weights * residuals(params, examples)).sum(1),
                         steps=1, lr=1.0, optimizer="sgd", second_order=second_order)
    else:
        adapted = tailor(per_example, batch, conservation_loss(quantity, scale, shared),
                         steps=1, lr=lr, optimizer=optimizer, second_order=second_order)
    merged = {**shared, **adapted}
    return rollout(lambda x: apply_mlp(merged, x), batch.states[:, 0], batch.steps)


def sweep_learning_rates(mlp: MLP, quantity: Quantity, scale: Tensor, batch: Batch,
                         rates: Sequence[float], tailored: Sequence[str],
                         optimizer: str = "gauss_newton") -> tuple[float, float]:
    """``(best_error, best_lr)`` of one tailoring step over ``rates``, all rates in one batch."""
    tiled = batch.repeat(len(rates))
    per_example_lr = torch.as_tensor(rates, dtype=batch.states.dtype,
                                     device=batch.states.device).repeat_interleave(
        batch.states.shape[0])
    predicted = tailored_rollout(mlp, None, quantity, scale, tiled, per_example_lr, tailored,
                                 optimizer=optimizer)
    errors = tiled.error(predicted.detach()).reshape(len(rates), -1).mean(dim=1)
    errors = torch.where(torch.isfinite(errors), errors, torch.full_like(errors, math.inf))
    best = int(torch.argmin(errors))
    return float(errors[best]), float(rates[best])


def usefulness_order(example_losses: Sequence[Tensor | None], confidence: float
                     ) -> list[int]:
    """Final order of meta-tailored candidates given best-conserved first, each with its
    per-example training losses ``(B,)`` (None: not finite).

    The candidates are ordered by mean training loss, except that the first (best-conserved)
    one keeps first place unless another's losses are lower at one-sided ``confidence`` in a
    paired t-test over the examples; then the best such one leads. Why: the usefulness
    differences between conserved candidates can be far inside the examples' scatter (one
    recording gives 5-6 examples), and there the conservation evidence is the stronger.
    """
    means = [math.inf if losses is None else float(losses.mean()) for losses in example_losses]
    by_loss = sorted(range(len(means)), key=lambda index: means[index])
    reference = example_losses[0] if example_losses else None
    if confidence <= 0 or reference is None:
        return by_loss
    if reference.numel() < 2:  # one example: nothing can be significantly better
        return [0, *(index for index in by_loss if index != 0)]
    quantile = float(scipy.stats.t.ppf(confidence, reference.numel() - 1))

    def significantly_better(index: int) -> bool:
        losses = example_losses[index]
        if losses is None:
            return False
        difference = (reference - losses).double()
        spread = float(difference.std()) / math.sqrt(difference.numel())
        return float(difference.mean()) > quantile * spread

    lead = next(index for index in by_loss if index == 0 or significantly_better(index))
    return [lead, *(index for index in by_loss if index != lead)]


@dataclass
class MetaTailored:
    """A meta-tailored model: MLP weights, formula constants and the final training loss."""

    params: dict[str, Tensor]
    formula_params: Tensor | None
    train_loss: float
    example_losses: Tensor | None = None
    """Each training example's prediction error at the kept iterate, ``(B,)``."""


def meta_tailor(mlp: MLP, make_quantity: Callable[[Tensor | None], Quantity],
                formula_params: Tensor | None, batch: Batch, lr: float, config: ScoringConfig
                ) -> MetaTailored:
    """Train the MLP (and the formula's constants) through one second-order tailoring step.

    ``make_quantity(constants)`` builds the conserved quantity from the current constants.
    """
    params = {name: value.detach().clone().requires_grad_(True)
              for name, value in mlp.named_parameters()}
    groups: list[dict] = [{"params": list(params.values()), "lr": config.meta_lr}]
    constants = None
    if formula_params is not None and formula_params.numel() and config.meta_formula_lr > 0:
        constants = formula_params.detach().clone().requires_grad_(True)
        groups.append({"params": [constants], "lr": config.meta_formula_lr})
    elif formula_params is not None:
        constants = formula_params.detach().clone()
    optimizer = torch.optim.Adam(groups)

    def outer_losses() -> Tensor:
        quantity = make_quantity(constants)
        scale = pooled_scale(quantity, batch)
        predicted = tailored_rollout(mlp, params, quantity, scale, batch, lr, config.tailored,
                                     second_order=True, optimizer=config.inner_optimizer)
        return batch.error(predicted)

    def snapshot(loss: float, losses: Tensor | None = None) -> MetaTailored:
        return MetaTailored({k: v.detach().clone() for k, v in params.items()},
                            None if constants is None else constants.detach().clone(), loss,
                            None if losses is None else losses.detach().clone())

    # Long noisy rollouts make the outer loss rough: keep the best iterate (step 0 included),
    # so meta-tailoring never returns a model worse on its own training loss than it started.
    best: MetaTailored | None = None
    for _ in range(config.meta_steps + 1):
        optimizer.zero_grad()
        losses = outer_losses()
        loss = losses.mean()
        if not torch.isfinite(loss):
            break
        if best is None or float(loss.detach()) < best.train_loss:
            best = snapshot(float(loss.detach()), losses)
        loss.backward()
        optimizer.step()
    return best if best is not None else snapshot(math.inf)
