"""Figures of an evaluation: the per-horizon metric plot and the prediction GIF.

Both are written atomically. The plot is drawn from the ``results.json`` document alone, so a
saved evaluation can be re-plotted without re-running it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from noether_control.runtime import atomic_path

_LABELS = {
    "mse": "MSE (lower is better)",
    "psnr": "PSNR in dB (higher is better)",
    "ssim": "SSIM (higher is better)",
    "lpips": "LPIPS (lower is better)",
    "motion": "motion mean |x̂ₜ − x̂ₜ₋₁| (true: black)",
}


def plot_per_horizon(document: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Plot each metric against the horizon for the model and the reference predictors.

    Args:
        document: a ``results.json`` document (``per_horizon``, ``*_stderr``, ``references``).
        path: the PNG to write; shaded bands are ± one standard error.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves: dict[str, Mapping[str, Any]] = {
        "model": {**document["per_horizon"], **_stderrs(document)},
        **document["references"],
    }
    metrics = [name for name in _LABELS if document["per_horizon"].get(name) is not None]
    horizons = np.arange(1, len(document["per_horizon"]["mse"]) + 1)
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        for name, values in curves.items():
            if values.get(metric) is None:
                continue
            mean = np.asarray(values[metric], dtype=float)
            (line,) = axis.plot(horizons, mean, marker=".", label=name.replace("_", " "))
            stderr = values.get(f"{metric}_stderr")
            if stderr is not None:
                spread = np.asarray(stderr, dtype=float)
                axis.fill_between(
                    horizons, mean - spread, mean + spread, color=line.get_color(), alpha=0.2
                )
        if metric == "mse":
            axis.set_yscale("log")
        if metric == "motion" and document.get("true_motion") is not None:
            axis.plot(horizons, np.asarray(document["true_motion"], dtype=float), color="black",
                      linestyle="--", label="true frames")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("horizon (predicted frame)")
        axis.set_title(_LABELS[metric], fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    title = f"{document.get('n_sequences', '?')} test sequences"
    if "checkpoint" in document:
        title += f" · {os.path.basename(str(document['checkpoint']))}"
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path, "plot") as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)


def _stderrs(document: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key.endswith("_stderr")}


def _to_uint8_rgb(frames: torch.Tensor) -> np.ndarray:
    """``(..., C, H, W)`` floats in ``[0, 1]`` (C 1 or 3) to ``(..., H, W, 3)`` uint8."""
    if frames.shape[-3] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {frames.shape[-3]}")
    pixels = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pixels = np.moveaxis(pixels, -3, -1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels


def comparison_frames(
    context: torch.Tensor,
    truth: torch.Tensor,
    prediction: torch.Tensor,
    *,
    scale: int = 1,
    border: int = 2,
) -> np.ndarray:
    """The frames of a side-by-side video: ground truth (left) beside prediction (right).

    One row per sequence. During the context both columns show the given frames inside a grey
    frame; predicted frames are framed in red on the right (the ground truth stays grey).

    Args:
        context: float ``(N, n_past, C, H, W)`` in ``[0, 1]``.
        truth, prediction: float ``(N, horizon, C, H, W)`` in ``[0, 1]``.
        scale: integer pixel upscaling.
        border: frame width in (unscaled) pixels.

    Returns:
        uint8 ``(n_past + horizon, N·(H + 2·border)·scale, 2·(W + 2·border)·scale, 3)``.
    """
    if truth.shape != prediction.shape or context.shape[0] != truth.shape[0]:
        raise ValueError(
            f"expected context (N, n_past, C, H, W) and truth/prediction (N, horizon, C, H, W) "
            f"of one N, C, H, W, got {tuple(context.shape)}, {tuple(truth.shape)} and "
            f"{tuple(prediction.shape)}"
        )
    if scale < 1 or border < 0:
        raise ValueError(f"expected scale >= 1 and border >= 0, got {scale} and {border}")
    left = _to_uint8_rgb(torch.cat([context, truth], dim=1))
    right = _to_uint8_rgb(torch.cat([context, prediction], dim=1))
    n_past = context.shape[1]
    grey = np.array([128, 128, 128], dtype=np.uint8)
    red = np.array([220, 40, 40], dtype=np.uint8)
    pad = ((0, 0), (0, 0), (border, border), (border, border), (0, 0))
    left = np.pad(left, pad)
    right = np.pad(right, pad)
    for tiles, predicted_colour in ((left, grey), (right, red)):
        # Paint the border ring of every tile; the colour marks context vs predicted frames.
        ring = np.ones(tiles.shape[2:4], dtype=bool)
        ring[border : tiles.shape[2] - border, border : tiles.shape[3] - border] = False
        tiles[:, :n_past, ring] = grey
        tiles[:, n_past:, ring] = predicted_colour
    # (N, T, h, w, 3) x 2 -> (T, N·h, 2·w, 3)
    video = np.concatenate([left, right], axis=3)
    count, steps, height, width, _ = video.shape
    video = video.transpose(1, 0, 2, 3, 4).reshape(steps, count * height, width, 3)
    return video.repeat(scale, axis=1).repeat(scale, axis=2)


def write_comparison_gif(
    context: torch.Tensor,
    truth: torch.Tensor,
    prediction: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    fps: int = 10,
    scale: int = 2,
) -> None:
    """Write a looping GIF of ground truth beside prediction (see :func:`comparison_frames`)."""
    import imageio.v3 as iio

    frames = comparison_frames(context, truth, prediction, scale=scale)
    with atomic_path(path, "plot") as temporary:
        iio.imwrite(temporary, frames, extension=".gif", duration=1000 / fps, loop=0)
