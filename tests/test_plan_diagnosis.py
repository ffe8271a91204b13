"""benchmarks/plan_diagnosis.py and apex_plans.py: returns on the states a model imagines, read off
its frames, and on the simulator's."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from support import load_benchmark

import noether_control  # noqa: F401  (registers the env ids)
from noether_control.agents.oracle import true_dynamics_objective


@pytest.fixture(scope="module")
def plan_diagnosis() -> object:
    return load_benchmark("plan_diagnosis")


class SimulatorImagination:
    """A stand-in world model that imagines exactly: from the true states it was told, it
    renders the frames the simulator would give under each candidate (the function under test
    only decodes frames and reads them, so a model that decodes the truth must give the true
    returns)."""

    def __init__(self, env: gym.vector.VectorEnv, states: np.ndarray) -> None:
        self.system = env.unwrapped.system
        self.params = env.unwrapped.physical_parameters
        self.states = states
        self.episode = -1

    def encode_context(self, frames: torch.Tensor, actions: torch.Tensor) -> SimpleNamespace:
        self.episode += 1
        return SimpleNamespace(expand=lambda samples: samples)

    def rollout(self, samples: int, candidates: torch.Tensor, decode: bool) -> SimpleNamespace:
        states = np.repeat(self.states[self.episode][None], samples, 0)
        params = np.repeat(self.params[self.episode][None], samples, 0)
        frames = []  # as SVGWorldModel.rollout: frame k is the state action k is applied to
        for k in range(candidates.shape[1]):
            frames.append(torch.as_tensor(self.system.render_pixels(states)))
            states = self.system.step(states, candidates[:, k].double().numpy(), params)
        stacked = torch.stack(frames, 1).permute(0, 1, 4, 2, 3).float() / 255
        return SimpleNamespace(frames=stacked)


def test_a_model_that_imagines_the_truth_gets_the_true_returns(plan_diagnosis, monkeypatch
                                                               ) -> None:
    monkeypatch.setattr(plan_diagnosis, "ANGLE_GRID", np.linspace(-np.pi, np.pi, 3601))
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=2,
                       vectorization_mode="vector_entry_point", image_size=64)
    env.reset(seed=[3, 4])
    unwrapped = env.unwrapped
    previous = np.array([[2.9, 1.0], [-0.4, -2.0]])
    states = unwrapped.system.step(previous, np.array([[0.5], [-1.0]]),
                                   unwrapped.physical_parameters)
    context = torch.as_tensor(np.stack([unwrapped.system.render_pixels(previous),
                                        unwrapped.system.render_pixels(states)], 1))
    generator = torch.Generator().manual_seed(0)
    candidates = (torch.rand(2, 6, 8, 1, generator=generator) * 4 - 2)
    model = SimulatorImagination(env, states)
    imagined = plan_diagnosis.imagined_returns(model, context, torch.zeros(2, 1, 1), candidates,
                                               env)
    true = true_dynamics_objective(unwrapped.system, states, unwrapped.physical_parameters,
                                   "cpu")(candidates.double()).numpy()
    np.testing.assert_allclose(imagined, true, atol=0.15)
    assert np.ptp(true, axis=1).min() > 1.0  # the candidates differ by more than the tolerance
    env.close()


def test_apex_plans_true_states_give_the_simulators_returns() -> None:
    apex_plans = load_benchmark("apex_plans")
    env = gym.make_vec("NoetherControl/PixelPendulum-v0", num_envs=2,
                       vectorization_mode="vector_entry_point", image_size=64)
    env.reset(seed=[5, 6])
    unwrapped = env.unwrapped
    start = np.array([[1.2, 0.3], [-2.5, 4.0]])
    plans = torch.rand(2, 3, 7, 1, generator=torch.Generator().manual_seed(1)) * 4 - 2
    states = apex_plans.true_states(env, start, plans)
    assert states.shape == (2, 3, 7, 2)
    np.testing.assert_array_equal(states[:, :, 0], np.repeat(start[:, None], 3, 1))
    rewards = unwrapped.system.reward(states.reshape(-1, 2), plans.reshape(-1, 1).double().numpy())
    true = true_dynamics_objective(unwrapped.system, start, unwrapped.physical_parameters,
                                   "cpu")(plans.double()).numpy()
    np.testing.assert_allclose(rewards.reshape(2, 3, 7).sum(-1), true, rtol=1e-10)
    env.close()


def test_apex_plans_reads_its_seeds_or_says_what_it_expected() -> None:
    apex_plans = load_benchmark("apex_plans")
    assert apex_plans.seed_list("1022,1044") == [1022, 1044]
    with pytest.raises(argparse.ArgumentTypeError,
                       match="expected integers separated by commas, got '1022,a'"):
        apex_plans.seed_list("1022,a")
