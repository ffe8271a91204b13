"""The tailoring inner loop: descent, exact second-order meta-gradients, independence, K=0."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from noether_control.noether import InnerLearningRate, expand_params, tailor


def _tiny_problem(dtype: torch.dtype = torch.float64) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    shared = {
        "weight": torch.randn(3, 2, generator=generator, dtype=dtype),
        "bias": torch.randn(2, generator=generator, dtype=dtype),
    }
    inputs = torch.randn(4, 5, 3, generator=generator, dtype=dtype)  # (B, T, features)
    targets = torch.randn(4, 5, 2, generator=generator, dtype=dtype)
    return shared, inputs, targets


def _predict(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
    # (B, T, 3) @ (B, 3, 2) + (B, 1, 2): per-example weights.
    return torch.tanh(inputs @ params["weight"] + params["bias"].unsqueeze(1))


def _conservation_loss(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
    """A 'conserved quantity' g(y) = |y|^2 should stay equal to its first value: Eq. 2(a)."""
    energy = _predict(params, inputs).pow(2).sum(-1)
    return (energy - energy[:, :1]).pow(2).sum(-1)


def _outer_loss(shared: dict[str, Tensor], inputs: Tensor, targets: Tensor, lr: float | Tensor,
                steps: int, optimizer: str = "sgd", second_order: bool = True) -> Tensor:
    params = expand_params(shared, inputs.shape[0])
    adapted = tailor(params, inputs, _conservation_loss, steps=steps, lr=lr, optimizer=optimizer,
                     second_order=second_order)
    return (_predict(adapted, inputs) - targets).pow(2).mean()


def test_inner_loop_lowers_the_loss() -> None:
    shared, inputs, _ = _tiny_problem()
    params = expand_params(shared, inputs.shape[0])
    before = _conservation_loss(params, inputs)
    for optimizer, lr in (("sgd", 0.05), ("adam", 0.01), ("normalized", 0.05)):
        adapted = tailor(params, inputs, _conservation_loss, steps=5, lr=lr, optimizer=optimizer)
        after = _conservation_loss(adapted, inputs)
        assert torch.all(after < before), (optimizer, before, after)


def test_zero_steps_returns_parameters_unchanged() -> None:
    shared, inputs, _ = _tiny_problem()
    params = expand_params(shared, inputs.shape[0])
    adapted = tailor(params, inputs, _conservation_loss, steps=0, lr=1.0)
    for name in params:
        assert adapted[name] is params[name]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "normalized"])
def test_second_order_meta_gradient_matches_finite_differences(optimizer: str) -> None:
    shared, inputs, targets = _tiny_problem()
    lr = {"sgd": 0.3, "adam": 0.05, "normalized": 0.2}[optimizer]
    leaves = {name: value.clone().requires_grad_(True) for name, value in shared.items()}
    loss = _outer_loss(leaves, inputs, targets, lr, steps=2, optimizer=optimizer)
    analytic = torch.autograd.grad(loss, list(leaves.values()))
    step = 1e-6
    for (name, value), grad in zip(shared.items(), analytic, strict=True):
        numeric = torch.zeros_like(value)
        for index in range(value.numel()):
            plus = {k: v.clone() for k, v in shared.items()}
            minus = {k: v.clone() for k, v in shared.items()}
            plus[name].view(-1)[index] += step
            minus[name].view(-1)[index] -= step
            numeric.view(-1)[index] = (
                _outer_loss(plus, inputs, targets, lr, 2, optimizer)
                - _outer_loss(minus, inputs, targets, lr, 2, optimizer)
            ) / (2 * step)
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-8)


def test_first_order_gradient_differs_from_second_order() -> None:
    shared, inputs, targets = _tiny_problem()
    grads = []
    for second_order in (True, False):
        leaves = {name: value.clone().requires_grad_(True) for name, value in shared.items()}
        loss = _outer_loss(leaves, inputs, targets, 0.3, steps=2, second_order=second_order)
        grads.append(torch.autograd.grad(loss, leaves["weight"])[0])
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3)


def test_learnable_lr_gets_the_finite_difference_gradient() -> None:
    shared, inputs, targets = _tiny_problem()
    inner_lr = InnerLearningRate(0.2).double()
    loss = _outer_loss(shared, inputs, targets, inner_lr(), steps=2)
    (analytic,) = torch.autograd.grad(loss, inner_lr.log_lr)
    step = 1e-6
    log_lr = inner_lr.log_lr.detach()
    numeric = (
        _outer_loss(shared, inputs, targets, (log_lr + step).exp(), 2)
        - _outer_loss(shared, inputs, targets, (log_lr - step).exp(), 2)
    ) / (2 * step)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_examples_are_independent_and_module_weights_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    states = torch.randn(3, 6, 2)

    def rollout(params: dict[str, Tensor], batch: Tensor) -> Tensor:
        return vmap(lambda p, x: functional_call(model, p, (x,)))(params, batch)

    def loss_fn(params: dict[str, Tensor], batch: Tensor) -> Tensor:
        predicted = rollout(params, batch).pow(2).sum(-1)
        return (predicted - predicted[:, :1]).pow(2).mean(-1)

    shared = dict(model.named_parameters())
    alone = tailor(expand_params(shared, 1), states[:1], loss_fn, steps=3, lr=0.5)
    together = tailor(expand_params(shared, 3), states, loss_fn, steps=3, lr=0.5)
    altered = states.clone()
    altered[1:] = torch.randn(2, 6, 2) * 5
    with_others_changed = tailor(expand_params(shared, 3), altered, loss_fn, steps=3, lr=0.5)
    first_alone = rollout(alone, states[:1])[0]
    torch.testing.assert_close(rollout(together, states)[0], first_alone)
    torch.testing.assert_close(rollout(with_others_changed, altered)[0], first_alone)
    # Tailoring did change the prediction (otherwise the independence check proves nothing).
    untailored = rollout(expand_params(shared, 1), states[:1])[0]
    assert not torch.allclose(first_alone, untailored)
    for name, value in model.named_parameters():
        torch.testing.assert_close(value.detach(), before[name])


def test_per_example_learning_rates_sweep_along_the_batch() -> None:
    shared, inputs, _ = _tiny_problem()
    params = expand_params(shared, 2)
    rates = torch.tensor([0.0, 0.1], dtype=torch.float64)
    adapted = tailor(params, inputs[:1].expand(2, -1, -1), _conservation_loss, steps=1, lr=rates)
    torch.testing.assert_close(adapted["weight"][0], shared["weight"])
    assert not torch.allclose(adapted["weight"][1], shared["weight"])


def test_normalized_step_has_length_lr_per_example() -> None:
    shared, inputs, _ = _tiny_problem()
    params = expand_params(shared, inputs.shape[0])
    adapted = tailor(params, inputs, _conservation_loss, steps=1, lr=0.01, optimizer="normalized")
    moved = sum((adapted[n] - params[n]).reshape(inputs.shape[0], -1).pow(2).sum(1)
                for n in params).sqrt()
    torch.testing.assert_close(moved, torch.full_like(moved, 0.01))


def test_bad_arguments_raise_value_errors() -> None:
    shared, inputs, _ = _tiny_problem()
    params = expand_params(shared, inputs.shape[0])
    with pytest.raises(ValueError, match="steps"):
        tailor(params, inputs, _conservation_loss, steps=-1)
    with pytest.raises(ValueError, match="optimizer"):
        tailor(params, inputs, _conservation_loss, optimizer="rmsprop")
    with pytest.raises(ValueError, match="per-example losses"):
        tailor(params, inputs, lambda p, b: _conservation_loss(p, b).sum(), steps=1)
    with pytest.raises(ValueError, match="leading example dim"):
        tailor({"weight": shared["weight"], "bias": shared["bias"]}, inputs, _conservation_loss)
