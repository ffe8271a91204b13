"""What a training run leaves behind besides checkpoints: metric rows (CSV, TensorBoard), strips."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noether_control.runtime import atomic_path


class MetricLog:
    """Scalar metrics per step, to ``metrics.csv`` and (optionally) TensorBoard.

    Names are namespaced (``train/loss``, ``eval/mse``…). The CSV has one column per name seen
    in the first row plus any later ones written as empty cells before. On resume, rows after
    the resumed step are dropped so the file never shows a step twice.
    """

    def __init__(self, directory: Path, *, tensorboard: bool, resume_step: int = 0) -> None:
        self.path = directory / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open(newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle)
                             if int(row["step"]) <= resume_step]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "train.tensorboard=true but the `tensorboard` package is not installed "
                    "(pip install tensorboard); logging to metrics.csv only",
                    stacklevel=2,
                )
            else:
                self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"),
                                            purge_step=resume_step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` at ``step`` (rewrites the CSV atomically; it stays small)."""
        self.rows.append({"step": step, **metrics})
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
        columns = ["step", *sorted({key for row in self.rows for key in row} - {"step"})]
        with atomic_path(self.path) as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def strip_image(truth: torch.Tensor, predicted: torch.Tensor, n_past: int) -> np.ndarray:
    """Ground truth over prediction for each sequence, as one ``uint8`` ``(rows·H, T·W, C)`` image.

    ``truth``: ``(K, T, C, H, W)`` in [0, 1]; ``predicted``: ``(K, T - n_past, C, H, W)``. The
    prediction row repeats the context frames so both rows line up in time; a 2-pixel grey
    line separates the sequences.
    """
    k, length, channels, height, width = truth.shape
    predicted_row = torch.cat([truth[:, :n_past], predicted.to(truth.dtype)], dim=1)
    pairs = torch.stack([truth, predicted_row], dim=1)  # (K, 2, T, C, H, W)
    rows = pairs.permute(0, 1, 4, 2, 5, 3).reshape(k, 2 * height, length * width, channels)
    separator = torch.full((k, 2, length * width, channels), 0.5, dtype=truth.dtype)
    grid = torch.cat([rows, separator], dim=1).reshape(-1, length * width, channels)
    image = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return image[:, :, 0] if channels == 1 else image


def save_strip(path: Path, truth: torch.Tensor, predicted: torch.Tensor, n_past: int) -> None:
    """Write :func:`strip_image` as a PNG, atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as temporary:
        iio.imwrite(temporary, strip_image(truth.cpu(), predicted.cpu(), n_past))
