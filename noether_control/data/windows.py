"""Fixed-length training windows served lazily from a collected Minari HDF5 dataset.

:class:`EpisodeWindows` is the interface the world-model training and evaluation code consume;
its signature and item layout are stable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from noether_control.data.minari_io import DatasetError, hdf5_path, open_hdf5

SPLITS: tuple[str, ...] = ("train", "val", "test")


def split_episodes(
    num_episodes: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, np.ndarray]:
    """Deterministically assign episode ids ``0..num_episodes-1`` to train/val/test.

    The ids are shuffled by ``np.random.default_rng(seed)``; the first ``round(f_train * n)``
    go to train, the next ``round(f_val * n)`` to val, the rest to test. Each split's ids are
    returned sorted, as int64 arrays. The same ``(num_episodes, fractions, seed)`` always
    gives the same split, so train, evaluation and later runs agree.

    Raises:
        ValueError: fractions not three non-negative numbers summing to 1.
    """
    if len(fractions) != 3:
        raise ValueError(
            f"split_fractions: expected 3 fractions (train, val, test), got {fractions!r}"
        )
    shares = np.asarray(fractions, dtype=np.float64)
    if np.any(shares < 0) or not np.isclose(shares.sum(), 1.0, atol=1e-6):
        raise ValueError(
            f"split_fractions: expected non-negative fractions summing to 1, got {tuple(fractions)}"
        )
    order = np.random.default_rng(seed).permutation(num_episodes)
    train_end = round(shares[0] * num_episodes)
    val_end = min(num_episodes, train_end + round(shares[1] * num_episodes))
    parts = (order[:train_end], order[train_end:val_end], order[val_end:])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLITS, parts, strict=True)}


class EpisodeWindows(Dataset[dict[str, torch.Tensor]]):
    """Windows of ``window`` consecutive steps from one split of a collected dataset.

    ``EpisodeWindows(path, window, split, *, stride=1, split_fractions=(0.8, 0.1, 0.1), seed=0)``

    Args:
        path: the dataset directory written by ``noether-control collect`` (the ``path`` in its
            ``results.json``), its ``data/`` directory, or its ``main_data.hdf5``.
        window: steps per window ``T`` (>= 1, at most the shortest episode in the split).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``; episodes are split, never
            windows, so no split sees another's episodes (see :func:`split_episodes`).
        stride: steps between the starts of consecutive windows of an episode (>= 1).
        split_fractions: train/val/test fractions of episodes, summing to 1.
        seed: seed of the episode shuffle behind the split.

    Item ``i`` is a dict of tensors (``T = window``)::

        "frames":  float32 (T, C, H, W) in [0, 1]   frame t is the observation before action t
        "actions": float32 (T, A)                   action t, applied to frame t
        "states":  float32 (T, S)                   true physical state of frame t
        "rewards": float32 (T,)                     reward for action t
        "energy":  float32 (T,)                     true energy of frame t

    Windows of an episode start at ``0, stride, 2*stride, ...`` while a full window fits
    (the final observation after the last action is never part of a window).

    Only the episode lengths are read up front; each item slices the frames from the HDF5
    file, so the frames are never all in memory (an episode's few floats per step of actions,
    states, rewards and energy are cached on first use). The HDF5 handle is opened lazily in
    the process that reads (and reopened after a fork), so ``DataLoader(num_workers>0)`` is
    safe.

    Attributes:
        num_dataset_episodes: episodes in the whole file, every split.
        episode_ids: int64 ``(E,)`` Minari ids of this split's episodes, sorted.
        episode_lengths: int64 ``(E,)`` steps (actions) of each of those episodes.
        image_size: ``H`` (= ``W``) of the frames.
        channels: ``C`` of the frames.
        action_dim: ``A``; state_dim: ``S``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        window: int,
        split: str,
        *,
        stride: int = 1,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
            raise ValueError(f"window: expected a positive int, got {window!r}")
        if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
            raise ValueError(f"stride: expected a positive int, got {stride!r}")
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split: expected one of {(*SPLITS, 'all')}, got {split!r}")
        self.path = hdf5_path(path)
        self.window = int(window)
        self.stride = int(stride)
        self.split = split
        with open_hdf5(self.path) as handle:
            names = [name for name in handle if name.startswith("episode_")]
            lengths = np.array(
                [int(handle[f"episode_{i}"].attrs["total_steps"]) for i in range(len(names))],
                dtype=np.int64,
            )
            first = handle["episode_0"]
            pixels = self._pixels(first)
            if pixels.dtype != np.uint8 or pixels.ndim != 4:
                raise DatasetError(
                    f"{str(self.path)!r}: expected uint8 (T+1, H, W, C) pixel observations, "
                    f"got {pixels.dtype} {pixels.shape} (was it collected with JPEG encoding?)"
                )
            height, width, channels = pixels.shape[1:]
            self.image_size = int(height)
            self.channels = int(channels)
            self.action_dim = int(first["actions"].shape[1])
            self.state_dim = int(self._states(first).shape[1])
            # every episode, not just the first: a field missing from a later one would
            # otherwise surface as a KeyError in the middle of training or evaluation
            for index in range(len(names)):
                self._check_fields(handle[f"episode_{index}"], index)
        if height != width:
            raise DatasetError(f"{str(self.path)!r}: expected square frames, got {height}x{width}")
        self.num_dataset_episodes = len(lengths)
        if split == "all":
            self.episode_ids = np.arange(len(lengths), dtype=np.int64)
        else:
            self.episode_ids = split_episodes(len(lengths), split_fractions, seed)[split]
        if len(self.episode_ids) == 0:
            raise ValueError(
                f"split {split!r} has no episodes ({len(lengths)} in the dataset, fractions "
                f"{tuple(split_fractions)}); collect more episodes or change split_fractions"
            )
        self.episode_lengths = lengths[self.episode_ids]
        shortest = int(self.episode_lengths.min())
        if self.window > shortest:
            raise ValueError(
                f"window: expected at most {shortest} steps (the shortest episode of split "
                f"{split!r}), got {self.window}"
            )
        starts_per_episode = (self.episode_lengths - self.window) // self.stride + 1
        self._episode_of_item = np.repeat(self.episode_ids, starts_per_episode)
        first_item = np.cumsum(starts_per_episode) - starts_per_episode
        offset = np.arange(len(self._episode_of_item)) - np.repeat(first_item, starts_per_episode)
        self._start_of_item = offset * self.stride
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None
        self._episodes: dict[int, tuple[h5py.Dataset, dict[str, np.ndarray]]] = {}

    def _check_fields(self, episode: h5py.Group, index: int) -> None:
        """Raise :class:`DatasetError` naming the first field episode ``index`` lacks."""
        observations = episode.get("observations")
        infos = episode.get("infos")
        has_states = (isinstance(infos, h5py.Group) and "state" in infos) or (
            isinstance(observations, h5py.Group) and "state" in observations)
        present = {
            "observations": observations is not None,
            "observations/pixels": not isinstance(observations, h5py.Group)
            or "pixels" in observations,
            "actions": "actions" in episode,
            "rewards": "rewards" in episode,
            "infos/energy": isinstance(infos, h5py.Group) and "energy" in infos,
            "infos/state (or observations/state)": has_states,
        }
        missing = [name for name, found in present.items() if not found]
        if missing:
            raise DatasetError(
                f"{str(self.path)!r}: episode_{index} lacks {', '.join(missing)}; expected "
                "every episode to hold the fields `noether-control collect` writes (collect "
                "the dataset again)"
            )

    @staticmethod
    def _pixels(episode: h5py.Group) -> h5py.Dataset:
        observations = episode["observations"]
        return observations["pixels"] if isinstance(observations, h5py.Group) else observations

    @staticmethod
    def _states(episode: h5py.Group) -> h5py.Dataset:
        infos = episode.get("infos")
        if infos is not None and "state" in infos:
            return infos["state"]
        observations = episode["observations"]
        if isinstance(observations, h5py.Group) and "state" in observations:
            return observations["state"]
        raise DatasetError("expected true states in infos/state or observations/state")

    def __len__(self) -> int:
        return len(self._episode_of_item)

    def window_index(self, index: int) -> tuple[int, int]:
        """``(episode_id, start_step)`` of item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        return int(self._episode_of_item[index]), int(self._start_of_item[index])

    def _file(self) -> h5py.File:
        # h5py handles must not cross a fork: each DataLoader worker opens its own
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = open_hdf5(self.path)
            self._handle_pid = os.getpid()
            self._episodes = {}
        return self._handle

    def _episode(self, episode_id: int) -> tuple[h5py.Dataset, dict[str, np.ndarray]]:
        """The episode's frame dataset and its small per-step columns as float32 arrays.

        The columns (a few floats per step) are cached per process on first use: reading them
        per item would cost four more HDF5 lookups each time, more than the frames themselves.
        """
        handle = self._file()
        cached = self._episodes.get(episode_id)
        if cached is None:
            episode = handle[f"episode_{episode_id}"]
            columns = {
                "actions": episode["actions"][()],
                "states": self._states(episode)[()],
                "rewards": episode["rewards"][()],
                "energy": episode["infos"]["energy"][()],
            }
            as_float32 = {key: value.astype(np.float32) for key, value in columns.items()}
            cached = (self._pixels(episode), as_float32)
            self._episodes[episode_id] = cached
        return cached

    def columns(self, episode_id: int) -> dict[str, np.ndarray]:
        """One episode's per-step float32 arrays without its frames: ``actions (T, A)``,
        ``states (T + 1, S)``, ``rewards (T,)`` and ``energy (T + 1,)`` (as stored)."""
        if episode_id not in self.episode_ids:
            raise ValueError(
                f"episode_id: expected one of this {self.split!r} split's episode_ids, "
                f"got {episode_id}"
            )
        return dict(self._episode(int(episode_id))[1])

    def episode_constants(self, episode_id: int) -> dict[str, float]:
        """The per-episode constants stored in an episode's ``infos`` (for the pendulum family:
        its ``gravity``, ``mass``/``length`` or ``mass1``…, ``damping``): every scalar column
        that keeps one value along the episode, by name, sorted. Empty when there is none."""
        if episode_id not in self.episode_ids:
            raise ValueError(
                f"episode_id: expected one of this {self.split!r} split's episode_ids, "
                f"got {episode_id}"
            )
        infos = self._file()[f"episode_{int(episode_id)}"].get("infos")
        constants: dict[str, float] = {}
        if not isinstance(infos, h5py.Group):
            return constants
        for name in sorted(infos):
            column = infos[name]
            if not isinstance(column, h5py.Dataset) or column.ndim != 1:
                continue
            values = column[()]
            if np.issubdtype(values.dtype, np.number) and np.all(values == values[0]):
                constants[name] = float(values[0])
        return constants

    def fingerprint(self) -> str:
        """SHA-256 of this split's episodes (ids, actions, states): the same data gives the same
        string wherever the file lies; another collection (seed, env, policy) another one."""
        digest = hashlib.sha256()
        for episode_id in self.episode_ids:
            columns = self._episode(int(episode_id))[1]
            digest.update(np.asarray([episode_id, len(columns["actions"])], np.int64).tobytes())
            digest.update(columns["actions"].tobytes())
            digest.update(columns["states"].tobytes())
        return digest.hexdigest()

    def episode(self, episode_id: int) -> dict[str, torch.Tensor]:
        """All steps of one episode of this split, as one window of its full length ``T``
        (same layout as an item; ``episode_id`` from :attr:`episode_ids`)."""
        if episode_id not in self.episode_ids:
            raise ValueError(
                f"episode_id: expected one of this {self.split!r} split's episode_ids, "
                f"got {episode_id}"
            )
        pixels, columns = self._episode(int(episode_id))
        steps = slice(0, len(columns["actions"]))
        frames = torch.from_numpy(pixels[steps]).permute(0, 3, 1, 2).float().div_(255.0)
        return {"frames": frames} | {key: torch.from_numpy(value.copy())
                                     for key, value in columns.items()}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        episode_id, start = self.window_index(index)
        pixels, columns = self._episode(episode_id)
        steps = slice(start, start + self.window)
        frames = torch.from_numpy(pixels[steps]).permute(0, 3, 1, 2).float().div_(255.0)
        return {"frames": frames} | {
            key: torch.from_numpy(value[steps].copy()) for key, value in columns.items()
        }

    def close(self) -> None:
        """Close this process's HDF5 handle (reopened on the next item)."""
        handle = getattr(self, "_handle", None)
        if handle is not None and self._handle_pid == os.getpid():
            handle.close()
        self._handle = None
        self._handle_pid = None
        self._episodes = {}

    def __getstate__(self) -> dict[str, Any]:
        # a spawned worker gets a copy without the parent's open handle
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_handle_pid"] = None
        state["_episodes"] = {}
        return state

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EpisodeWindows({str(self.path)!r}, window={self.window}, split={self.split!r}, "
            f"stride={self.stride}: {len(self.episode_ids)} episodes, {len(self)} windows)"
        )


def mirror_window(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The left–right mirror image of a window or episode (same layout as an item of
    :class:`EpisodeWindows`): frames flipped horizontally, actions and states negated, rewards and
    energies unchanged.

    Exact for the pendulum family: its states are the links' angles from upright then their
    angular velocities, its physics and rewards are unchanged when every angle, velocity and
    torque changes sign, and its renderer draws the angle ``−θ`` as the mirror image of ``θ``
    (tests/test_envs_rendering.py checks all three on the envs)."""
    return {"frames": item["frames"].flip(-1), "actions": -item["actions"],
            "states": -item["states"], "rewards": item["rewards"], "energy": item["energy"]}


class MirroredWindows(Dataset[dict[str, torch.Tensor]]):
    """Every window of ``base`` and then its mirror image (:func:`mirror_window`): twice the
    windows, and the world model sees that the physics is symmetric instead of having to infer
    it from the episodes that happened to be collected.

    Items ``0 … len(base) − 1`` are ``base``'s, item ``len(base) + i`` is the mirror of item
    ``i``. Episode ``e + num_episodes`` (``num_episodes``: episodes in ``base``'s file) is the
    mirror of episode ``e``, so :attr:`episode_ids` lists ``base``'s ids and then theirs, and
    :meth:`episode` serves both (what the dynamics phase of training reads). The attributes
    ``image_size``, ``channels``, ``action_dim``, ``state_dim``, ``path`` and ``window`` are
    ``base``'s.
    """

    def __init__(self, base: EpisodeWindows) -> None:
        if not isinstance(base, EpisodeWindows):
            raise TypeError(f"base: expected EpisodeWindows, got {type(base).__name__}")
        self.base = base
        self.num_episodes = base.num_dataset_episodes
        self.episode_ids = np.concatenate([base.episode_ids, base.episode_ids + self.num_episodes])
        self.episode_lengths = np.concatenate([base.episode_lengths, base.episode_lengths])
        for name in ("image_size", "channels", "action_dim", "state_dim", "path", "window"):
            setattr(self, name, getattr(base, name))

    def __len__(self) -> int:
        return 2 * len(self.base)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        index %= len(self)
        if index < len(self.base):
            return self.base[index]
        return mirror_window(self.base[index - len(self.base)])

    def episode(self, episode_id: int) -> dict[str, torch.Tensor]:
        """All steps of episode ``episode_id`` of :attr:`episode_ids` (a mirrored one when it
        is ``num_episodes`` or more)."""
        if episode_id not in self.episode_ids:
            raise ValueError(
                f"episode_id: expected one of this {self.base.split!r} split's episode_ids "
                f"(mirrored ones from {self.num_episodes} on), got {episode_id}"
            )
        if episode_id < self.num_episodes:
            return self.base.episode(episode_id)
        return mirror_window(self.base.episode(episode_id - self.num_episodes))

    def fingerprint(self) -> str:
        """The base split's fingerprint, marked as mirrored (another training set)."""
        return hashlib.sha256(f"mirrored:{self.base.fingerprint()}".encode()).hexdigest()

    def close(self) -> None:
        """Close the base's HDF5 handle."""
        self.base.close()

    def __repr__(self) -> str:
        return f"MirroredWindows({self.base!r}: {len(self)} windows)"
