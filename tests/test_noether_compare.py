"""The comparison report's statistics: paired-difference intervals and the linear energy probe."""

from __future__ import annotations

import pytest
import torch

from noether_control.experiments.compare import (
    embedding_along_truth,
    first_conserved_step,
    linear_probe_r2,
    paired_difference,
    quantity_groups,
    targets,
    variance_split,
    what_g_encodes,
)
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.noether.config import NoetherConfig
from noether_control.noether.embedding import EmbeddingConfig
from noether_control.noether.meta import NoetherModule


def test_paired_difference_interval_on_known_data() -> None:
    # Horizon 1: differences 1..5: mean 3, s.d. √2.5, s.e. √0.5, t(0.975, 4) = 2.776445.
    # Horizon 2: every difference is exactly -0.5: a zero-width interval.
    other = torch.tensor([[10.0, 2.0], [10.0, 4.0], [10.0, 6.0], [10.0, 8.0], [10.0, 10.0]])
    reference = other + torch.tensor([[1.0, -0.5], [2.0, -0.5], [3.0, -0.5], [4.0, -0.5],
                                      [5.0, -0.5]])
    result = paired_difference(reference, other, 0.95)
    half = 2.776445 * (2.5**0.5) / 5**0.5
    assert result["mean"] == pytest.approx([3.0, -0.5])
    assert result["low"] == pytest.approx([3.0 - half, -0.5], rel=1e-6)
    assert result["high"] == pytest.approx([3.0 + half, -0.5], rel=1e-6)
    assert result["relative"] == pytest.approx([0.3, -0.5 / 6.0])
    # A lower confidence level gives a narrower interval around the same mean.
    narrow = paired_difference(reference, other, 0.5)
    assert narrow["high"][0] - narrow["low"][0] < result["high"][0] - result["low"][0]


def test_paired_difference_clusters_windows_of_one_episode() -> None:
    # Two windows per episode that err alike: as a cluster they are one observation, not two.
    episode_effect = torch.tensor([1.0, -1.0, 2.0, 0.5])
    difference = episode_effect.repeat_interleave(2)[:, None] + torch.tensor(
        [0.01, -0.01] * 4)[:, None]
    other = torch.ones(8, 1)
    clusters = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    windows = paired_difference(other + difference, other)
    episodes = paired_difference(other + difference, other, clusters=clusters)
    assert windows["clusters"] == 8 and episodes["clusters"] == 4
    assert episodes["mean"] == pytest.approx(windows["mean"])
    # equal-size clusters: the robust s.e. is the s.e. of the 4 episode means
    means = episode_effect
    assert episodes["stderr"][0] == pytest.approx(float(means.std() / 2), rel=1e-9)
    assert episodes["high"][0] - episodes["low"][0] > 1.5 * (windows["high"][0] - windows["low"][0])
    with pytest.raises(ValueError, match="2 clusters"):
        paired_difference(other, other, clusters=torch.zeros(8, dtype=torch.long))


def test_paired_difference_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(torch.zeros(4, 3), torch.ones(4, 3), 1.5)


def test_linear_probe_r2() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    target = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 4.0
    assert linear_probe_r2(features[:100], target[:100], features[100:], target[100:]) == \
        pytest.approx(1.0)
    noisy = target + torch.randn(200, generator=generator, dtype=torch.float64) * target.std()
    r2 = linear_probe_r2(features[:100], noisy[:100], features[100:], noisy[100:])
    assert 0.2 < r2 < 0.8  # about half the variance is noise
    unrelated = torch.randn(200, generator=generator, dtype=torch.float64)
    assert linear_probe_r2(features[:100], unrelated[:100], features[100:], unrelated[100:]) < 0.1
    with pytest.raises(ValueError, match="varies"):
        linear_probe_r2(features[:100], target[:100], features[100:], torch.ones(100))


def test_linear_probe_r2_pools_several_targets_by_their_variance() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(400, 2, generator=generator, dtype=torch.float64)
    exact = features @ torch.tensor([1.0, 2.0], dtype=torch.float64)
    noise = torch.randn(400, generator=generator, dtype=torch.float64)
    both = torch.stack([exact, noise * exact.std()], 1)  # equal variances: half is explained
    assert linear_probe_r2(features[:200], both[:200], features[200:], both[200:]) == \
        pytest.approx(0.5, abs=0.1)
    small_noise = torch.stack([exact, 0.01 * noise], 1)  # the noise's share is 1e-4 of it
    assert linear_probe_r2(features[:200], small_noise[:200], features[200:],
                           small_noise[200:]) == pytest.approx(1.0, abs=1e-3)


def _pendulum_truth(windows: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(windows, 1, generator=generator, dtype=torch.float64) * 6.0 \
        + torch.linspace(0, 2, steps, dtype=torch.float64)
    velocity = torch.randn(windows, steps, generator=generator, dtype=torch.float64)
    return {"states": torch.stack([theta, velocity], -1),
            "energy": 0.5 * velocity**2 + 5.0 * theta.cos(),
            "actions": torch.randn(windows, steps, 1, generator=generator, dtype=torch.float64)}


def test_quantity_groups_shapes_and_contents() -> None:
    truth = _pendulum_truth(5, 7, seed=0)
    groups = quantity_groups(truth)
    theta, velocity = truth["states"].unbind(-1)
    assert set(groups) == {"angle", "velocity", "energy", "torque", "torque_sum", "state_basis",
                           "step", "all"}
    torch.testing.assert_close(groups["torque_sum"][:, 2], truth["actions"][:, :3].sum(1))
    torch.testing.assert_close(groups["angle"], torch.stack([theta.cos(), theta.sin()], -1))
    torch.testing.assert_close(groups["velocity"], torch.stack([velocity, velocity**2], -1))
    assert groups["state_basis"].shape == (5, 7, 11) and groups["step"].shape == (5, 7, 6)
    assert groups["step"][:, 0].sum() == 0 and (groups["step"][:, 1:].sum(-1) == 1).all()
    assert groups["all"].shape == (5, 7, 11 + 1 + 1 + 1 + 6)
    with_physics = quantity_groups(truth, torch.arange(10.0).reshape(5, 2))
    assert (with_physics["physics"][:, 3] == torch.arange(10.0).reshape(5, 2)).all()
    assert with_physics["all"].shape[-1] == groups["all"].shape[-1] + 2
    with pytest.raises(ValueError, match=r"expected \(N, T, 2L\)"):
        quantity_groups({**truth, "states": truth["states"][..., :1]})
    with pytest.raises(ValueError, match=r"constants: expected \(5, c\)"):
        quantity_groups(truth, torch.zeros(4, 2))


def test_what_g_encodes_names_the_quantity_an_embedding_tracks() -> None:
    fit, test = _pendulum_truth(40, 12, seed=1), _pendulum_truth(40, 12, seed=2)
    fit_constants = torch.rand(40, 1, generator=torch.Generator().manual_seed(3)) + 1
    test_constants = torch.rand(40, 1, generator=torch.Generator().manual_seed(4)) + 1

    def encode(truth: dict[str, torch.Tensor], constants: torch.Tensor,
               kind: str) -> torch.Tensor:
        theta = truth["states"][..., 0]
        if kind == "angle":  # an embedding of the angle: the pendulum's position, not conserved
            return torch.stack([theta.cos(), 2.0 * theta.sin()], -1)
        if kind == "energy":
            return truth["energy"][..., None]
        if kind == "torque_sum":  # the work of the actions, with a constant lever
            return 3.0 * truth["actions"].cumsum(1)
        if kind == "step":  # a transient of the predictor's state, the same in every window
            return torch.linspace(0, 1, theta.shape[1], dtype=torch.float64)[None, :, None] \
                .expand(theta.shape[0], -1, 2) ** 2
        return constants.double()[:, None, :].expand(-1, theta.shape[1], -1)  # physics

    for kind, expected in (("angle", "angle"), ("energy", "energy"), ("step", "step"),
                           ("torque_sum", "torque_sum"), ("physics", "physics")):
        found = what_g_encodes(
            encode(fit, fit_constants, kind), quantity_groups(fit, fit_constants),
            encode(test, test_constants, kind), quantity_groups(test, test_constants))
        assert found[expected]["r2"] == pytest.approx(1.0, abs=1e-6), kind
        assert found["all"]["r2"] == pytest.approx(1.0, abs=1e-6), kind
        # the energy holds cos θ, so the angle and the energy explain part of each other
        others = [name for name in ("angle", "energy", "step", "torque_sum", "physics")
                  if name != expected and {name, expected} != {"angle", "energy"}]
        assert all(found[name]["r2"] < 0.5 for name in others), (kind, found)
    assert found["physics"]["within_fraction"] == 0.0  # constant along every window
    assert found["step"]["within_fraction"] == pytest.approx(1.0)  # the same in every window
    assert 0.0 < found["angle"]["within_fraction"] < 1.0


def test_targets_follow_the_measured_intervals() -> None:
    def diff(relative: float, high: float) -> dict[str, list[float]]:
        return {"relative": [relative] * 25, "high": [high] * 25, "low": [high - 1.0] * 25}

    document = {
        "reference": "noether", "horizon": 25,
        "paired": {"mse": {"noether − baseline": diff(-0.06, -0.001),
                           "noether − control": diff(-0.06, 0.002)}},
        "runs": {"noether": {"conservation_loss": {"before": 1.0, "after": 0.05},
                             "motion": [0.9, 1.1]}},
        "true_motion": [1.0, 1.0],
    }
    checks = targets(document)
    assert checks["mse_h25_5pct_lower_than_baseline"] is True
    assert checks["mse_h25_5pct_lower_than_control"] is False  # the interval includes zero
    assert checks["conservation_cut_10x"] is True
    assert checks["motion_within_10pct_of_true"] is True
    document["runs"]["noether"]["motion"] = [0.7, 1.0]  # a damped prediction: 15 % slower
    assert targets(document)["motion_within_10pct_of_true"] is False


def test_variance_split_separates_conserved_from_varying_embeddings() -> None:
    levels = torch.arange(4.0)[:, None, None]
    conserved = levels.expand(4, 6, 2)  # constant along each trajectory, distinct between
    split = variance_split(conserved)
    assert split["within"] == 0 and split["between"] > 0 and split["within_fraction"] == 0
    shared = torch.linspace(0, 1, 6)[None, :, None].expand(4, 6, 2)  # one curve for all
    assert variance_split(shared)["within_fraction"] == pytest.approx(1.0)
    mixed = conserved + 0.5 * shared
    fraction = variance_split(mixed)["within_fraction"]
    assert 0 < fraction < 1
    assert variance_split(100 * mixed)["within_fraction"] == pytest.approx(fraction)
    with pytest.raises(ValueError, match=r"expected \(N >= 2, T >= 2, k\)"):
        variance_split(conserved[:1])


@pytest.mark.parametrize(("source", "include_context"),
                         [("hidden", False), ("frames", False), ("frames", True)])
def test_first_conserved_step_aligns_truth_with_what_the_loss_reads(
    source: str, include_context: bool,
) -> None:
    torch.manual_seed(0)
    # pixel feedback: the predictor reads its predicted frames as the teacher-forced pass reads
    # the true ones (with latent feedback it reads the code, not the decoded frame re-encoded)
    model = SVGWorldModel(SVGConfig(image_size=32, channels=1, action_dim=1, width=4, g_dim=16,
                                    rnn_size=8, rnn_layers=1, action_embed_dim=2,
                                    feedback="pixels"))
    noether = NoetherModule(NoetherConfig(
        enabled=True, embedding=EmbeddingConfig(input=source, dim=2, width=4),
        include_context=include_context), model.config)
    n_past, horizon = 3, 5
    generator = torch.Generator().manual_seed(1)
    frames = torch.rand(2, n_past + horizon, 1, 32, 32, generator=generator)
    actions = torch.rand(2, n_past + horizon, 1, generator=generator)
    context = frames[:, :n_past]
    with torch.no_grad():
        rollout = noether.rollout(model, noether.initial_params(model, 2, context), context,
                                  actions, horizon)
        conserved = noether.embed(rollout, context, actions)
        # the model's own prediction taken as the truth: g along it, from the first step the
        # loss reads, is the sequence the conservation loss reads
        window = {"frames": torch.cat([context, rollout.frames], 1), "actions": actions,
                  "states": torch.zeros(2, n_past + horizon, 2),
                  "energy": torch.zeros(2, n_past + horizon)}
        along, _, _ = embedding_along_truth(model, noether, window, n_past)
    start = first_conserved_step(noether, n_past)
    torch.testing.assert_close(along[:, start:start + conserved.shape[1]], conserved,
                               atol=1e-6, rtol=1e-5)
    assert not torch.allclose(along[:, start + 1], conserved[:, 0], atol=1e-4)
