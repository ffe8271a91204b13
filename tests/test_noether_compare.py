"""The comparison report's statistics: paired-difference intervals and the linear energy probe."""

from __future__ import annotations

import pytest
import torch

from noether_control.experiments.compare import (
    linear_probe_r2,
    paired_difference,
    targets,
    variance_split,
)


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
