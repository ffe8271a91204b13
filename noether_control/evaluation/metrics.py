"""Per-frame image-quality metrics for video prediction, batched over any leading dimensions.

Every metric takes a prediction and a target of the same shape ``(..., C, H, W)`` (floats, pixels
in ``[0, 1]``) and returns one value per frame, shape ``(...)``: evaluation calls them on whole
``(B, horizon, C, H, W)`` blocks at once. The definitions follow the field's conventions (see
``docs/evaluation.md``):

- MSE: ``Σ (x̂ - x)² / (C·H·W)``;
- PSNR: ``10 log10(data_range² / MSE)``, per frame (averaged afterwards, never computed from an
  averaged MSE);
- SSIM: Wang et al. (2004) with an 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, the
  window applied without padding ("valid"), computed per channel and averaged over channels and
  positions.

:func:`motion` scores a sequence on its own (no target): how much it changes from frame to frame.
A prediction whose motion falls below the true frames' has slowed the system down, a cheap way
for a model to lower a conservation loss without getting the physics right.
"""

from __future__ import annotations

import math

import torch

#: Pixels (per moment) filtered at once by :func:`ssim`: bounds its float64 working memory to
#: about 5 · 8 bytes · this = 40 MiB.
_SSIM_CHUNK_PIXELS = 2**20

#: MSE floor for PSNR, so that a perfect prediction reads 100 dB instead of infinity (which is
#: not JSON and would swamp any mean over sequences).
PSNR_MIN_MSE = 1e-10


def _check_frame_pair(prediction: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """Raise unless both are floating tensors of one shape ``(..., C, H, W)``."""
    for label, value in (("prediction", prediction), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected {label} to be a torch.Tensor, got {type(value)}")
        if not value.is_floating_point():
            raise TypeError(
                f"{name}: expected a floating {label} with pixels in [0, 1], got dtype "
                f"{value.dtype}; convert uint8 frames with frames.float() / 255"
            )
    if prediction.ndim < 3:
        raise ValueError(
            f"{name}: expected frames of shape (..., C, H, W), got shape {tuple(prediction.shape)}"
        )
    if prediction.shape != target.shape:
        raise ValueError(
            f"{name}: expected prediction and target of one shape, got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame.

    Args:
        prediction, target: float ``(..., C, H, W)``, pixels in ``[0, 1]``.

    Returns:
        ``(...)``, the squared error summed over a frame divided by ``C·H·W``.
    """
    _check_frame_pair(prediction, target, "mse")
    return (prediction - target).square().mean(dim=(-3, -2, -1))


def psnr(
    prediction: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0
) -> torch.Tensor:
    """Peak signal-to-noise ratio per frame, in dB.

    Args:
        prediction, target: float ``(..., C, H, W)``, pixels in ``[0, data_range]``.
        data_range: the span of pixel values (1.0 for ``[0, 1]`` images).

    Returns:
        ``(...)``, ``10 log10(data_range² / max(MSE, PSNR_MIN_MSE))``.
    """
    _check_frame_pair(prediction, target, "psnr")
    if data_range <= 0:
        raise ValueError(f"psnr: expected data_range > 0, got {data_range}")
    error = (prediction - target).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / error.clamp_min(PSNR_MIN_MSE))


def motion(frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Mean absolute change of each frame from the one before it.

    Args:
        frames: float ``(..., T, C, H, W)``, a sequence of frames.
        previous: float ``(..., C, H, W)``, the frame before ``frames[..., 0, :, :, :]`` (e.g. the
            last context frame of a prediction).

    Returns:
        ``(..., T)``: ``mean |x_t − x_{t−1}|`` over the pixels of each frame.
    """
    if frames.ndim < 4 or frames.ndim != previous.ndim + 1:
        raise ValueError(
            f"motion: expected frames (..., T, C, H, W) and the previous frame (..., C, H, W), "
            f"got shapes {tuple(frames.shape)} and {tuple(previous.shape)}"
        )
    _check_frame_pair(frames[..., 0, :, :, :], previous, "motion")
    sequence = torch.cat([previous.unsqueeze(-4), frames], dim=-4)
    return (sequence[..., 1:, :, :, :] - sequence[..., :-1, :, :, :]).abs().mean(dim=(-3, -2, -1))


def gaussian_window(
    size: int = 11,
    sigma: float = 1.5,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)`` whose outer product is SSIM's 2-D window."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_window: expected an odd size >= 1, got {size}")
    if sigma <= 0:
        raise ValueError(f"gaussian_window: expected sigma > 0, got {sigma}")
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per frame.

    Local means, variances and covariance come from a Gaussian window applied without padding,
    so a ``H×W`` frame gives a ``(H - window_size + 1)×(W - window_size + 1)`` SSIM map per
    channel; the result is that map's mean over positions and channels. Variances are the
    window-weighted population ones (``E[x²] - E[x]²``), as in the reference MATLAB code.

    Args:
        prediction, target: float ``(..., C, H, W)`` with ``H, W >= window_size``, pixels in
            ``[0, data_range]``.
        data_range: the span of pixel values; sets ``C1 = (k1·L)²`` and ``C2 = (k2·L)²``.

    Returns:
        ``(...)``, SSIM in ``[-1, 1]`` (1 for identical frames).
    """
    _check_frame_pair(prediction, target, "ssim")
    if data_range <= 0:
        raise ValueError(f"ssim: expected data_range > 0, got {data_range}")
    *leading, channels, height, width = prediction.shape
    if height < window_size or width < window_size:
        raise ValueError(
            f"ssim: expected frames at least {window_size}x{window_size} (the window size), "
            f"got {height}x{width}"
        )
    # Variances are differences of nearly equal moments; in float32 flat regions (most of a
    # rendered frame) come out with errors of ~1e-4 in SSIM, so the moments are float64.
    window = gaussian_window(window_size, sigma, dtype=torch.float64, device=prediction.device)
    rows = valid_filter_matrix(height, window)
    columns = valid_filter_matrix(width, window).T
    # Each channel of each frame is filtered on its own. The separable "valid" Gaussian filter
    # is two banded matrix products (rows @ image @ columns), an order of magnitude faster on
    # the CPU than a one-channel conv2d; chunks bound the memory of the float64 moments.
    x = prediction.reshape(-1, height, width)
    y = target.reshape(-1, height, width)
    chunk = max(1, _SSIM_CHUNK_PIXELS // (height * width))
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    values = []
    for start in range(0, x.shape[0], chunk):
        a = x[start : start + chunk].double()
        b = y[start : start + chunk].double()
        moments = rows @ torch.stack([a, b, a * a, b * b, a * b]) @ columns
        mu_a, mu_b, mean_aa, mean_bb, mean_ab = moments.unbind(0)
        var_a = mean_aa - mu_a.square()
        var_b = mean_bb - mu_b.square()
        cov_ab = mean_ab - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
            (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
        )
        values.append(ssim_map.mean(dim=(-2, -1)))
    per_channel = torch.cat(values).reshape(*leading, channels)
    return per_channel.mean(dim=-1).to(prediction.dtype)


def valid_filter_matrix(size: int, window: torch.Tensor) -> torch.Tensor:
    """The ``(size - k + 1, size)`` banded matrix applying a ``(k,)`` filter without padding.

    ``matrix @ signal`` equals the "valid" correlation of ``signal`` (length ``size``) with
    ``window``: row ``i`` holds the window at columns ``i .. i + k - 1``.
    """
    length = window.shape[0]
    if size < length:
        raise ValueError(f"expected a signal at least as long as the window {length}, got {size}")
    outputs = size - length + 1
    matrix = window.new_zeros(outputs, size)
    columns = torch.arange(outputs, device=window.device)[:, None] + torch.arange(
        length, device=window.device
    )
    return matrix.scatter_(1, columns, window.expand(outputs, length))


def mean_and_stderr(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean and standard error of the mean over the first axis.

    Args:
        values: ``(N, ...)``, e.g. one row of per-horizon metrics per test sequence.

    Returns:
        ``(mean, stderr)``, each ``(...)``; ``stderr = std(ddof=1) / sqrt(N)``, or ``None`` when
        ``N < 2`` (a single sequence has no spread to estimate).
    """
    if values.ndim < 1 or values.shape[0] == 0:
        raise ValueError(
            f"mean_and_stderr: expected at least one row, got shape {tuple(values.shape)}"
        )
    values = values.double()
    mean = values.mean(dim=0)
    count = values.shape[0]
    if count < 2:
        return mean, None
    return mean, values.std(dim=0, unbiased=True) / math.sqrt(count)
