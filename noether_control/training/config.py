"""Typed configs of ``noether-control train``, one per Hydra group (``data``, ``model``, ``train``).

The ``model`` group is :class:`noether_control.models.SVGConfig` itself; its data-dependent
fields (image size, channels, action and state dimensions) are taken from the dataset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omegaconf import MISSING

from noether_control.models.svg import SVGConfig
from noether_control.noether.config import NoetherConfig

ROLLOUT_MODES = ("teacher", "scheduled", "closed")


@dataclass
class DataConfig:
    """Which windows of which collected dataset the world model sees (group ``data``)."""

    path: str = MISSING
    """Dataset written by ``noether-control collect`` (the ``path`` of its results.json)."""
    n_past: int = 2
    """Context frames the model conditions on."""
    n_future: int = 10
    """Frames predicted after the context during training (window = n_past + n_future)."""
    stride: int = 1
    """Steps between the starts of consecutive training windows of an episode."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train/val/test fractions of episodes (evaluation reuses the test split)."""
    split_seed: int = 0
    """Seed of the episode shuffle behind the split."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    mirror: bool = False
    """Also train on every training episode reflected left–right (frames flipped horizontally,
    angles, angular velocities and torques negated; ``data.windows.MirroredWindows``): the
    pendulum family's physics, rewards and rendering are mirror-symmetric, so these are episodes
    the env could have produced. Doubles the training windows; validation stays unmirrored."""

    @property
    def window(self) -> int:
        """Steps per training window, ``n_past + n_future``."""
        return self.n_past + self.n_future


@dataclass
class OptimConfig:
    """How the model is trained (group ``train``)."""

    steps: int = 2000
    """Optimiser steps in total (a resumed run continues up to this many)."""
    batch_size: int = 16
    """Global batch of windows per step (split evenly over DDP processes)."""
    lr: float = 1e-3
    """Adam learning rate."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    rollout: str = "scheduled"
    """Inputs after the context: ``teacher`` (true frames), ``closed`` (own predictions) or
    ``scheduled`` (true frame with a probability falling linearly from 1 to 0)."""
    schedule_steps: int = 1000
    """Scheduled sampling: step at which the teacher probability reaches 0 (linear from 1).
    Counted in absolute steps so that extending ``steps`` on resume keeps the schedule."""
    reward_weight: float = 0.001
    """Weight of the reward head's MSE (rewards are O(1–10), pixels O(0.01))."""
    state_weight: float = 0.1
    """Weight of the state head's MSE (only with ``model.state_head``)."""
    kl_weight: float = 1e-4
    """Weight of SVG-LP's KL term per step (only with ``model.stochastic``)."""
    init_from: str | None = None
    """Start from this checkpoint's weights, Adam state and step instead of from scratch (e.g.
    the previous model of a model-based loop, continued on its grown dataset); the architecture
    must match, except ``model.feedback`` (how the weights run, not which exist). Ignored when
    the run directory holds a checkpoint to resume."""
    lr_decay_steps: int = 0
    """Decay the learning rate linearly towards 0 over the last this many steps of ``steps``
    (0: constant). With a constant rate a small-batch run's weights keep wandering: validation
    MSE went from 3.89e-3 to 2.30e-3 between checkpoints 1000 steps apart, which buries differences
    of a few percent between runs (docs/noether.md). Computed from the step alone, so a resumed
    run follows the same schedule; may change on resume, like ``steps``."""
    recon_weight: float = 1.0
    """Weight of an autoencoding MSE: every window frame decoded from its own code with the
    skip features zeroed. The prediction loss alone reaches the encoder only through the LSTM,
    and the skips of the context frame let the decoder sit near a copy of it; this term makes
    the code describe the frame on its own (docs/world_model.md has the measurements). Applied
    in Noether meta-training steps too, so that Noether and the more-steps control optimise the
    same terms. 0: off, plain SVG."""
    latent_weight: float = 1.0
    """Weight of a latent consistency MSE between the predictor's code of frame ``t + 1`` and
    the encoder's code of the true frame ``t + 1`` (a stop-gradient target): a direct signal
    for the LSTM that does not have to pass through the decoder. 0: off, plain SVG."""
    dynamics_steps: int = 0
    """Steps of a dynamics phase after the ``steps`` joint ones: the encoder and decoder are
    frozen, every training episode is encoded once, and the frame predictor alone (LSTM, action
    embedding, code-change, reward and state heads) learns the closed-loop dynamics of those
    codes (``training/dynamics.py``). With no frame encoded or decoded, a window costs a few
    percent of what it would in a joint step (``benchmarks/bench_world_model.py``). A resumed
    run does the joint steps it has left, then the dynamics steps it has left; one resumed with
    more ``steps`` after its dynamics phase does not redo it. Deterministic models with
    ``model.feedback=latent`` only. 0: off."""
    dynamics_batch_size: int = 64
    """Global batch of code windows per dynamics step."""
    dynamics_horizon: int = 25
    """Closed-loop steps after the ``data.n_past`` context codes in each dynamics window (the
    evaluation horizon, where ``data.n_future`` is what a joint step can afford to decode)."""
    dynamics_lr: float = 2e-3
    """Adam learning rate of the dynamics phase, decayed linearly to 0 over its steps."""
    amp: bool = True
    """bfloat16 autocast on CUDA GPUs that support it (ignored on the CPU and older GPUs, and
    by the Noether meta steps, which run in float32)."""
    log_every: int = 10
    """Steps between metric rows (CSV, TensorBoard, progress bar)."""
    checkpoint_every: int = 250
    """Steps between checkpoints (one is always written at the end)."""
    keep_checkpoints: int = 3
    """Numbered checkpoints kept besides ``last.pt`` (older ones are deleted)."""
    image_every: int = 250
    """Steps between prediction strips (PNG, ground truth over prediction); 0: none."""
    val_windows: int = 64
    """Validation windows scored (closed-loop MSE) at each checkpoint; 0: no validation."""
    tensorboard: bool = True
    """Also log to TensorBoard (needs the ``tensorboard`` package; CSV is always written)."""
    progress: bool = True
    """Show a tqdm progress bar with the loss."""


#: Keys of the resolved config that may change when a run is resumed.
RESUMABLE_CHANGES = {
    "train.steps", "train.lr_decay_steps", "train.dynamics_steps", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.image_every", "train.val_windows",
    "train.tensorboard", "train.progress",
    "data.num_workers", "data.path", "device", "noether.init_from", "train.init_from",
}


@dataclass
class TrainCommandConfig:
    """The whole ``noether-control train`` config (``conf/commands/train/train.yaml``)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: SVGConfig = field(default_factory=SVGConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    noether: NoetherConfig = field(default_factory=NoetherConfig)
    """Noether meta-training after ``noether.pretrain_steps`` when ``noether.enabled``."""
    seed: int = 0
    """Seeds initialisation, batch order, scheduled sampling and SVG-LP noise."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid value."""
        d, t = self.data, self.train
        if d.n_past < 1 or d.n_future < 1:
            raise ValueError(
                f"data.n_past and data.n_future: expected ≥ 1, got {d.n_past} and {d.n_future}"
            )
        if t.rollout not in ROLLOUT_MODES:
            raise ValueError(f"train.rollout: expected one of {ROLLOUT_MODES}, got {t.rollout!r}")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name}: expected ≥ 1, got {getattr(t, name)}")
        # NaN passes every comparison below (and inf breaks Adam): refuse both first
        for section, node in (("train", t), ("model", self.model), ("noether", self.noether)):
            for item in fields(node):
                value = getattr(node, item.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{section}.{item.name}: expected a finite number, "
                                     f"got {value}")
        if t.lr <= 0:
            raise ValueError(f"train.lr: expected > 0, got {t.lr}")
        # 0 switches each of these off (no images, no clipping, no validation, no workers)
        for name, value in (("train.image_every", t.image_every),
                            ("train.grad_clip", t.grad_clip),
                            ("train.val_windows", t.val_windows),
                            ("data.num_workers", d.num_workers)):
            if value < 0:
                raise ValueError(f"{name}: expected ≥ 0 (0: off), got {value}")
        for name in ("reward_weight", "state_weight", "kl_weight", "recon_weight", "latent_weight"):
            if getattr(t, name) < 0:
                raise ValueError(f"train.{name}: expected ≥ 0, got {getattr(t, name)}")
        if not 0 <= t.lr_decay_steps <= t.steps:
            raise ValueError(
                f"train.lr_decay_steps: expected 0 ≤ lr_decay_steps ≤ train.steps ({t.steps}), "
                f"got {t.lr_decay_steps}"
            )
        for name in ("dynamics_batch_size", "dynamics_horizon"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name}: expected ≥ 1, got {getattr(t, name)}")
        if t.dynamics_steps < 0 or t.dynamics_lr <= 0:
            raise ValueError(f"train.dynamics_steps and train.dynamics_lr: expected ≥ 0 and > 0, "
                             f"got {t.dynamics_steps} and {t.dynamics_lr}")
        if t.dynamics_steps and (self.model.stochastic or self.model.feedback != "latent"
                                 or self.noether.enabled):
            raise ValueError(
                "train.dynamics_steps: the dynamics phase trains the predictor of a "
                "deterministic model with latent feedback, before any Noether meta-training; "
                f"expected 0 with model.stochastic={self.model.stochastic}, "
                f"model.feedback={self.model.feedback!r}, noether.enabled={self.noether.enabled}, "
                f"got {t.dynamics_steps} (Noether meta-training from a baseline that had a "
                "dynamics phase: pass train.dynamics_steps=0)"
            )
        if t.init_from and self.noether.init_from:
            raise ValueError("train.init_from and noether.init_from: expected at most one "
                             "checkpoint to start from, got both")
        if t.schedule_steps < 1:
            raise ValueError(f"train.schedule_steps: expected ≥ 1, got {t.schedule_steps}")
        if self.noether.enabled:
            self.noether.validate()
            shortest = self.noether.min_horizon(d.n_past)
            if d.n_future < shortest:
                raise ValueError(
                    f"data.n_future: Noether's conservation loss compares g_φ at >= 2 points of "
                    f"the predicted rollout; expected >= {shortest} with "
                    f"noether.embedding.input={self.noether.embedding.input!r}, got {d.n_future}"
                )
            if self.noether.tailored == "all" and t.rollout != "teacher":
                raise ValueError(
                    "noether.tailored=all: every weight is tailored per example under vmap, "
                    "where the scheduled-sampling mask cannot steer the unroll; expected "
                    f"train.rollout=teacher, got {t.rollout!r}"
                )


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and tuples are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def resume_mismatches(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings that differ between a checkpoint's config and this run's, except resumable ones.

    A setting the checkpoint does not have (added to the config after it was written) counts as
    unchanged while this run keeps its default, so older checkpoints stay resumable.
    """
    old, new = flatten(stored), flatten(current)
    defaults = flatten(asdict(TrainCommandConfig()))
    return [
        f"{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key not in RESUMABLE_CHANGES
        and old.get(key) != new.get(key)
        and not (key not in old and key in defaults and new.get(key) == defaults[key])
    ]


def learning_rate(train: OptimConfig, step: int) -> float:
    """The learning rate of update ``step`` (0-based): ``train.lr``, times ``(steps - step) /
    lr_decay_steps`` over the last ``lr_decay_steps`` updates (so the last one is still > 0)."""
    if train.lr_decay_steps == 0:
        return train.lr
    return train.lr * min(1.0, (train.steps - step) / train.lr_decay_steps)


def dynamics_learning_rate(train: OptimConfig, dynamics_step: int) -> float:
    """The learning rate of dynamics update ``dynamics_step`` (0-based): ``train.dynamics_lr``
    decayed linearly, ``(dynamics_steps - dynamics_step) / dynamics_steps`` (the last is > 0)."""
    return train.dynamics_lr * (train.dynamics_steps - dynamics_step) / train.dynamics_steps
