"""The true-law oracle: the energy balance of real pendulum trajectories, the angle probe, and
tailoring on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import load_benchmark
from torch import Tensor

from noether_control.envs.dynamics import pendulum_step
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule
from noether_control.noether.oracle import (
    AngleProbe,
    PendulumPhysics,
    energy_balance_residual,
    oracle_loss,
    oracle_tailor,
    wrap_angle,
)


def simulate(episodes: int = 8, steps: int = 30, seed: int = 0) -> tuple[Tensor, Tensor]:
    """True angles ``(E, steps + 1)`` and torques ``(E, steps)`` of the default pendulum."""
    rng = np.random.default_rng(seed)
    states = np.stack([rng.uniform(-math.pi, math.pi, episodes), rng.uniform(-1, 1, episodes)], 1)
    torques = rng.uniform(-2, 2, (episodes, steps))
    angles = [states[:, 0].copy()]
    for t in range(steps):
        states = pendulum_step(states, torques[:, t:t + 1], 10.0, 1.0, 1.0, 0.0, dt=0.05,
                               max_speed=8.0, max_torque=2.0)
        angles.append(states[:, 0].copy())
    return torch.tensor(np.stack(angles, 1)), torch.tensor(torques)


def test_true_trajectories_keep_the_energy_balance() -> None:
    angles, torques = simulate()
    physics = PendulumPhysics()
    true = energy_balance_residual(angles, torques, physics)
    unforced = energy_balance_residual(angles, torch.zeros_like(torques), physics)
    reversed_torques = energy_balance_residual(angles, -torques, physics)
    # the torque's work is accounted for, with the right sign, to a small remainder
    assert float(true.mean()) < 0.1 * float(unforced.mean())
    assert float(true.mean()) < 0.03 * float(reversed_torques.mean())
    other_gravity = energy_balance_residual(angles, torques, PendulumPhysics(gravity=12.0))
    assert float(true.mean()) < 0.1 * float(other_gravity.mean())
    # held to the first energy, the balance holds as well on the truth, and a pendulum that
    # stops (its last angles frozen) violates it from the moment it stops
    anchored = energy_balance_residual(angles, torques, physics, "start")
    stopped = angles.clone()
    stopped[:, 15:] = stopped[:, 15:16]
    assert float(anchored.mean()) < 0.1 * float(
        energy_balance_residual(stopped, torques, physics, "start").mean())
    assert float(anchored.mean()) < 0.1 * float(
        energy_balance_residual(angles, torch.zeros_like(torques), physics, "start").mean())
    with pytest.raises(ValueError, match="mode: expected one of"):
        energy_balance_residual(angles, torques, physics, "last")
    wrapped = energy_balance_residual(wrap_angle(angles + 2 * math.pi), torques, physics)
    torch.testing.assert_close(wrapped, true)
    with pytest.raises(ValueError, match=r"actions: expected one torque per frame but the last"):
        energy_balance_residual(angles, torques[:, 1:], physics)
    with pytest.raises(ValueError, match=r"angles: expected \(B, T >= 4\)"):
        energy_balance_residual(angles[:, :3], torques[:, :2], physics)


class AngleFeatures(torch.nn.Module):
    """An encoder whose code holds (cos θ, sin θ) of a one-pixel 'frame' (plus noise features)."""

    def encode(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        theta = frames.flatten(1)[:, 0] * 2 * math.pi
        code = torch.stack([2 * torch.cos(theta) + 1, -torch.sin(theta), frames.flatten(1)[:, 1]],
                           1)
        return code, []


def test_angle_probe_reads_the_angle_through_the_encoder() -> None:
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(64, 1, 2, 1, generator=generator, dtype=torch.float64)
    theta = frames.flatten(1)[:, 0] * 2 * math.pi
    encoder = AngleFeatures()
    probe = AngleProbe.fit(encoder, frames, theta)  # type: ignore[arg-type]
    assert probe.r2(encoder, frames, theta) == pytest.approx(1.0, abs=1e-9)  # type: ignore[arg-type]
    read = probe.angles(encoder, frames.reshape(8, 8, 1, 2, 1))  # type: ignore[arg-type]
    torch.testing.assert_close(wrap_angle(read - theta.reshape(8, 8)),
                               torch.zeros(8, 8, dtype=torch.float64), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="one angle each"):
        AngleProbe.fit(encoder, frames, theta[:3])  # type: ignore[arg-type]


def tiny(tailored: str = "lstm") -> tuple[SVGWorldModel, NoetherModule]:
    torch.manual_seed(0)
    config = SVGConfig(image_size=32, channels=1, action_dim=1, width=4, g_dim=16, rnn_size=8,
                       rnn_layers=1, action_embed_dim=2)
    model = SVGWorldModel(config)
    torch.nn.init.normal_(model.predictor_out.weight, std=0.1)
    noether = NoetherModule(NoetherConfig(enabled=True, embedding=EmbeddingConfig(dim=2, width=4),
                                          tailored=tailored), config)
    return model, noether


def test_oracle_tailoring_lowers_the_energy_balance_violation_of_the_prediction() -> None:
    model, noether = tiny()
    generator = torch.Generator().manual_seed(1)
    frames = torch.rand(4, 9, 1, 32, 32, generator=generator)
    actions = torch.rand(4, 9, 1, generator=generator) * 4 - 2
    probe = AngleProbe.fit(model, frames.flatten(0, 1), torch.randn(36, generator=generator))
    physics = PendulumPhysics()
    context, horizon = frames[:, :3], 6

    def violation(params: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            rollout = noether.rollout(model, params, context, actions, horizon)
            return oracle_loss(model, probe, physics, context, rollout.frames, actions)

    before = violation(noether.initial_params(model, 4, context))
    params = oracle_tailor(model, noether, probe, physics, context, actions, horizon, steps=5,
                           lr=0.05)
    after = violation(params)
    assert bool((after < before).all())
    # the normalisation layers' (γ, β) are tailored the same way
    _, norm = tiny("norm")
    initial = norm.initial_params(model, 4, context)
    moved = oracle_tailor(model, norm, probe, physics, context, actions, horizon, steps=1,
                          lr=0.05)
    assert set(moved) == set(initial) and any(
        not torch.equal(moved[name], initial[name]) for name in initial)
    with pytest.raises(ValueError, match=r"context: expected >= 2 frames"):
        oracle_loss(model, probe, physics, context[:, :1], frames[:, 3:5], actions)
    with pytest.raises(ValueError, match=r"context: expected >= 3 frames for mode 'start'"):
        oracle_loss(model, probe, physics, context[:, :2], frames[:, 3:5], actions, "start")
    anchored = oracle_tailor(model, noether, probe, physics, context, actions, horizon, steps=5,
                             lr=0.05, mode="start")
    with torch.no_grad():
        start_before = oracle_loss(model, probe, physics, context, noether.rollout(
            model, noether.initial_params(model, 4, context), context, actions, horizon).frames,
            actions, "start")
        start_after = oracle_loss(model, probe, physics, context, noether.rollout(
            model, anchored, context, actions, horizon).frames, actions, "start")
    assert bool((start_after < start_before).all())


def test_true_future_tailoring_lowers_the_error_on_the_frames_it_sees() -> None:
    bench = load_benchmark("noether_oracle")
    model, _ = tiny()
    generator = torch.Generator().manual_seed(2)
    frames = torch.rand(4, 9, 1, 32, 32, generator=generator)
    batch = {"frames": frames, "actions": torch.rand(4, 9, 1, generator=generator) * 4 - 2}
    probe = AngleProbe.fit(model, frames.flatten(0, 1), torch.randn(36, generator=generator))
    result = bench.run_setting(model, probe, PendulumPhysics(), [batch], 3, 6, "norm", 0.05,
                               [5], "future", 2)
    before, after = result["mse"][0], result["mse"][5]
    # the inner loss is the true error of the first 2 predicted frames: it must fall there
    assert result["residual"][5] < result["residual"][0]
    assert float(after[:, :2].mean()) < float(before[:, :2].mean())
    assert result["residual"][0] == pytest.approx(float(before[:, :2].mean()), rel=1e-5)
    assert result["true_residual"] == 0.0  # the truth has no error against itself
    with pytest.raises(ValueError, match=r"--oracle-frames: expected 1 … 6, got 7"):
        bench.true_future_loss(frames[:, 3:], frames[:, 3:], 7)
