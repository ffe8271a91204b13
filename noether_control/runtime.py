"""Run-time plumbing shared by every command: devices, seeding, run directories, safe writes.

Everything that writes a file the user keeps (datasets, checkpoints, results) goes through the
atomic helpers here: the data is written to a temporary sibling and renamed into place, so an
interrupted run never leaves a file that looks complete but isn't.
"""

from __future__ import annotations

import errno
import json
import os
import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device.

    ``"auto"`` picks CUDA when it is available and the CPU otherwise. Asking for CUDA on a
    machine without it raises ``ValueError`` instead of failing later inside a kernel.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}"
        ) from error
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {spec!r} requested but CUDA is not available; use device=auto")
    return device


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch once, in the entry point; return a fresh NumPy generator.

    Library code never draws from global RNGs: it takes the returned generator (or a
    ``torch.Generator``) explicitly. Raises ``ValueError`` for a seed NumPy cannot take.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed: expected an int in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def start_command(seed: int, threads: int | None) -> Path:
    """A command's first step: torch's CPU threads (``None``: its default), every global RNG
    seeded with ``seed``; returns the run directory."""
    if threads is not None and threads >= 1:
        torch.set_num_threads(threads)
    seed_everything(seed)
    return run_dir()


@contextmanager
def run_directory_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock while a command runs in it.

    Raises :class:`RunDirectoryInUseError`, naming the other process, when a live one holds it:
    two runs writing one directory would mix their files, and a second ``train`` would resume
    from the first's checkpoint while it is still being written. In a ``torchrun`` job, rank 0
    holds it for the job.
    """
    path = directory / LOCK_NAME
    # the other processes of one torchrun job share their rank 0's directory and lock
    first_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = _try_lock(path) if first_rank else None
    except OSError as error:
        # the first write of every command: a read-only disk shows here, before any work
        raise unwritable(directory, "the run's files", error.errno, "hydra.run.dir") from error
    if not first_rank:
        yield
        return
    if handle is None:
        holder = path.read_text().strip() or "another process"
        raise RunDirectoryInUseError(
            f"run directory {str(directory)!r} is in use by {holder}; wait for it to end or "
            "give this run another hydra.run.dir"
        )
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"noether-control (pid {os.getpid()})\n")
        handle.flush()
        yield
    finally:
        handle.close()


#: The folder of every command's Hydra config (``commands/NAME/NAME.yaml``, its presets beside).
COMMANDS_CONF = Path(__file__).resolve().parent / "conf" / "commands"


def compose_command(name: str, overrides: list[str]) -> DictConfig:
    """The config of ``noether-control NAME overrides`` as the command line composes it,
    presets included; also from inside another command's Hydra app (the demo composes its
    stages from the commands' own presets this way)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    # Hydra holds one global instance, and a running command's must survive this composition.
    outer = Singleton._instances.pop(GlobalHydra, None)
    try:
        with initialize_config_dir(config_dir=str(COMMANDS_CONF / name), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    finally:
        if outer is not None:
            Singleton._instances[GlobalHydra] = outer


def run_dir() -> Path:
    """The Hydra run directory of the current command, or the working directory outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


#: The lock file inside a staging folder (held while it is written) and a run directory.
LOCK_NAME = ".noether-control.lock"


class RunDirectoryInUseError(RuntimeError):
    """Another live process holds the run directory's lock."""


class ReportedError(RuntimeError):
    """An error whose message is already the whole report, e.g. the end of a failed child
    command's own output (which holds its one-line error or its traceback): the command line
    prints it as it is, without a traceback of its own."""


def _try_lock(path: Path) -> Any:
    """An open handle holding an exclusive ``flock`` on ``path``, or ``None`` if another process
    holds it (the lock dies with its process, however that ends)."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 (held open: closing it releases the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders of writes to ``target`` that a killed process left behind.

    A staging folder ``.NAME.<random suffix>`` is stale when its lock is free (the process that
    wrote it has died: a SIGKILL or a power cut skips every cleanup). Returns the folders
    removed.
    """
    import shutil

    removed = []
    for folder in target.parent.glob(f".{target.name}.*"):
        lock = folder / LOCK_NAME
        if not folder.is_dir() or folder.name.endswith(".old") or not lock.is_file():
            continue
        handle = _try_lock(lock)
        if handle is None:
            continue  # a live process is writing it
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            handle.close()
        removed.append(folder)
    return removed


class UnwritablePathError(OSError):
    """A file or folder the run keeps cannot be written: a read-only or full disk, no
    permission. The message names the path, the cause and what to do."""

    def __str__(self) -> str:
        # OSError's own text would be "[Errno N] strerror: filename" once errno is set
        return str(self.args[0])


#: OS errors that mean "this disk or folder takes no more writes", with the words a user reads.
_WRITE_FAILURES = {
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",
}

#: Libraries that wrap the OS error in their own name it only in the message (h5py: an OSError
#: or, when the file is closed, a RuntimeError "... errno = 28, error message = 'No space left
#: on device' ...").
_WRITE_FAILURE_TEXTS = {
    "no space left on device": errno.ENOSPC,
    "read-only file system": errno.EROFS,
    "disk quota exceeded": errno.EDQUOT,
}


#: Of those, the ones only a write can meet: a permission error may come from reading a file.
_DISK_FAILURES = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure(error: BaseException) -> int | None:
    """The errno of a read-only or full disk (``EROFS``, ``ENOSPC``, ...) behind ``error``, or
    ``None`` for other errors."""
    if not isinstance(error, OSError | RuntimeError):
        return None
    if isinstance(error, OSError) and error.errno in _DISK_FAILURES:
        return error.errno
    text = str(error).lower()
    return next((code for words, code in _WRITE_FAILURE_TEXTS.items() if words in text), None)


def unwritable(path: str | os.PathLike[str], what: str, code: int | None, setting: str,
               detail: str | None = None) -> UnwritablePathError:
    """The error for a ``what`` (``"checkpoint"``, ``"dataset"``, ...) that cannot be written
    to ``path``: its cause and the remedy (free space, or another ``setting``)."""
    reason = detail or _WRITE_FAILURES.get(code or 0, "the write failed")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or detail is not None:
        remedy = f"free space on that disk or give another {setting}"
    else:
        remedy = f"give a writable {setting}"
    error = UnwritablePathError(f"cannot write {what} to {str(path)!r}: {reason}; {remedy}")
    error.errno = code  # type: ignore[assignment]
    error.filename = str(path)
    return error


def _free_space(folder: Path) -> str:
    """``"N MiB free"`` on ``folder``'s disk, or ``"free space unknown"``."""
    import shutil

    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


@contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "file",
                setting: str = "hydra.run.dir") -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    Works for files and directories alike: write whatever you like at the yielded path. On an
    exception the temporary is removed and ``path`` keeps its previous content. The staging
    folder is locked while it is written, so that a later write to the same ``path`` can tell a
    killed process's leftovers (removed, with a note) from a live one's.

    A read-only, full or otherwise unwritable disk raises :class:`UnwritablePathError` naming
    ``what`` and ``path`` and suggesting another ``setting`` (the config key that chose the
    location), instead of the OS or library error.
    """
    import shutil

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for folder in remove_stale_staging(target):
            print(f"removed {folder}, the unfinished write of a run that was killed")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        lock = _try_lock(staging / LOCK_NAME)
    except OSError as error:
        # nothing of the caller's ran yet: every OS error here is about writing at `path`
        raise unwritable(target, what, error.errno, setting) from error
    temporary = staging / target.name
    try:
        try:
            yield temporary
            if target.is_dir() and not target.is_symlink():
                backup = target.with_name(f".{target.name}.old")
                shutil.rmtree(backup, ignore_errors=True)
                target.rename(backup)
                temporary.rename(target)
                shutil.rmtree(backup)
            else:
                os.replace(temporary, target)
        except (OSError, RuntimeError) as error:
            # the block may also read files: only errors that mean "the disk takes no more
            # writes" are about `path`; others keep their own message
            code = write_failure(error)
            if code is None or isinstance(error, UnwritablePathError):
                raise
            raise unwritable(target, what, code, setting) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.close()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], what: str = "checkpoint") -> None:
    """``torch.save`` that never leaves a truncated file at ``path``."""
    with atomic_path(path, what) as temporary:
        try:
            torch.save(obj, temporary)
        except RuntimeError as error:
            # torch's zip writer reports a failed write as its own RuntimeError (an
            # `inline_container.cc` "file write failed" or "unexpected pos"), without the errno
            if "PytorchStreamWriter" not in str(error) and "inline_container" not in str(error):
                raise
            detail = (f"the write failed part-way ({_free_space(temporary.parent)}: is the "
                      "disk full?)")
            raise unwritable(path, what, None, "hydra.run.dir", detail) from error


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NaN/inf are rejected: they are not JSON)."""
    with atomic_path(path, "results") as temporary:
        temporary.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def to_dataclass(cls: type[T], cfg: DictConfig | dict[str, Any]) -> T:
    """Validate a config node against the dataclass ``cls`` and return an instance.

    Unknown keys and values of the wrong type raise ``ValueError`` naming the key, so a typo in a
    Hydra override fails at start-up rather than being silently ignored.
    """
    if not is_dataclass(cls):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    from omegaconf.errors import MissingMandatoryValue

    schema = OmegaConf.structured(cls)
    try:
        merged = OmegaConf.merge(schema, cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except MissingMandatoryValue as error:
        key = error.full_key or "a required setting"
        raise ValueError(f"{key}: a required setting has no value; give it on the command line, "
                         f"e.g. {key}=...") from error
    except Exception as error:  # omegaconf raises several unrelated types for bad keys/values
        names = ", ".join(field.name for field in fields(cls))
        raise ValueError(
            f"invalid {cls.__name__} config: {error}; expected keys: {names}"
        ) from error


def kind_dataclass(group: str, cfg: Any, configs: Mapping[str, type[T]]) -> T:
    """The config of a group whose ``kind`` picks the dataclass among ``configs`` (kind -> type).

    ``cfg``: a config node (dict or DictConfig), validated by :func:`to_dataclass` against
    ``configs[cfg.kind]``, or an instance of one of ``configs``, returned as it is.
    """
    if isinstance(cfg, tuple(configs.values())):
        return cfg
    kind = cfg.get("kind") if isinstance(cfg, dict | DictConfig) else None
    if kind not in configs:
        raise ValueError(f"{group}.kind: expected one of {sorted(configs)}, got {kind!r}")
    return to_dataclass(configs[kind], cfg)


def require_choice(setting: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ``ValueError`` naming ``setting`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{setting}: expected one of {tuple(choices)}, got {value!r}")


def require_at_least(setting: str, value: Any, minimum: float, *, integer: bool = False,
                     optional: bool = False) -> None:
    """Raise ``ValueError`` naming ``setting`` unless ``value >= minimum``.

    ``integer``: ``value`` must also be an ``int`` (a ``bool`` is refused: ``True >= 1``);
    ``optional``: ``None`` is accepted (a setting whose ``null`` means "the default rule").
    """
    if optional and value is None:
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or (isinstance(value, float) and not integer)
    if not is_number or not value >= minimum:  # NaN compares False both ways
        kind = "an int" if integer else "a number"
        expected = f"{kind} >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"{setting}: expected {expected}, got {value!r}")
