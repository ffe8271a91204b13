"""Reference predictors that any useful world model must beat, and the ``Predictor`` contract.

- :class:`LastFramePredictor` repeats the last context frame (a model that learned nothing about
  motion scores this);
- :class:`MeanFramePredictor` always answers the mean training frame (the best constant guess
  under MSE).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Predictor(Protocol):
    """Anything that predicts future frames from context frames and actions, in closed loop."""

    def predict(self, frames: torch.Tensor, actions: torch.Tensor, n_future: int) -> torch.Tensor:
        """Predict ``n_future`` frames.

        Args:
            frames: float32 ``(B, n_past, C, H, W)`` context frames in ``[0, 1]``.
            actions: float32 ``(B, n_past + n_future - 1, A)``; ``actions[:, t]`` is applied at
                frame ``t``.
            n_future: how many frames to predict after the context.

        Returns:
            float32 ``(B, n_future, C, H, W)`` in ``[0, 1]``.
        """
        ...


def _check_context(frames: torch.Tensor, n_future: int) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames)
        raise ValueError(f"expected context frames of shape (B, n_past, C, H, W), got {shape}")
    if frames.shape[1] < 1:
        raise ValueError("expected at least one context frame, got n_past = 0")
    if n_future < 1:
        raise ValueError(f"expected n_future >= 1, got {n_future}")


class LastFramePredictor:
    """Predicts that nothing moves: every future frame is the last context frame."""

    def predict(self, frames: torch.Tensor, actions: torch.Tensor, n_future: int) -> torch.Tensor:
        """See :meth:`Predictor.predict`; ``actions`` are ignored."""
        _check_context(frames, n_future)
        return frames[:, -1:].expand(-1, n_future, -1, -1, -1)


class MeanFramePredictor:
    """Predicts the mean training frame at every step, whatever the context.

    Args:
        mean_frame: float ``(C, H, W)`` in ``[0, 1]``, e.g. from :func:`mean_frame`.
    """

    def __init__(self, mean_frame: torch.Tensor) -> None:
        if not isinstance(mean_frame, torch.Tensor) or mean_frame.ndim != 3:
            shape = tuple(mean_frame.shape) if isinstance(mean_frame, torch.Tensor) else mean_frame
            raise ValueError(f"expected a mean frame of shape (C, H, W), got {shape}")
        self.mean_frame = mean_frame

    def predict(self, frames: torch.Tensor, actions: torch.Tensor, n_future: int) -> torch.Tensor:
        """See :meth:`Predictor.predict`; only the batch size of ``frames`` is used."""
        _check_context(frames, n_future)
        if frames.shape[2:] != self.mean_frame.shape:
            raise ValueError(
                f"expected frames of shape (C, H, W) = {tuple(self.mean_frame.shape)} like the "
                f"mean frame, got {tuple(frames.shape[2:])}"
            )
        mean = self.mean_frame.to(device=frames.device, dtype=frames.dtype)
        return mean.expand(frames.shape[0], n_future, *mean.shape)


def mean_frame(batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """The per-pixel mean of every frame in ``batches``, accumulated one batch at a time.

    Args:
        batches: dicts with ``"frames"`` float ``(B, T, C, H, W)`` in ``[0, 1]``, e.g. a
            ``DataLoader`` over ``EpisodeWindows(..., window=1, split="train")`` so that each
            training frame counts once.

    Returns:
        float32 ``(C, H, W)``; accumulated in float64 so that long datasets do not lose precision.
    """
    total: torch.Tensor | None = None
    count = 0
    for batch in batches:
        frames = batch["frames"]
        if frames.ndim != 5:
            raise ValueError(
                f"mean_frame: expected frames of shape (B, T, C, H, W), got {tuple(frames.shape)}"
            )
        frame_sum = frames.double().sum(dim=(0, 1))
        if total is not None and frame_sum.shape != total.shape:
            raise ValueError(
                f"mean_frame: expected every frame of shape {tuple(total.shape)}, got "
                f"{tuple(frame_sum.shape)}"
            )
        total = frame_sum if total is None else total + frame_sum
        count += frames.shape[0] * frames.shape[1]
    if total is None or count == 0:
        raise ValueError("mean_frame: expected at least one frame, got an empty dataset")
    return (total / count).float()
