"""Writing and opening Minari datasets safely.

A dataset is the directory ``<root>/<dataset_id>`` that Minari itself uses
(``<root>/<dataset_id>/data/main_data.hdf5`` plus ``metadata.json``), so with ``root`` left at
Minari's default (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``) ``minari.load_dataset``
finds it by id.

Guarantees of :func:`write_dataset`:

* atomic: the dataset is built in a hidden staging directory beside the target and renamed
  into place only after the last episode is written; an interrupted or failed write leaves no
  dataset at the target (Minari's listing skips hidden directories);
* no silent overwrite: an existing target raises :class:`DatasetExistsError` unless
  ``overwrite=True``;
* exact frames: images are stored raw (``jpeg_encoding=False``), never JPEG-compressed.

:func:`hdf5_path` / :func:`open_hdf5` turn a missing, truncated or foreign file into a
:class:`DatasetError` that says what was expected.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
from gymnasium.envs.registration import EnvSpec
from minari.data_collector import EpisodeBuffer

from noether_control.runtime import atomic_path

DATA_DIR = "data"
DATA_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"


class DatasetError(ValueError):
    """A dataset path is missing, unreadable or not a Minari HDF5 dataset."""


class DatasetExistsError(FileExistsError):
    """The target dataset exists and ``overwrite`` was not requested."""


def default_root() -> Path:
    """Minari's dataset root: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    configured = os.environ.get("MINARI_DATASETS_PATH")
    if configured:
        return Path(configured)
    return Path.home() / ".minari" / "datasets"


def dataset_path(dataset_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The directory of dataset ``dataset_id`` (``namespace/name-vN``) under ``root``."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except Exception as error:  # minari raises ValueError or AssertionError for bad ids
        raise ValueError(
            f"dataset id: expected '(namespace/)name-vN' like "
            f"'noether-control/pixel-pendulum/uniform-v0', got {dataset_id!r}"
        ) from error
    return Path(default_root() if root is None else root) / dataset_id


def hdf5_path(path: str | os.PathLike[str]) -> Path:
    """The ``main_data.hdf5`` of a dataset given as its directory, its ``data/`` or the file.

    Raises:
        DatasetError: nothing readable at ``path``.
    """
    given = Path(path)
    for candidate in (given / DATA_DIR / DATA_FILE, given / DATA_FILE, given):
        if candidate.is_file():
            return candidate
    if not given.exists():
        raise DatasetError(f"no dataset at {str(given)!r}: the path does not exist")
    raise DatasetError(
        f"expected a Minari dataset directory containing {DATA_DIR}/{DATA_FILE} (or the file "
        f"itself), got {str(given)!r}"
    )


def open_hdf5(path: str | os.PathLike[str]) -> h5py.File:
    """Open a dataset's HDF5 file read-only after checking it looks like a Minari dataset.

    Raises:
        DatasetError: missing, truncated/corrupt, or without ``episode_0/observations``.
    """
    file_path = hdf5_path(path)
    try:
        handle = h5py.File(file_path, "r")
    except OSError as error:
        raise DatasetError(
            f"{str(file_path)!r} is not a readable HDF5 file (truncated or corrupt?): {error}"
        ) from error
    try:
        first = handle.get("episode_0")
        if not isinstance(first, h5py.Group) or "observations" not in first:
            raise DatasetError(
                f"{str(file_path)!r}: expected Minari episode groups 'episode_<i>' with "
                f"observations, got top-level keys {sorted(handle.keys())[:5]}"
            )
    except DatasetError:
        handle.close()
        raise
    except (OSError, KeyError, RuntimeError) as error:
        handle.close()
        raise DatasetError(f"{str(file_path)!r} is corrupt: {error}") from error
    return handle


def dataset_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A dataset's size and source: ``{"total_steps", "total_episodes", "env_id"}``.

    Read from the ``metadata.json`` beside its HDF5 file (``env_id`` is None for data from no
    registered env).

    Raises:
        DatasetError: no readable dataset or metadata at ``path``.
    """
    file = hdf5_path(path).parent / METADATA_FILE
    try:
        metadata = json.loads(file.read_text())
        spec = metadata.get("env_spec")
        env_id = json.loads(spec)["id"] if isinstance(spec, str) else None
        return {"total_steps": int(metadata["total_steps"]),
                "total_episodes": int(metadata["total_episodes"]), "env_id": env_id}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{str(file)!r}: expected a Minari metadata file with total_steps "
                           f"and total_episodes, got an unreadable one ({error})") from error


def episode_buffer(
    episode_id: int,
    observations: np.ndarray | dict[str, np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
    infos: dict[str, np.ndarray],
) -> EpisodeBuffer:
    """A Minari ``EpisodeBuffer`` of one whole episode of ``T`` steps, from arrays.

    Shapes follow Minari's convention: ``observations`` and every ``infos`` value have
    ``T + 1`` entries (the reset observation/info first), ``actions`` ``(T, A)``,
    ``rewards``/``terminations``/``truncations`` ``(T,)``.
    """
    steps = len(rewards)
    if steps < 1:
        raise ValueError(f"expected an episode of at least one step, got {steps}")
    columns = {
        "actions": len(actions),
        "terminations": len(terminations),
        "truncations": len(truncations),
    }
    observation_columns = (
        observations if isinstance(observations, dict) else {"pixels": observations}
    )
    columns |= {f"observations/{key}": len(v) - 1 for key, v in observation_columns.items()}
    columns |= {f"infos/{key}": len(value) - 1 for key, value in infos.items()}
    wrong = {name: length for name, length in columns.items() if length != steps}
    if wrong:
        raise ValueError(
            f"episode {episode_id}: expected {steps} steps (observations/infos {steps + 1}) "
            f"in every column, got {wrong}"
        )
    return EpisodeBuffer(
        id=episode_id,
        observations=observations,
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
        infos=infos,
    )


def _group_arrays(node: h5py.Dataset | h5py.Group) -> np.ndarray | dict[str, Any]:
    """An HDF5 dataset as an array, a group as a dict of its members (recursively)."""
    if isinstance(node, h5py.Dataset):
        return node[()]
    return {key: _group_arrays(node[key]) for key in node}


def read_episodes(path: str | os.PathLike[str], first_id: int = 0) -> Iterator[EpisodeBuffer]:
    """Every episode of a dataset as an :class:`EpisodeBuffer`, in order, renumbered from
    ``first_id`` (one episode in memory at a time), e.g. to copy them into a new dataset.

    Raises:
        DatasetError: no readable dataset at ``path``.
    """
    with open_hdf5(path) as handle:
        count = sum(1 for key in handle if key.startswith("episode_"))
        for index in range(count):
            episode = handle[f"episode_{index}"]
            yield episode_buffer(
                first_id + index,
                _group_arrays(episode["observations"]),
                episode["actions"][()],
                episode["rewards"][()],
                episode["terminations"][()],
                episode["truncations"][()],
                _group_arrays(episode["infos"]) if "infos" in episode else {},
            )


IMAGE_COMPRESSIONS: tuple[str | None, ...] = ("gzip", "lzf", None)


def _image_arrays(observations: Any, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    """``(hdf5 name, array)`` of every uint8 ``(T+1, H, W, C)`` array in an observation tree."""
    if isinstance(observations, dict):
        for key, value in observations.items():
            yield from _image_arrays(value, f"{prefix}/{key}")
        return
    array = np.asarray(observations)
    if array.dtype == np.uint8 and array.ndim == 4:
        yield prefix, array


def _create_frame_datasets(
    file_path: Path, batch: list[EpisodeBuffer], compression: str | None
) -> None:
    """Create each episode's empty, per-frame-chunked image datasets before Minari fills them.

    Minari's HDF5 writer lets h5py guess chunks (about 50 frames by 16x16 pixels), so reading
    one frame would read dozens of chunks; it appends to datasets that already exist, so making
    them first with one chunk per frame fixes the layout without touching the format.
    """
    with h5py.File(file_path, "a", track_order=True) as handle:
        for buffer in batch:
            for name, frames in _image_arrays(buffer.observations, "observations"):
                handle.create_dataset(
                    f"episode_{buffer.id}/{name}",
                    shape=(0, *frames.shape[1:]),
                    maxshape=(None, *frames.shape[1:]),
                    chunks=(1, *frames.shape[1:]),
                    dtype=np.uint8,
                    compression=compression,
                )


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` for the duration of the block (it reads an env variable)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def check_writable(target: Path, overwrite: bool) -> None:
    """Raise :class:`DatasetExistsError` if ``target`` exists and ``overwrite`` is false."""
    if target.exists() and not overwrite:
        raise DatasetExistsError(
            f"a dataset already exists at {str(target)!r}; pass dataset.overwrite=true to replace "
            "it or choose another dataset.id / dataset.root"
        )


def write_dataset(
    target: str | os.PathLike[str],
    dataset_id: str,
    batches: Iterable[list[EpisodeBuffer]],
    *,
    env_spec: EnvSpec | None,
    observation_space: gym.Space,
    action_space: gym.Space,
    algorithm_name: str,
    description: str,
    extra_metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    image_compression: str | None = "gzip",
) -> Path:
    """Stream batches of episodes into a new Minari HDF5 dataset at ``target``, atomically.

    ``batches`` may be a generator: each list is appended as soon as it is produced, so only
    one batch is held in memory. ``target`` must end with ``dataset_id`` (Minari checks that
    the directory matches the id). ``extra_metadata`` (JSON-able) is stored in
    ``metadata.json``. ``env_spec`` (recorded so ``recover_environment`` works) may be None
    for data that comes from no registered env. Image observations (uint8 ``(T+1, H, W, C)``)
    are stored in one HDF5 chunk per frame, compressed losslessly with ``image_compression``
    (``"gzip"``, ``"lzf"`` or None), so a window of frames reads only its own frames. Returns
    ``target``.

    Raises:
        DatasetExistsError: ``target`` exists and ``overwrite`` is false (checked before and
            after collecting, so a slow collection cannot clobber a dataset made meanwhile).
        ValueError: ``batches`` was empty, or ``target`` does not end with ``dataset_id``.
    """
    import minari

    if image_compression not in IMAGE_COMPRESSIONS:
        raise ValueError(
            f"image_compression: expected one of {IMAGE_COMPRESSIONS}, got {image_compression!r}"
        )
    target = Path(target)
    if target.parts[-len(Path(dataset_id).parts) :] != Path(dataset_id).parts:
        raise ValueError(f"target: expected a path ending with {dataset_id!r}, got {str(target)!r}")
    check_writable(target, overwrite)
    with atomic_path(target, "dataset", "dataset.root") as staged:
        staging_root = staged.parent / "root"
        with _minari_root(staging_root), warnings.catch_warnings():
            # Minari nags about optional metadata (permalink, e-mail, eval env) we don't have
            warnings.filterwarnings("ignore", message=".*is set to None.*", category=UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                [],
                env=env_spec,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name=algorithm_name,
                author="noether-control",
                description=description,
                data_format="hdf5",
                jpeg_encoding=False,
            )
            written = 0
            for batch in batches:
                _create_frame_datasets(
                    dataset.storage.data_path / DATA_FILE, batch, image_compression
                )
                dataset.storage.update_episodes(batch)
                written += len(batch)
            if written == 0:
                raise ValueError("expected at least one episode, got none")
            if extra_metadata:
                dataset.storage.update_metadata({"noether_control": extra_metadata})
        (staging_root / dataset_id).rename(staged)
        check_writable(target, overwrite)
    return target
