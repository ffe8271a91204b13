"""The measurement behind ``model_env.horizon`` (benchmarks/model_env_horizon.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import SIZE, collect_ou, load_benchmark

from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel


@pytest.fixture(scope="module")
def horizon() -> object:
    return load_benchmark("model_env_horizon")


def test_a_perfect_model_tracks_every_step(horizon) -> None:
    recorded = np.random.default_rng(0).normal(size=(64, 20))
    errors = horizon.horizon_errors(recorded.copy(), recorded)
    np.testing.assert_allclose(errors["reward_r2"], 1.0)
    np.testing.assert_allclose(errors["return_r2"], 1.0)
    np.testing.assert_allclose(errors["reward_mae"], 0.0)
    assert horizon.recommended_horizon(errors["reward_r2"], 0.95) == 20


def test_the_recommendation_stops_at_the_first_step_that_loses_track(horizon) -> None:
    rng = np.random.default_rng(1)
    recorded = rng.normal(size=(4096, 12))
    predicted = recorded.copy()
    # From step 7 on (1-based) the prediction is the truth plus noise of its own size: R² ≈ 0;
    # step 10 alone is exact again, which must not extend the recommendation.
    predicted[:, 6:] += rng.normal(size=(4096, 6))
    predicted[:, 9] = recorded[:, 9]
    errors = horizon.horizon_errors(predicted, recorded)
    assert errors["reward_r2"][5] == pytest.approx(1.0)
    assert errors["reward_r2"][6] < 0.1
    assert horizon.recommended_horizon(errors["reward_r2"], 0.95) == 6
    assert horizon.recommended_horizon(np.array([0.5, 1.0]), 0.95) == 0
    # A return keeps the early, exact steps: its R² falls more slowly than a step's.
    assert errors["return_r2"][6] > errors["reward_r2"][6]


def test_a_model_without_a_reward_head_is_refused(horizon, tmp_path: Path) -> None:
    data = collect_ou(tmp_path / "data", 4, 2, 12)
    model = SVGWorldModel(SVGConfig(image_size=SIZE, width=4, g_dim=8, keypoints=4, rnn_size=16,
                                    rnn_layers=1, reward_head=False))
    config = {"data": {"path": data["path"], "n_past": 2, "n_future": 3,
                       "split_fractions": [0.5, 0.25, 0.25], "split_seed": 0}}
    checkpoint = save_checkpoint(tmp_path / "model.pt", model=model, optimizer=None, step=0,
                                 config=config, rng={})
    with pytest.raises(ValueError, match="expected a world model with a reward head"):
        horizon.imagined_and_recorded(str(checkpoint), "test", 4, 3, 0)
