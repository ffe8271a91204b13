"""The tailoring inner loop: per-example gradient steps on a conservation loss.

This is the one inner-loop implementation of the codebase (Noether Networks, Alet et al. 2021,
Algorithm 1). Discovery uses it to score candidate laws, the video world model to tailor its
per-example parameters (the LSTM modulation by default, the normalisation layers of encoder and
decoder, or every weight: :mod:`noether_control.noether.meta`).

Per-example parameters are explicit: a dict of tensors whose leading dimension ``B`` indexes the
examples. The caller's loss maps ``(params, batch)`` to one loss per example, shape ``(B,)``; it
must keep examples independent (example ``b``'s loss may depend only on ``params[name][b]`` and
example ``b`` of the batch; no batch statistics). Under that contract the gradient of the summed
loss with respect to the stacked parameters *is* the per-example gradient, so one
``torch.autograd.grad`` call tailors every example at once, and tailoring one example never changes
another's prediction.

Module weights are never modified: the adapted parameters are new tensors. With
``second_order=True`` (the default) the inner step is built with ``create_graph=True`` so an outer
loss back-propagates through it into the initial parameters (and into a learnable learning rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
"""Per-example parameters: name -> tensor of shape ``(B, *param_shape)``."""

ConservationLoss = Callable[[Params, Any], Tensor]
"""``loss(params, batch) -> (B,)`` per-example losses, examples independent."""

StepCallback = Callable[[int, Tensor], None]
"""``callback(step, losses)`` with the detached ``(B,)`` losses before inner step ``step``."""

OPTIMIZERS = ("sgd", "adam", "normalized")


@dataclass
class TailoringConfig:
    """How the inner loop adapts per-example parameters.

    The defaults follow the paper's video experiment: one SGD step, full second order.
    """

    steps: int = 1
    """Number of inner gradient steps K (0 returns the parameters unchanged)."""
    lr: float = 1e-4
    """Inner learning rate (its initial value when ``learnable_lr``)."""
    optimizer: str = "sgd"
    """Inner optimizer: ``sgd``, ``adam`` (differentiable, bias-corrected) or ``normalized``
    (each example steps ``lr`` along its unit-norm gradient, so ``lr`` is a step length in
    parameter space whatever the loss's scale)."""
    second_order: bool = True
    """Back-propagate the outer loss through the inner gradient (create_graph); False gives the
    first-order approximation (inner gradients treated as constants), under which a conservation
    loss's own parameters (g_φ) get no meta-gradient."""
    learnable_lr: bool = False
    """Meta-learn the inner learning rate (as its logarithm, so it stays positive)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates, used when ``optimizer == 'adam'``."""
    adam_eps: float = 1e-8
    """Adam's denominator epsilon."""

    def __post_init__(self) -> None:
        validate_inner_loop(self.steps, self.lr, self.optimizer)


def validate_inner_loop(steps: int, lr: float | Tensor, optimizer: str) -> None:
    """Raise ``ValueError`` for a negative step count, non-positive lr or unknown optimizer."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"tailoring steps: expected an int >= 0, got {steps!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"tailoring optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if not isinstance(lr, Tensor) and not (isinstance(lr, int | float) and lr > 0):
        raise ValueError(f"tailoring lr: expected a float > 0 or a tensor, got {lr!r}")


class InnerLearningRate(nn.Module):
    """A meta-learnable inner learning rate, stored as its logarithm so it stays positive."""

    def __init__(self, initial: float) -> None:
        super().__init__()
        if not initial > 0:
            raise ValueError(f"initial inner lr: expected > 0, got {initial!r}")
        self.log_lr = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> Tensor:
        """The learning rate, a 0-d tensor carrying gradient to ``log_lr``."""
        return self.log_lr.exp()


def expand_params(shared: Mapping[str, Tensor], batch_size: int) -> Params:
    """Give every example its own copy of ``shared`` parameters: ``(*s) -> (B, *s)``.

    The copies are views created with ``expand`` and stay connected to ``shared`` in the autograd
    graph, so an outer loss on the tailored parameters trains the shared ones.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    return {name: value.unsqueeze(0).expand(batch_size, *value.shape) for name, value in
            shared.items()}


def tailor(
    params: Mapping[str, Tensor],
    batch: Any,
    loss_fn: ConservationLoss,
    *,
    steps: int = 1,
    lr: float | Tensor = 1e-4,
    optimizer: str = "sgd",
    second_order: bool = True,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    callback: StepCallback | None = None,
) -> Params:
    """Adapt per-example ``params`` with ``steps`` gradient steps on ``loss_fn(params, batch)``.

    Args:
        params: name -> ``(B, ...)`` per-example parameters (see :func:`expand_params`), float.
        batch: anything ``loss_fn`` understands; passed through unchanged.
        loss_fn: per-example conservation loss, returns shape ``(B,)``; examples independent.
        steps: number of inner steps K; ``0`` returns ``params`` unchanged.
        lr: inner learning rate: a float, a 0-d tensor (e.g. learnable) or a ``(B,)`` tensor
            (one rate per example, e.g. a learning-rate sweep laid out along the batch).
        optimizer: ``"sgd"``, ``"adam"`` or ``"normalized"`` (per-example unit-norm gradient
            step of length ``lr``); all differentiable.
        second_order: keep the graph of the inner gradients so the outer loss sees through them.
        adam_betas, adam_eps: Adam hyper-parameters.
        callback: called with ``(step, losses)`` before every inner step.

    Returns:
        The adapted parameters, new tensors with the same shapes; module weights are untouched.
    """
    validate_inner_loop(steps, lr, optimizer)
    batch_size = _examples(params)
    current: Params = dict(params)
    if steps == 0:
        return current
    moments = ({name: torch.zeros_like(value) for name, value in current.items()},
               {name: torch.zeros_like(value) for name, value in current.items()})
    with torch.enable_grad():
        # Parameters that arrive without a graph (pure inference) need one for the inner grad.
        current = {
            name: value if value.requires_grad else value.detach().requires_grad_(True)
            for name, value in current.items()
        }
        for step in range(steps):
            losses = loss_fn(current, batch)
            if losses.shape != (batch_size,):
                raise ValueError(
                    f"loss_fn: expected per-example losses of shape ({batch_size},), "
                    f"got {tuple(losses.shape)}"
                )
            if callback is not None:
                callback(step, losses.detach())
            grads = _inner_gradients(losses, current, second_order)
            if optimizer == "adam":
                directions = _adam_directions(grads, moments, step, adam_betas, adam_eps)
            elif optimizer == "normalized":
                directions = _unit_directions(grads)
            else:
                directions = grads
            current = {name: value - _broadcast_lr(lr, value) * directions[name]
                       for name, value in current.items()}
    return current


def _examples(params: Mapping[str, Tensor]) -> int:
    """The example count ``B`` shared by every ``(B, ...)`` entry of ``params``."""
    if not params:
        raise ValueError("params: expected at least one tensor to tailor, got an empty dict")
    batch_size = next(iter(params.values())).shape[0]
    for name, value in params.items():
        if not isinstance(value, Tensor) or value.dim() < 1 or value.shape[0] != batch_size:
            raise ValueError(
                f"params[{name!r}]: expected a tensor with leading example dim {batch_size}, "
                f"got {getattr(value, 'shape', type(value).__name__)}"
            )
    return batch_size


def _inner_gradients(losses: Tensor, params: Params, second_order: bool) -> Params:
    """Gradients of ``losses.sum()`` (``(B,)``, examples independent) per parameter: zeros for
    a parameter the loss does not reach; with the graph kept only for ``second_order``."""
    names = list(params)
    grads = torch.autograd.grad(losses.sum(), [params[name] for name in names],
                                create_graph=second_order, allow_unused=True)
    return {name: torch.zeros_like(params[name]) if grad is None
            else grad if second_order else grad.detach()
            for name, grad in zip(names, grads, strict=True)}


def _adam_directions(grads: Params, moments: tuple[Params, Params], step: int,
                     betas: tuple[float, float], eps: float) -> Params:
    """Adam's bias-corrected step directions at inner step ``step`` (0-based); updates the
    ``(first, second)`` moment estimates in ``moments`` (differentiable, out of place)."""
    first, second = moments
    beta1, beta2 = betas
    directions = {}
    for name, grad in grads.items():
        first[name] = beta1 * first[name] + (1 - beta1) * grad
        second[name] = beta2 * second[name] + (1 - beta2) * grad * grad
        corrected_first = first[name] / (1 - beta1 ** (step + 1))
        corrected_second = second[name] / (1 - beta2 ** (step + 1))
        # sqrt has an infinite derivative at 0; eps inside keeps second order finite.
        directions[name] = corrected_first / (torch.sqrt(corrected_second + eps**2) + eps)
    return directions


def _unit_directions(grads: Params) -> Params:
    """Each example's gradient over all parameters scaled to unit norm."""
    batch_size = next(iter(grads.values())).shape[0]
    squared = sum(grad.reshape(batch_size, -1).pow(2).sum(dim=1) for grad in grads.values())
    # eps inside the sqrt keeps the norm differentiable at a zero gradient.
    norm = torch.sqrt(squared + 1e-24)
    return {name: grad / norm.reshape(-1, *([1] * (grad.dim() - 1)))
            for name, grad in grads.items()}


def _broadcast_lr(lr: float | Tensor, value: Tensor) -> float | Tensor:
    """Shape a per-example ``(B,)`` learning rate to broadcast against ``(B, ...)`` parameters."""
    if isinstance(lr, Tensor) and lr.dim() == 1:
        if lr.shape[0] != value.shape[0]:
            raise ValueError(
                f"lr: expected a scalar or one rate per example ({value.shape[0]},), "
                f"got {tuple(lr.shape)}"
            )
        return lr.reshape(-1, *([1] * (value.dim() - 1)))
    return lr


def tailor_with_config(
    params: Mapping[str, Tensor],
    batch: Any,
    loss_fn: ConservationLoss,
    config: TailoringConfig,
    lr: float | Tensor | None = None,
    callback: StepCallback | None = None,
) -> Params:
    """:func:`tailor` with hyper-parameters from ``config``; ``lr`` overrides ``config.lr``
    (pass an :class:`InnerLearningRate`'s output when ``config.learnable_lr``)."""
    return tailor(
        params,
        batch,
        loss_fn,
        steps=config.steps,
        lr=config.lr if lr is None else lr,
        optimizer=config.optimizer,
        second_order=config.second_order,
        adam_betas=config.adam_betas,
        adam_eps=config.adam_eps,
        callback=callback,
    )


def residual_jacobian(residuals: Tensor, params: Mapping[str, Tensor],
                      create_graph: bool = False) -> Tensor:
    """Per-example Jacobian of ``residuals`` ``(B, T)`` with respect to per-example ``params``.

    ``params`` are ``(B, ...)`` tensors in the graph of ``residuals`` and, as for :func:`tailor`,
    example ``b``'s residuals depend only on example ``b``'s parameters, so one batched backward
    pass per residual index gives every example's rows at once.

    ``create_graph`` keeps the Jacobian differentiable (for an outer loss through a step that
    uses it).

    Returns:
        ``(B, T, P)`` with ``P`` the number of parameters per example (``params`` in order,
        flattened); zero columns for parameters the residuals do not use.
    """
    batch_size, length = residuals.shape
    names = list(params)
    cotangents = torch.eye(length, dtype=residuals.dtype, device=residuals.device)
    cotangents = cotangents.unsqueeze(1).expand(length, batch_size, length)
    with torch.enable_grad():
        grads = torch.autograd.grad(residuals, [params[name] for name in names],
                                    grad_outputs=cotangents, is_grads_batched=True,
                                    allow_unused=True, retain_graph=True,
                                    create_graph=create_graph)
    columns = [torch.zeros(length, batch_size, params[name][0].numel(), dtype=residuals.dtype,
                           device=residuals.device) if grad is None
               else grad.reshape(length, batch_size, -1)
               for name, grad in zip(names, grads, strict=True)]
    return torch.cat(columns, dim=2).transpose(0, 1)


def gauss_newton_weights(jacobian: Tensor, residuals: Tensor, lr: float | Tensor,
                         valid: Tensor | None = None) -> Tensor:
    """Residual weights ``w`` ``(B, T)`` that turn :func:`tailor` into a Gauss-Newton step.

    For a per-example loss ``1/2 sum_t r_t(theta)^2`` with Jacobian ``J`` ``(B, T, P)``,
    ``w = (J J^T + lambda I)^-1 r`` and one ``sgd`` step of rate 1 on the surrogate loss
    ``sum_t w_t r_t(theta)`` (``w`` held fixed) moves each example by
    ``-J^T (J J^T + lambda I)^-1 r = -(J^T J + lambda I)^-1 J^T r``: the damped Gauss-Newton
    (Levenberg-Marquardt) step, which for large ``lr`` zeroes the linearised residuals with the
    smallest parameter change. The damping is ``lambda = mean diag(J J^T) / lr`` (the mean over
    an example's ``valid`` residuals, so padding does not change its step), so ``lr`` is
    scale-free: small rates give a short gradient step, large rates the full Gauss-Newton step.
    Differentiable in ``jacobian`` and ``residuals``: built from a graph of them, ``w`` carries
    the step's dependence on the outer parameters.

    Args:
        jacobian: ``(B, T, P)`` from :func:`residual_jacobian`.
        residuals: ``(B, T)`` at the same parameters.
        lr: a float or one rate per example ``(B,)``, > 0.
        valid: ``(B, T)`` 1 for real residuals, 0 for padding; ``None``: all are real.
    """
    batch_size, length = residuals.shape
    gram = jacobian @ jacobian.transpose(1, 2)
    diagonal = gram.diagonal(dim1=1, dim2=2)
    if valid is None:
        scale = diagonal.mean(dim=1)
    else:
        scale = (diagonal * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1)
    scale = scale.clamp_min(1e-30)
    rate = torch.as_tensor(lr, dtype=residuals.dtype, device=residuals.device)
    damping = (scale / rate.expand(batch_size)).reshape(batch_size, 1, 1)
    identity = torch.eye(length, dtype=residuals.dtype, device=residuals.device)
    return torch.linalg.solve(gram + damping * identity, residuals.unsqueeze(-1)).squeeze(-1)
