"""The ``noether-control COMMAND [hydra overrides...]`` entry point.

Each command is a Hydra app whose primary config is ``conf/commands/COMMAND/COMMAND.yaml`` (its
``experiment/`` presets beside it, the shared groups such as ``env/`` in ``conf/``) and whose
``run(cfg)`` function lives in the module named in :data:`COMMANDS`. Commands are imported
lazily so that ``noether-control --help`` stays fast and a missing optional dependency of one
command does not break the others.

A bad input that our own checks catch (see :func:`is_user_error`) is printed as one line naming
the setting, with exit status 1; ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows its traceback, and
every other error keeps Hydra's traceback so that it can be reported.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from omegaconf import DictConfig


@dataclass(frozen=True)
class Command:
    """A CLI command: the module holding ``run(cfg) -> None`` and a one-line summary."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "collect": Command(
        "noether_control.agents.collect",
        "collect episodes from a pixel env into a Minari dataset",
    ),
    "train": Command(
        "noether_control.training.train",
        "train the action-conditioned SVG world model on a collected dataset",
    ),
    "evaluate": Command(
        "noether_control.evaluation.evaluate",
        "measure a world model checkpoint's predictions per horizon",
    ),
    "compare": Command(
        "noether_control.experiments.compare",
        "compare baseline, more-steps control and Noether checkpoints per horizon",
    ),
    "plan": Command(
        "noether_control.agents.plan",
        "evaluate an agent (MPC through a world model, oracle, random) on seeded episodes",
    ),
    "plan_table": Command(
        "noether_control.agents.plan_table",
        "several plan results side by side, paired by episode seed",
    ),
    "refit_reward": Command(
        "noether_control.agents.refit_reward",
        "refit a trained world model's reward head on its own rollouts, for planning",
    ),
    "rl": Command(
        "noether_control.agents.rl",
        "train an SB3 agent inside a world model, then evaluate it on the real env",
    ),
    "mbrl": Command(
        "noether_control.agents.mbrl",
        "the model-based loop: collect with MPC, grow the data, continue the model, evaluate",
    ),
    "discover": Command(
        "noether_control.discovery.discover",
        "find conserved quantities (with units) in measured trajectories",
    ),
    "demo": Command(
        "noether_control.experiments.demo",
        "the main job end to end with the small default config",
    ),
}


def usage() -> str:
    """The text printed for ``noether-control --help``."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: noether-control COMMAND [--debug] [hydra overrides...]",
        "       python -m noether_control COMMAND [hydra overrides...]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        "Every command takes Hydra overrides (key=value), e.g. experiment=smoke or",
        "hydra.run.dir=runs/x; `noether-control COMMAND --help` shows its config.",
        "A bad setting is reported in one line; --debug (or HYDRA_FULL_ERROR=1) shows the",
        "full traceback.",
    ]
    return "\n".join(lines)


def command_help(name: str, overrides: list[str]) -> str:
    """The text printed for ``noether-control COMMAND --help [overrides]``: usage, the config
    groups with their options (the shared ones too, which Hydra's own help does not list) and
    the config as composed with ``overrides``."""
    from omegaconf import OmegaConf

    from noether_control.runtime import COMMANDS_CONF, compose_command

    conf = COMMANDS_CONF.parent
    command_dir = COMMANDS_CONF / name
    lines = [f"usage: noether-control {name} [hydra overrides...]",
             f"  {COMMANDS[name].summary}", "", "config groups (group=option):"]
    for entry in OmegaConf.load(command_dir / f"{name}.yaml").get("defaults", []):
        if isinstance(entry, str):
            continue
        key = next(iter(entry)).lstrip("/")  # e.g. "data", or "env@collect.env" in the demo
        group = key.split("@")[0]
        folder = command_dir / group if (command_dir / group).is_dir() else conf / group
        lines.append(f"  {key}: {', '.join(sorted(p.stem for p in folder.glob('*.yaml')))}")
    cfg = compose_command(name, overrides)
    lines += ["", "config (override any key with key=value; Hydra's own options: --hydra-help):",
              OmegaConf.to_yaml(cfg)]
    return "\n".join(lines)


def hydra_app(name: str) -> Callable[[], None]:
    """Wrap command ``name``'s ``run(cfg)`` as a Hydra app reading its primary config."""
    import hydra

    run = importlib.import_module(COMMANDS[name].module).run
    # An absolute path makes Hydra read the folder from disk; a relative one would be resolved as
    # a Python package, which these config folders are not.
    config_dir = Path(__file__).resolve().parent / "conf" / "commands" / name

    @hydra.main(version_base="1.3", config_path=str(config_dir), config_name=name)
    def app(cfg: DictConfig) -> None:
        from noether_control.runtime import ReportedError, run_dir, run_directory_lock

        try:
            with run_directory_lock(run_dir()):
                run(cfg)
        except Exception as error:
            if _full_errors():
                raise  # Hydra prints the whole traceback
            if isinstance(error, ReportedError):
                print(f"noether-control {name}: {str(error).rstrip()}", file=sys.stderr)
                raise SystemExit(1) from None
            if not is_user_error(error):
                raise  # Hydra prints the traceback: a bug, or input we failed to check
            print(f"noether-control {name}: {one_line(error)}", file=sys.stderr)
            raise SystemExit(1) from None

    return app


#: Set to 1 by ``--debug`` (or by the user): a user error shows Hydra's whole traceback too.
FULL_ERROR_VARIABLE = "HYDRA_FULL_ERROR"


def _full_errors() -> bool:
    """Whether every error is to be shown with its full traceback (as Hydra reads the
    variable: only the value 1 counts)."""
    return os.environ.get(FULL_ERROR_VARIABLE) == "1"


#: The switch that shows the traceback of a user error (taken out before Hydra sees the args).
DEBUG_FLAG = "--debug"


def _package_folders() -> tuple[Path, ...]:
    """The source folders of this package (``envs/`` and ``agents/`` install as its
    subpackages but may live beside it in an editable checkout)."""
    import noether_control

    folders = [Path(noether_control.__file__).resolve().parent]
    for name in ("noether_control.envs", "noether_control.agents"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            folders.append(Path(module.__file__).resolve().parent)
    return tuple(folders)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is this package's answer to a bad input, printed as one line.

    That is a ``ValueError`` (``TypeError`` is left out: Python raises it for a wrong call, a
    bug), a missing or existing file, an unwritable path or a busy run directory, *raised by
    this package's own code*: our checks name the setting and the remedy. The same types raised
    inside a library (torch, numpy, h5py) are input we failed to check, or bugs: those keep
    their traceback so that they can be reported.
    """
    from noether_control.runtime import RunDirectoryInUseError, UnwritablePathError

    answers = (ValueError, FileNotFoundError, FileExistsError, UnwritablePathError,
               RunDirectoryInUseError)
    if not isinstance(error, answers):
        return False
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    raised_in = Path(traceback.tb_frame.f_code.co_filename).resolve()
    return any(raised_in.is_relative_to(folder) for folder in _package_folders())


def one_line(error: BaseException) -> str:
    """``error``'s message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


#: The exception a deferred signal raises once it lands outside a finaliser.
_PENDING: list[BaseException] = []


def _inside_finaliser(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs in a ``__del__`` or a weakref callback, where Python prints and
    drops an exception (``Exception ignored in: ...``) instead of unwinding."""
    while frame is not None:
        if frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith("weakref.py"):
            return True
        frame = frame.f_back
    return False


def _raise_outside_finalisers(error: BaseException, frame: FrameType | None) -> None:
    """Raise ``error`` now, or, inside a finaliser, 10 ms later (SIGALRM) until it lands."""
    if _inside_finaliser(frame):
        _PENDING[:] = [error]
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        return
    _PENDING.clear()
    raise error


def _exit_on_sigterm(_: int, frame: FrameType | None) -> None:
    """SIGTERM: ``SystemExit(143)`` (or a deferred Ctrl-C), never dropped in a finaliser."""
    pending = _PENDING[0] if _PENDING else SystemExit(128 + signal.SIGTERM)
    _raise_outside_finalisers(pending, frame)


def _interrupt(_: int, frame: FrameType | None) -> None:
    """SIGINT (Ctrl-C): ``KeyboardInterrupt``, never dropped in a finaliser."""
    _raise_outside_finalisers(KeyboardInterrupt(), frame)


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a command's Hydra app."""
    args = sys.argv[1:] if argv is None else list(argv)
    if DEBUG_FLAG in args:
        args = [arg for arg in args if arg != DEBUG_FLAG]
        os.environ[FULL_ERROR_VARIABLE] = "1"  # Hydra reads it too: the traceback in full
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return
    name = args[0]
    if name not in COMMANDS:
        print(
            f"noether-control: unknown command {name!r}; expected one of {sorted(COMMANDS)}",
            file=sys.stderr,
        )
        print(usage(), file=sys.stderr)
        raise SystemExit(2)
    if {"-h", "--help"} & set(args[1:]):
        print(command_help(name, [a for a in args[1:] if a not in {"-h", "--help"}]))
        return
    # SIGTERM (kill, a scheduler's time limit) unwinds like Ctrl-C, so the cleanup of
    # half-written datasets and checkpoints in `finally` blocks runs
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGALRM, _exit_on_sigterm)
    # Ctrl-C landing in a weakref callback was printed and dropped, and the run went on
    signal.signal(signal.SIGINT, _interrupt)
    app = hydra_app(name)
    if not _full_errors():
        _check_run_directory(name, args[1:])
    sys.argv = [f"noether-control {name}", *args[1:]]
    app()


def _check_run_directory(name: str, overrides: list[str]) -> None:
    """Exit with one line when a ``hydra.run.dir=`` given on the command line cannot be
    created or written: Hydra creates it and opens its log there before any of our code runs,
    and would print its traceback."""
    import tempfile

    from noether_control.runtime import unwritable

    given = [arg.split("=", 1)[1] for arg in overrides if arg.startswith("hydra.run.dir=")]
    if not given or "$" in given[-1]:
        return  # Hydra's default (or an interpolation) is resolved only by Hydra
    folder = Path(given[-1])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass  # an existing folder on a read-only disk
    except OSError as error:
        message = unwritable(folder, "the run's files", error.errno, "hydra.run.dir")
        print(f"noether-control {name}: {message}", file=sys.stderr)
        raise SystemExit(1) from None
