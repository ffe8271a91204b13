"""Minari writing/opening and the EpisodeWindows dataset, on synthetic episodes.

Every stored value encodes (episode, step), so a window that slices the wrong episode, the wrong
steps or misaligns frames with actions is caught exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.utils.data import DataLoader

from noether_control.data.minari_io import (
    DatasetError,
    DatasetExistsError,
    dataset_path,
    episode_buffer,
    open_hdf5,
    write_dataset,
)
from noether_control.data.windows import (
    EpisodeWindows,
    MirroredWindows,
    mirror_window,
    split_episodes,
)

pytestmark = pytest.mark.filterwarnings("ignore:env_spec is None:UserWarning")

IMAGE = 8
DATASET_ID = "test/synthetic/uniform-v0"
OBSERVATION_SPACE = spaces.Dict(
    {
        "pixels": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
        "state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
    }
)
ACTION_SPACE = spaces.Box(-2.0, 2.0, (1,), np.float32)


def synthetic_episode(episode: int, steps: int):
    """An episode whose every value is a function of (episode, step)."""
    t = np.arange(steps + 1)
    code = episode * 1000 + t
    shade = ((episode * 31 + t) % 256).astype(np.uint8)
    pixels = np.broadcast_to(shade[:, None, None, None], (steps + 1, IMAGE, IMAGE, 3)).copy()
    pixels[:, 0, 0, 1] = episode  # a second channel distinguishes episodes with equal codes
    state = np.stack([code, -code], axis=1).astype(np.float64)
    return episode_buffer(
        episode,
        {"pixels": pixels, "state": state.astype(np.float32)},
        (code[:-1, None] * 0.5).astype(np.float32),
        code[:-1].astype(np.float64) * 0.25,
        np.zeros(steps, bool),
        np.arange(steps) == steps - 1,
        {"state": state, "energy": code * 2.0, "gravity": np.full(steps + 1, 9.0 + episode)},
    )


def write_synthetic(root: Path, lengths: list[int], *, batch: int = 3, **kwargs) -> Path:
    target = dataset_path(DATASET_ID, root)
    episodes = [synthetic_episode(i, n) for i, n in enumerate(lengths)]
    batches = (episodes[i : i + batch] for i in range(0, len(episodes), batch))
    return write_dataset(
        target,
        DATASET_ID,
        batches,
        env_spec=None,
        observation_space=OBSERVATION_SPACE,
        action_space=ACTION_SPACE,
        algorithm_name="synthetic",
        description="synthetic test episodes",
        extra_metadata={"seed": 3},
        **kwargs,
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("root"), [12, 9, 15, 10, 11, 13, 9, 20, 10, 14])


def test_written_dataset_is_a_minari_dataset(dataset: Path, monkeypatch) -> None:
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(dataset.parents[2]))
    loaded = minari.load_dataset(DATASET_ID)
    assert loaded.total_episodes == 10
    assert loaded.total_steps == 12 + 9 + 15 + 10 + 11 + 13 + 9 + 20 + 10 + 14
    episode = next(iter(loaded.iterate_episodes([7])))
    expected = synthetic_episode(7, 20)
    np.testing.assert_array_equal(episode.observations["pixels"], expected.observations["pixels"])
    np.testing.assert_array_equal(episode.infos["energy"], expected.infos["energy"])
    np.testing.assert_array_equal(episode.actions, expected.actions)
    metadata = json.loads((dataset / "data" / "metadata.json").read_text())
    assert metadata["noether_control"] == {"seed": 3}
    assert metadata["jpeg_encoding"] is False


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_frames_are_stored_one_chunk_per_frame(tmp_path: Path, compression: str | None) -> None:
    target = write_synthetic(tmp_path, [5, 7], image_compression=compression)
    with h5py.File(target / "data" / "main_data.hdf5", "r") as handle:
        for episode, steps in ((0, 5), (1, 7)):
            pixels = handle[f"episode_{episode}/observations/pixels"]
            assert pixels.chunks == (1, IMAGE, IMAGE, 3) and pixels.compression == compression
            expected = synthetic_episode(episode, steps).observations["pixels"]
            np.testing.assert_array_equal(pixels[()], expected)
        assert sorted(handle) == ["episode_0", "episode_1"]
    with pytest.raises(ValueError, match="image_compression: expected one of"):
        write_synthetic(tmp_path / "other", [5], image_compression="zstd")


def test_window_items_match_the_episode_arrays(dataset: Path) -> None:
    windows = EpisodeWindows(dataset, 5, "all", stride=2)
    assert (windows.image_size, windows.channels, windows.action_dim, windows.state_dim) == (
        IMAGE,
        3,
        1,
        2,
    )
    lengths = np.array([12, 9, 15, 10, 11, 13, 9, 20, 10, 14])
    assert len(windows) == int(((lengths - 5) // 2 + 1).sum())
    for index in (0, 3, len(windows) - 1, 17):
        episode, start = windows.window_index(index)
        item = windows[index]
        expected = synthetic_episode(episode, int(lengths[episode]))
        steps = slice(start, start + 5)
        frames = torch.from_numpy(expected.observations["pixels"][steps]).permute(0, 3, 1, 2)
        assert item["frames"].shape == (5, 3, IMAGE, IMAGE)
        torch.testing.assert_close(item["frames"], frames.float() / 255.0)
        torch.testing.assert_close(item["actions"], torch.from_numpy(expected.actions[steps]))
        codes = torch.arange(start, start + 5, dtype=torch.float32) + episode * 1000
        torch.testing.assert_close(item["states"][:, 0], codes)
        torch.testing.assert_close(item["rewards"], codes * 0.25)
        torch.testing.assert_close(item["energy"], codes * 2.0)
        assert all(value.dtype == torch.float32 for value in item.values())
    # the last window of an episode ends at its last action
    last_of_episode_0 = (12 - 5) // 2
    assert windows.window_index(last_of_episode_0) == (0, 6)
    assert windows.window_index(last_of_episode_0 + 1) == (1, 0)


def test_episode_returns_every_step_of_one_split_episode(dataset: Path) -> None:
    windows = EpisodeWindows(dataset, 5, "train", split_fractions=(0.6, 0.2, 0.2), seed=1)
    lengths = [12, 9, 15, 10, 11, 13, 9, 20, 10, 14]
    episode_id = int(windows.episode_ids[-1])
    item = windows.episode(episode_id)
    steps = lengths[episode_id]
    assert item["frames"].shape == (steps, 3, IMAGE, IMAGE) and item["actions"].shape == (steps, 1)
    expected = synthetic_episode(episode_id, steps)
    torch.testing.assert_close(
        item["frames"],
        torch.from_numpy(expected.observations["pixels"][:steps]).permute(0, 3, 1, 2) / 255.0)
    codes = torch.arange(steps, dtype=torch.float32) + episode_id * 1000
    torch.testing.assert_close(item["rewards"], codes * 0.25)
    first_window = next(i for i in range(len(windows)) if windows.window_index(i)[0] == episode_id)
    torch.testing.assert_close(windows[first_window]["frames"], item["frames"][:5])
    other = next(i for i in range(10) if i not in windows.episode_ids)
    with pytest.raises(ValueError, match=r"episode_id: expected one of this 'train' split"):
        windows.episode(other)


def test_episode_constants_are_the_scalar_infos_fixed_along_an_episode(dataset: Path) -> None:
    windows = EpisodeWindows(dataset, 5, "train", split_fractions=(0.6, 0.2, 0.2), seed=1)
    for episode_id in windows.episode_ids:
        # energy varies along the episode and state is not a scalar: only gravity is constant
        assert windows.episode_constants(int(episode_id)) == {"gravity": 9.0 + episode_id}
    other = next(i for i in range(10) if i not in windows.episode_ids)
    with pytest.raises(ValueError, match=r"episode_id: expected one of this 'train' split"):
        windows.episode_constants(other)


def test_mirrored_windows_add_the_mirror_image_of_every_window(dataset: Path) -> None:
    base = EpisodeWindows(dataset, 5, "train", split_fractions=(0.6, 0.2, 0.2), seed=1)
    mirrored = MirroredWindows(base)
    assert len(mirrored) == 2 * len(base)
    assert (mirrored.image_size, mirrored.action_dim, mirrored.state_dim) == (IMAGE, 1, 2)
    for index in (0, 7, len(base) - 1):
        original, image = base[index], mirrored[len(base) + index]
        torch.testing.assert_close(mirrored[index]["frames"], original["frames"])
        torch.testing.assert_close(image["frames"], original["frames"].flip(-1))
        assert not torch.equal(image["frames"], original["frames"])  # pixel (0, 0) moved
        torch.testing.assert_close(image["actions"], -original["actions"])
        torch.testing.assert_close(image["states"], -original["states"])
        torch.testing.assert_close(image["rewards"], original["rewards"])
        torch.testing.assert_close(image["energy"], original["energy"])
    # the dynamics phase reads whole episodes: the mirrored ones follow the file's 10
    assert mirrored.num_episodes == 10
    np.testing.assert_array_equal(mirrored.episode_ids,
                                  np.concatenate([base.episode_ids, base.episode_ids + 10]))
    np.testing.assert_array_equal(mirrored.episode_lengths, np.tile(base.episode_lengths, 2))
    episode_id = int(base.episode_ids[0])
    torch.testing.assert_close(mirrored.episode(episode_id + 10),
                               mirror_window(base.episode(episode_id)))
    torch.testing.assert_close(mirrored.episode(episode_id), base.episode(episode_id))
    other = next(i for i in range(10) if i not in base.episode_ids)
    with pytest.raises(ValueError, match=r"episode_id: expected one of this 'train' split"):
        mirrored.episode(other + 10)
    with pytest.raises(IndexError, match="index: expected in"):
        mirrored[len(mirrored)]
    assert mirrored.fingerprint() != base.fingerprint()


def test_training_mirrors_only_the_training_split(dataset: Path) -> None:
    from noether_control.training.config import DataConfig, TrainCommandConfig
    from noether_control.training.train import open_windows

    config = TrainCommandConfig(data=DataConfig(path=str(dataset), n_past=2, n_future=3,
                                                mirror=True, split_fractions=(0.6, 0.2, 0.2)))
    assert isinstance(open_windows(config, "train", 1), MirroredWindows)
    assert type(open_windows(config, "val", 5)) is EpisodeWindows
    config.data.mirror = False
    assert type(open_windows(config, "train", 1)) is EpisodeWindows


def test_split_is_deterministic_disjoint_and_complete() -> None:
    first = split_episodes(50, (0.6, 0.2, 0.2), seed=4)
    again = split_episodes(50, (0.6, 0.2, 0.2), seed=4)
    other = split_episodes(50, (0.6, 0.2, 0.2), seed=5)
    assert [len(first[name]) for name in ("train", "val", "test")] == [30, 10, 10]
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["train"], other["train"])
    joined = np.concatenate(list(first.values()))
    np.testing.assert_array_equal(np.sort(joined), np.arange(50))


def test_windows_of_a_split_use_only_its_episodes(dataset: Path) -> None:
    fractions = (0.6, 0.2, 0.2)
    split = split_episodes(10, fractions, seed=1)
    for name in ("train", "val", "test"):
        windows = EpisodeWindows(dataset, 4, name, split_fractions=fractions, seed=1)
        np.testing.assert_array_equal(windows.episode_ids, split[name])
        seen = {windows.window_index(i)[0] for i in range(len(windows))}
        assert seen == set(split[name].tolist())


def test_dataloader_workers_read_the_same_windows(dataset: Path) -> None:
    windows = EpisodeWindows(dataset, 6, "train", stride=3)
    windows[0]  # the parent's open handle must not leak into the workers
    serial = [windows[i]["actions"] for i in range(len(windows))]
    loader = DataLoader(windows, batch_size=4, num_workers=2, shuffle=False)
    parallel = torch.cat([batch["actions"] for batch in loader])
    torch.testing.assert_close(parallel, torch.stack(serial))


def test_bad_window_arguments_raise_clear_errors(dataset: Path) -> None:
    with pytest.raises(ValueError, match="at most 9 steps"):
        EpisodeWindows(dataset, 10, "all")
    with pytest.raises(ValueError, match="split: expected one of"):
        EpisodeWindows(dataset, 3, "validation")
    with pytest.raises(ValueError, match="summing to 1"):
        EpisodeWindows(dataset, 3, "train", split_fractions=(0.8, 0.3, 0.1))
    with pytest.raises(ValueError, match="window: expected a positive int"):
        EpisodeWindows(dataset, 0, "train")
    with pytest.raises(ValueError, match="has no episodes"):
        EpisodeWindows(dataset, 3, "val", split_fractions=(1.0, 0.0, 0.0))


def test_missing_and_corrupt_datasets_raise_dataset_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        EpisodeWindows(tmp_path / "nowhere", 3, "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="expected a Minari dataset directory"):
        EpisodeWindows(empty, 3, "train")
    truncated = tmp_path / "truncated" / "data" / "main_data.hdf5"
    truncated.parent.mkdir(parents=True)
    content = (dataset / "data" / "main_data.hdf5").read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        EpisodeWindows(truncated.parents[1], 3, "train")
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        open_hdf5(garbage)
    foreign = tmp_path / "foreign.hdf5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(DatasetError, match="expected Minari episode groups"):
        open_hdf5(foreign)


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    target = write_synthetic(tmp_path, [6, 6])
    with pytest.raises(DatasetExistsError, match=r"pass dataset\.overwrite=true"):
        write_synthetic(tmp_path, [7, 7, 7])
    assert EpisodeWindows(target, 2, "all").episode_ids.tolist() == [0, 1]
    write_synthetic(tmp_path, [7, 7, 7], overwrite=True)
    assert EpisodeWindows(target, 2, "all").episode_ids.tolist() == [0, 1, 2]
    assert sorted(p.name for p in target.parent.iterdir()) == ["uniform-v0"]


def test_interrupted_write_leaves_no_dataset(tmp_path: Path) -> None:
    target = dataset_path(DATASET_ID, tmp_path)

    def failing_batches():
        yield [synthetic_episode(0, 5), synthetic_episode(1, 5)]
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-collection

    with pytest.raises(KeyboardInterrupt):
        write_dataset(
            target,
            DATASET_ID,
            failing_batches(),
            env_spec=None,
            observation_space=OBSERVATION_SPACE,
            action_space=ACTION_SPACE,
            algorithm_name="synthetic",
            description="interrupted",
        )
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_interrupted_overwrite_keeps_the_old_dataset(tmp_path: Path) -> None:
    target = write_synthetic(tmp_path, [6, 6])

    def failing_batches():
        yield [synthetic_episode(0, 9)]
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        write_dataset(
            target,
            DATASET_ID,
            failing_batches(),
            env_spec=None,
            observation_space=OBSERVATION_SPACE,
            action_space=ACTION_SPACE,
            algorithm_name="synthetic",
            description="interrupted",
            overwrite=True,
        )
    assert EpisodeWindows(target, 6, "all").episode_lengths.tolist() == [6, 6]


def test_episode_buffer_rejects_misaligned_columns() -> None:
    with pytest.raises(ValueError, match="expected 4 steps"):
        episode_buffer(
            0,
            {"pixels": np.zeros((5, 2, 2, 3), np.uint8)},
            np.zeros((3, 1)),
            np.zeros(4),
            np.zeros(4, bool),
            np.zeros(4, bool),
            {"energy": np.zeros(5)},
        )
