"""The discover command end to end (tiny settings), and the usefulness-scoring models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import noether_control
from noether_control.discovery.data import generate
from noether_control.discovery.discover import DiscoverConfig, load_data, run, search
from noether_control.discovery.scoring import (
    HNN,
    MLP,
    Batch,
    ScoringConfig,
    apply_mlp,
    conservation_loss,
    formula_quantity,
    pooled_scale,
    rmse,
    sympy_quantity,
    tailored_rollout,
)
from noether_control.noether import expand_params, tailor
from noether_control.runtime import seed_everything, to_dataclass

TINY = [
    "experiment=smoke",
    "search.fit_steps=15",
    "scoring.hidden=8",
    "scoring.pretrain_steps=10",
    "scoring.max_scored=3",
    "scoring.meta_steps=1",
    "plot=false",
]


def _compose(overrides: list[str]):
    config_dir = Path(noether_control.__file__).parent / "conf" / "commands" / "discover"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="discover", overrides=overrides)


def test_discover_on_a_measured_file_writes_results(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate("spring", 8, 0.02, np.random.default_rng(0), points_per_trajectory=20)
    rows = ["% trial time x y"]  # a wrong header, overridden by data.columns
    rng = np.random.default_rng(1)
    for trial, (states, times) in enumerate(zip(data.states, data.times, strict=True)):
        keep = np.sort(rng.choice(len(times), 16, replace=False))  # dropped samples
        rows += [f"{trial} {t:.5f} {q:.6f} {p:.6f}" for t, (q, p) in
                 zip(times[keep], states[keep], strict=True)]
    path = tmp_path / "spring.txt"
    path.write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    cfg = _compose([*TINY, f"data.path={path}", "data.columns=[trial,t,q,p]",
                    "data.trajectory=trial", "data.time=t", "data.units={q: m, p: 'kg*m/s'}",
                    "data.energy='q**2 + p**2'", "plot=true"])
    run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["n_candidates"] > 100 and results["n_conserved"] >= 1
    best = results["formulas"][0]
    assert set(best) >= {"expr", "params", "variance_ratio", "rmse", "param_units"}
    assert best["expr"] in {"k0*p**2 + q**2", "k0*q**2 + p**2", "-k0*p**2 + q**2",
                            "-k0*q**2 + p**2", "k0**2*p**2 + q**2", "k0**2*q**2 + p**2"}
    # 8 trajectories: the constants' jackknife leaves out blocks within them.
    fitted = best["params_before_meta"] or best["params"]
    assert set(best["fit_stderr"]) == set(best["fit_interval"]) == set(fitted)
    for name, (low, high) in best["fit_interval"].items():
        assert 0 < best["fit_stderr"][name] < 0.1 * abs(fitted[name])
        assert low < fitted[name] < high
    assert set(results["rmse"]) == {"mlp", "noether", "true_energy", "hnn"}
    assert all(isinstance(v, float) for v in results["rmse"].values())
    assert (tmp_path / "quantity.png").stat().st_size > 1000


def test_a_short_measurement_is_reported_without_constant_uncertainty(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One trajectory of 20 samples: 10 train, one block of 10, so no jackknife; the run must
    # still write its results (it used to fail after the search).
    data = generate("pendulum", 2, 0.01, np.random.default_rng(0), points_per_trajectory=20)
    path = tmp_path / "one.csv"
    path.write_text("t,q,p\n" + "".join(f"{t},{q},{p}\n" for t, (q, p) in
                                         zip(data.times[0], data.states[0], strict=True)))
    monkeypatch.chdir(tmp_path)
    run(_compose([*TINY, "score=false", f"data.path={path}", "search.random=box",
                  "data.units={q: rad, p: 'rad/s'}"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["formulas"] and all(f["fit_stderr"] is None for f in results["formulas"])
    assert "no uncertainty for the constants" in capsys.readouterr().out
    with pytest.raises(ValueError, match="uncertainty_block: expected >= 1"):
        run(_compose([*TINY, f"data.path={path}", "search.uncertainty_block=0"]))


def test_a_bad_energy_is_refused_before_the_search(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = generate("spring", 4, 0.0, np.random.default_rng(0), points_per_trajectory=10)
    path = tmp_path / "spring.csv"
    path.write_text("trial,t,q,p\n" + "".join(
        f"{trial},{t},{q},{p}\n" for trial, (states, times) in
        enumerate(zip(data.states, data.times, strict=True))
        for t, (q, p) in zip(times, states, strict=True)))
    monkeypatch.chdir(tmp_path)
    searched = []
    monkeypatch.setattr("noether_control.discovery.discover.search",
                        lambda *args: searched.append(args))
    cfg = _compose([*TINY, "score=false", f"data.path={path}", "data.trajectory=trial",
                    "data.units={q: m, p: 'kg*m/s'}", "data.energy='q**2 + pp**2'"])
    with pytest.raises(ValueError, match=r"data.energy .*unknown symbols \['pp'\]"):
        run(cfg)
    assert not searched


def test_refitting_near_the_threshold_merges_reparametrised_twins() -> None:
    # Spring data of seed 2: after 100 Adam steps q**2 - p**2/k is still short of its optimum
    # (c = 0.883 instead of 0.965), so it reported another constant and did not merge.
    config = to_dataclass(DiscoverConfig, _compose(["system=spring", "seed=2"]))
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    found = {}
    for refine_steps in (0, 300):
        search_config = replace(config.search, ops=["square", "add", "sub", "mul", "div"],
                                max_params=1, refine_steps=refine_steps)
        rng = seed_everything(2)
        train, _ = load_data(config, rng).split(config.test_fraction, rng)
        survivors = search(train, search_config, rng, torch.device("cpu")).survivors
        constants = []
        for candidate in survivors:  # c of q**2 + c*p**2, whatever the form: g(0,1)-g / g(1,0)-g
            g = formula_quantity(candidate.formula, torch.as_tensor(candidate.params))(corners)
            constants.append(float((g[2] - g[0]) / (g[1] - g[0])))
        found[refine_steps] = sorted(constants)
    assert found[0] == pytest.approx([0.883, 0.9653], abs=1e-3)
    assert found[300] == pytest.approx([0.9653], abs=2e-4)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="DiscoverConfig"):
        run(_compose(["experiment=smoke", "+search.nonsense=1"]))


def test_hnn_vector_field_is_the_symplectic_gradient() -> None:
    torch.manual_seed(0)
    model = HNN(2, 8).double()
    state = torch.randn(5, 2, dtype=torch.float64)
    field = model(state)
    energy_gradient = torch.func.vmap(torch.func.grad(
        lambda x: model.energy(x.unsqueeze(0)).squeeze()))(state)
    torch.testing.assert_close(field, torch.stack([energy_gradient[:, 1],
                                                   -energy_gradient[:, 0]], 1))
    # dH/dt = grad H . F = 0 exactly for the learned H.
    assert torch.allclose((energy_gradient * field).sum(1), torch.zeros(5, dtype=torch.float64),
                          atol=1e-12)


def test_true_energy_tailoring_lowers_the_conservation_loss() -> None:
    torch.manual_seed(0)
    data = generate("pendulum", 4, 0.0, np.random.default_rng(0), points_per_trajectory=12)
    batch = Batch.from_trajectories(data, None, torch.float32, torch.device("cpu"))
    mlp = MLP([2, 16, 16, 2])
    energy = sympy_quantity(data.energy, data.names)
    loss_fn = conservation_loss(energy, pooled_scale(energy, batch))
    params = expand_params(dict(mlp.named_parameters()), 4)
    before = loss_fn(params, batch)
    after = loss_fn(tailor(params, batch, loss_fn, steps=3, lr=1e-4), batch)
    assert torch.all(after < before)
    per_example = {k: v.detach() for k, v in params.items()}
    torch.testing.assert_close(apply_mlp(per_example, batch.states[:, 0]),
                               mlp(batch.states[:, 0]))


def _pendulum_scoring_setup(lengths: tuple[int, ...] = (12, 12, 12)):
    torch.manual_seed(0)
    data = generate("pendulum", len(lengths), 0.02, np.random.default_rng(0),
                    points_per_trajectory=max(lengths))
    data.states = [states[:n] for states, n in zip(data.states, lengths, strict=True)]
    data.times = [times[:n] for times, n in zip(data.times, lengths, strict=True)]
    batch = Batch.from_trajectories(data, None, torch.float64, torch.device("cpu"))
    return data, batch, MLP([2, 8, 8, 2]).double()


def test_gauss_newton_meta_gradient_matches_finite_differences() -> None:
    """Meta-tailoring differentiates the whole damped Gauss-Newton step, weights included."""
    _, batch, mlp = _pendulum_scoring_setup()
    tailored = ["layers.2.weight", "layers.2.bias"]
    params = {name: value.detach().clone() for name, value in mlp.named_parameters()}
    k = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)

    def outer(constant: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        def energy(x):
            return x[..., 1] ** 2 - constant[0] * torch.cos(x[..., 0])
        predicted = tailored_rollout(mlp, weights, energy, pooled_scale(energy, batch), batch,
                                     1.0, tailored, second_order=True)
        return batch.error(predicted).mean()

    weight = params["layers.0.weight"].requires_grad_(True)
    grad_k, grad_w = torch.autograd.grad(outer(k, params), [k, weight])
    step = 1e-5
    for constant_step, weight_step, analytic in (
            (step, 0.0, float(grad_k[0])), (0.0, step, float(grad_w[0, 0]))):
        values = []
        for sign in (1.0, -1.0):
            shifted = {**params, "layers.0.weight": weight.detach().clone()}
            shifted["layers.0.weight"][0, 0] += sign * weight_step
            values.append(float(outer(k.detach() + sign * constant_step, shifted).detach()))
        numeric = (values[0] - values[1]) / (2 * step)
        assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_gauss_newton_step_of_an_example_does_not_depend_on_the_others_padding() -> None:
    data, batch, mlp = _pendulum_scoring_setup((15, 40))
    alone = Batch.from_trajectories(data.subset([0]), None, torch.float64, torch.device("cpu"))
    energy = sympy_quantity(data.energy, data.names)
    scale = pooled_scale(energy, batch)
    tailored = ["layers.2.weight", "layers.2.bias"]
    for lr in (1e-3, 1.0):
        padded = tailored_rollout(mlp, None, energy, scale, batch, lr, tailored)[0, :15]
        single = tailored_rollout(mlp, None, energy, scale, alone, lr, tailored)[0]
        torch.testing.assert_close(padded.detach(), single.detach())


def test_rmse_counts_the_predicted_states_not_the_given_start() -> None:
    _, batch, _ = _pendulum_scoring_setup()
    predicted = batch.states.clone()
    predicted[:, 1:] += 0.5  # every predicted state off by 0.5, the start exact
    assert rmse(batch, predicted) == pytest.approx(0.5)
    assert batch.error(predicted).tolist() == pytest.approx([0.25] * 3)


def test_gauss_newton_tailoring_step_conserves_the_true_energy_better() -> None:
    torch.manual_seed(0)
    data = generate("pendulum", 4, 0.0, np.random.default_rng(0), points_per_trajectory=12)
    batch = Batch.from_trajectories(data, None, torch.float64, torch.device("cpu"))
    mlp = MLP([2, 16, 16, 2]).double()
    energy = sympy_quantity(data.energy, data.names)
    scale = pooled_scale(energy, batch)
    tailored = ["layers.2.weight", "layers.2.bias"]
    losses = []
    for lr in (1e-3, 1.0, 100.0):
        predicted = tailored_rollout(mlp, None, energy, scale, batch, lr, tailored,
                                     optimizer="gauss_newton").detach()
        values = energy(predicted)
        losses.append((values - values[:, :1]).pow(2).mean(1) / scale)
    with torch.no_grad():
        plain = energy(tailored_rollout(mlp, None, None, None, batch, 0.0, tailored))
    before = (plain - plain[:, :1]).pow(2).mean(1) / scale
    assert all(torch.all(loss < before) for loss in losses)
    # Less damping (a larger rate) moves further towards the Gauss-Newton solution.
    assert losses[1].mean() < 0.5 * losses[0].mean()


def test_scoring_config_rejects_unknown_tailoring_steps() -> None:
    with pytest.raises(ValueError, match="inner_optimizer"):
        ScoringConfig(inner_optimizer="newton")
