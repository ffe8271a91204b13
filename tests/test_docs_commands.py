"""Every command that README.md and docs/*.md write still works as written.

The commands are read from the fenced shell blocks and the inline code of the docs:
``noether-control ...`` (also ``python -m noether_control`` and ``torchrun ... -m
noether_control``), ``python benchmarks/X.py ...``, ``bash benchmarks/X.sh`` and any other
``benchmarks/...`` path. Nothing is run: a ``noether-control`` command is composed in-process
exactly as its Hydra app would compose it and validated as its ``run(cfg)`` validates before it
starts working; a benchmark's argparse parser parses the arguments and the script stops there;
a shell script must parse with ``bash -n``. A misspelt key, a missing preset, an invalid value,
a missing script or an unknown flag fails with the doc file and line.

Placeholders are read as the docs write them: a path written in capitals (``DATASET``,
``RUN_DIR``, ``CHECKPOINT``) is a string like any other path and is kept; the few that stand for
a number are substituted (:data:`SUBSTITUTES`); a value in angle brackets (``agent=<planner>``)
is left out, and so is a lone ``...`` (overrides left out): such a command is checked key by key
but not validated as a whole, nor is a command named in prose without ``noether-control``
(``train experiment=demo``). :data:`SKIPPED` says why each part that is not checked is not.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from noether_control.agents import mbrl
from noether_control.agents.collect import COLLECT_OBS_TYPE, CollectConfig
from noether_control.agents.mbrl import MBRLConfig
from noether_control.agents.plan import PlanConfig
from noether_control.agents.plan_table import PlanTableConfig
from noether_control.agents.planners import planner_config
from noether_control.agents.policies import MPCPolicyConfig, policy_config
from noether_control.agents.refit_reward import RefitRewardConfig
from noether_control.agents.rl import RLConfig
from noether_control.cli import COMMANDS, DEBUG_FLAG, command_help, one_line, usage
from noether_control.data.env_config import EnvConfig, make_vector_env
from noether_control.discovery.discover import DiscoverConfig
from noether_control.evaluation.evaluate import EvaluateConfig
from noether_control.evaluation.evaluate import _check_config as check_evaluate_config
from noether_control.experiments.compare import CompareConfig
from noether_control.experiments.compare import _check as check_compare_config
from noether_control.experiments.demo import DemoConfig, check_stages
from noether_control.runtime import compose_command, to_dataclass
from noether_control.training.config import TrainCommandConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Fenced blocks whose lines are shell commands (a block without a language too: it may hold
#: a console transcript); Python, YAML and JSON blocks are not.
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "text"}

#: Placeholder values that stand for a number, and what stands in for them.
SUBSTITUTES = {"K": "10"}

#: Lone arguments that stand for overrides left out.
ELISIONS = ("...", "…")

#: Why some documented arguments or commands are not checked.
SKIPPED = {
    "template": "a usage pattern: COMMAND stands for any command",
    "elided": "'...' leaves overrides out: every key, preset and value written is checked, the "
              "command's whole-config validation is not (the left-out part may complete it)",
    "shorthand": "a command named in prose without noether-control and without all its "
                 "settings: checked key by key like an elided one",
    "placeholder": "a value in angle brackets is a placeholder: that override is left out",
    "launcher": "the Hydra launcher plugin it selects (e.g. hydra-submitit-launcher) is not "
                "installed here: the launcher's overrides are left out",
}


@dataclass(frozen=True)
class DocCommand:
    """A command as a doc writes it: where, its words (shell-split, without leading ``VAR=value``
    assignments), whether it is inline code, and the one-line error the doc shows it ending
    with, if any."""

    doc: Path
    line: int
    words: tuple[str, ...]
    inline: bool = False
    shorthand: bool = False
    """``COMMAND overrides`` without ``noether-control`` (prose: ``train experiment=demo``)."""
    expected_error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def text(self) -> str:
        return shlex.join(self.words)


def shell_blocks(text: str) -> Iterator[list[tuple[int, str]]]:
    """The lines of every fenced shell block as ``(line number, logical line)``, continuation
    lines (``\\``) joined onto the line they continue."""
    language: str | None = None
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = line.strip()
        if fence.startswith("```"):
            if language in SHELL_BLOCKS:
                yield block
            language = None if language is not None else fence[3:].strip().lower()
            block = []
        elif language in SHELL_BLOCKS:
            if block and block[-1][1].endswith("\\"):
                start, joined = block.pop()
                block.append((start, joined[:-1] + " " + line.strip()))
            else:
                block.append((number, line.strip()))


def block_commands(block: list[tuple[int, str]]) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, command line, the output line after it)``: in a console transcript
    (lines with a ``$ `` prompt) the prompted lines, elsewhere every line."""
    transcript = any(line.startswith("$ ") for _, line in block)
    for index, (number, line) in enumerate(block):
        if transcript and not line.startswith("$ "):
            continue
        output = block[index + 1][1] if transcript and index + 1 < len(block) else None
        yield number, line.removeprefix("$ "), output


def without_fences(text: str) -> str:
    """``text`` with every fenced block's lines blanked (line numbers kept)."""
    lines, inside = [], False
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        lines.append("" if inside or fence else line)
        inside ^= fence
    return "\n".join(lines)


#: Inline code, possibly wrapped over lines of one paragraph.
INLINE_CODE = re.compile(r"(?<!`)`([^`]+?)`(?!`)")


def inline_code(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, content)`` of every inline code span outside fenced blocks."""
    prose = without_fences(text)
    for match in INLINE_CODE.finditer(prose):
        if "\n\n" not in match.group(1):
            yield prose.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())


def split_words(line: str) -> list[str]:
    """Shell words of ``line`` without a trailing comment or leading ``VAR=value``
    assignments; empty for a line that is not valid shell."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return joined_placeholders(words)


def joined_placeholders(words: list[str]) -> list[str]:
    """``words`` with a placeholder in angle brackets that spans several words joined into one
    (``checkpoint=<the planning model>``)."""
    joined: list[str] = []
    for word in words:
        if joined and joined[-1].count("<") > joined[-1].count(">"):
            joined[-1] += " " + word
        else:
            joined.append(word)
    return joined


def is_shorthand(words: list[str]) -> bool:
    """Whether ``words`` are ``COMMAND key=value ...`` (a command named in prose)."""
    return len(words) > 1 and words[0] in COMMANDS and all(
        "=" in word or word in ELISIONS for word in words[1:])


def is_documented_command(words: list[str]) -> bool:
    """Whether ``words`` start one of the commands this test checks."""
    return bool(words) and (cli_arguments(words) is not None or script_of(words) is not None
                            or words[0].startswith("benchmarks/") or words[0] == "make")


#: How the CLI prints the one-line error that ends a command.
ERROR_LINE = re.compile(r"noether-control \w+: (.*)")


def doc_commands(doc: Path, text: str) -> list[DocCommand]:
    """Every checked command of the doc ``doc`` whose text is ``text``, fenced ones first."""
    commands: list[DocCommand] = []
    for block in shell_blocks(text):
        for number, line, output in block_commands(block):
            words = split_words(line)
            if is_documented_command(words):
                shown = ERROR_LINE.fullmatch(output or "")
                commands.append(DocCommand(doc, number, tuple(words),
                                           expected_error=shown and shown.group(1)))
    for number, code in inline_code(text):
        words = split_words(code)
        if is_documented_command(words) or is_shorthand(words):
            commands.append(DocCommand(doc, number, tuple(words), inline=True,
                                       shorthand=is_shorthand(words)))
    return commands


# ---------------------------------------------------------------------------- noether-control
def cli_arguments(words: list[str] | tuple[str, ...]) -> list[str] | None:
    """The arguments after ``noether-control`` (or ``python -m noether_control``, or
    ``torchrun ... -m noether_control``) in ``words``; ``None`` for another command."""
    if words and words[0] == "noether-control":
        return list(words[1:])
    if words and (words[0] == "torchrun" or Path(words[0]).name.startswith("python")):
        for index in range(1, len(words) - 1):
            if words[index] == "-m" and words[index + 1] == "noether_control":
                return list(words[index + 2:])
    return None


#: Each command's config dataclass, which its ``run(cfg)`` converts the composed config to.
CONFIG_CLASSES: dict[str, type] = {
    "collect": CollectConfig,
    "train": TrainCommandConfig,
    "evaluate": EvaluateConfig,
    "compare": CompareConfig,
    "plan": PlanConfig,
    "plan_table": PlanTableConfig,
    "rl": RLConfig,
    "refit_reward": RefitRewardConfig,
    "mbrl": MBRLConfig,
    "discover": DiscoverConfig,
    "demo": DemoConfig,
}


def env_check(env: EnvConfig, **overrides: str) -> None:
    """The env a command would make: a registered id whose kwargs its constructor accepts."""
    make_vector_env(env, 1, **overrides).close()


def check_collect(config: CollectConfig) -> None:
    policy = policy_config(config.policy)
    if isinstance(policy, MPCPolicyConfig):
        planner_config(policy.planner)
    env_check(config.env, obs_type=COLLECT_OBS_TYPE)


def check_plan(config: PlanConfig) -> None:
    config.validate()
    if config.agent.kind in ("mpc", "oracle"):
        planner_config(config.planner)
    env_check(config.env, obs_type="pixels")


def check_plan_table(config: PlanTableConfig) -> None:
    assert config.runs, "runs: expected at least one plan run, got none"
    assert config.reference in (None, *config.runs), (
        f"reference: expected one of {sorted(config.runs)}, got {config.reference!r}")


def check_rl(config: RLConfig) -> None:
    config.validate()
    env_check(config.env)


#: Each command's checks of its config before it starts working (as its ``run`` makes them),
#: beyond the conversion to its dataclass.
CHECKS: dict[str, Callable[[Any], None]] = {
    "collect": check_collect,
    "train": TrainCommandConfig.validate,
    "evaluate": check_evaluate_config,
    "compare": check_compare_config,
    "plan": check_plan,
    "plan_table": check_plan_table,
    "rl": check_rl,
    "refit_reward": RefitRewardConfig.validate,
    "mbrl": MBRLConfig.validate,
    "discover": DiscoverConfig.validate,
    "demo": check_stages,
}


def mbrl_stages(config: MBRLConfig) -> list[tuple[str, list[str]]]:
    """``(command, overrides)`` of the loop's stages in its first two iterations (collect with
    OU, then with the agent; train, then continue; the refit; the guide; plan or rl), as the
    loop builds them."""
    started: list[tuple[str, list[str]]] = []

    def record(directory: Path, command: str, overrides: list[str]) -> dict[str, object]:
        started.append((command, list(overrides)))
        return {}

    run, model, agent = Path("RUN_DIR"), Path("MODEL_DIR"), Path("AGENT_DIR")
    guide = Path("GUIDE_DIR") if config.guide_steps else None
    with mock.patch.object(mbrl, "run_stage", record):
        mbrl.collect_stage(config, run, 0, None, None, None, None)
        mbrl.train_stage(config, run, 0, "DATASET", None)
        if config.refit_reward:
            mbrl.refit_stage(config, run, 0, Path("TRAINED_DIR"))
        if guide is not None:
            mbrl.guide_stage(config, run, 0, model)
        mbrl.agent_stage(config, run, 0, model, guide)
        if config.iterations >= 1:
            mbrl.collect_stage(config, run, 1, "DATASET", model, agent, guide)
            mbrl.train_stage(config, run, 1, "DATASET", model)
    return started


def test_every_command_is_checked() -> None:
    assert set(CHECKS) == set(CONFIG_CLASSES) == set(COMMANDS)


def launcher_available(name: str) -> bool:
    """Whether Hydra's launcher plugin ``name`` (``joblib``, ``submitit_slurm``) is installed."""
    package = f"hydra_plugins.hydra_{name.split('_')[0]}_launcher"
    return importlib.util.find_spec(package) is not None


@dataclass
class Prepared:
    """A command's overrides ready to compose, and why some of the doc's words were left out."""

    overrides: list[str] = field(default_factory=list)
    help: bool = False
    multirun: bool = False
    skipped: list[str] = field(default_factory=list)


def prepare(arguments: list[str]) -> Prepared:
    """The overrides the CLI would hand to Hydra, placeholders substituted."""
    prepared = Prepared()
    launchers = [a.partition("=")[2] for a in arguments if a.startswith("hydra/launcher=")]
    absent = any(not launcher_available(launcher) for launcher in launchers)
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if argument in ("-h", "--help"):
            prepared.help = True
        elif argument in ("-m", "--multirun"):
            prepared.multirun = True
        elif argument == DEBUG_FLAG:
            continue  # taken out by the CLI before Hydra sees the arguments
        elif argument in ELISIONS:
            prepared.skipped.append("elided")
        elif re.fullmatch(r"<.*>", value):
            prepared.skipped.append("placeholder")
        elif absent and key.startswith(("hydra/launcher", "hydra.launcher.")):
            if "launcher" not in prepared.skipped:
                prepared.skipped.append("launcher")
        else:
            prepared.overrides.append(f"{key}={SUBSTITUTES.get(value, value)}" if equals
                                      else argument)
    return prepared


def each_run(prepared: Prepared) -> list[list[str]]:
    """The override lists of the runs: one, or with ``-m`` one per point of the sweep."""
    if not prepared.multirun:
        return [prepared.overrides]
    parsed = OverridesParser.create().parse_overrides(prepared.overrides)
    return [run for batch in BasicSweeper.split_arguments(parsed, None) for run in batch]


@functools.cache
def composed(name: str, overrides: tuple[str, ...]) -> DictConfig:
    """``compose_command(name, overrides)``, once for the commands several docs write."""
    return compose_command(name, list(overrides))


def filled(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with each required value (``???``) set to a placeholder string."""
    cfg = cfg.copy()
    for key in OmegaConf.missing_keys(cfg):
        OmegaConf.update(cfg, key, "LEFT_OUT")
    return cfg


@contextmanager
def hydra_app_running(overrides: list[str]) -> Iterator[None]:
    """Hydra's run-time config as a command's app sees it: ``${hydra:runtime.output_dir}`` is
    the ``hydra.run.dir`` given (or a placeholder)."""
    given = [o.partition("=")[2] for o in overrides if o.startswith("hydra.run.dir=")]
    hydra = OmegaConf.structured(HydraConf)
    hydra.runtime.output_dir = given[-1] if given else "RUN_DIR"
    instance = HydraConfig.instance()
    outer = instance.cfg
    instance.set_config(OmegaConf.create({"hydra": hydra}))
    try:
        yield
    finally:
        instance.cfg = outer


def check_cli_command(name: str, overrides: list[str], partial: bool = False) -> None:
    """Compose ``noether-control name overrides`` as its Hydra app would, convert it to its
    dataclass and (unless ``partial``: some overrides were left out) check it as ``run`` does,
    and the commands it would start."""
    cfg = composed(name, tuple(overrides))
    with hydra_app_running(overrides):
        config = to_dataclass(CONFIG_CLASSES[name], filled(cfg) if partial else cfg)
    if partial:
        return
    CHECKS[name](config)
    if isinstance(config, MBRLConfig):  # the only command that starts others
        for command, stage_overrides in mbrl_stages(config):
            check_cli_command(command, stage_overrides)


def check_noether_control(command: DocCommand, arguments: list[str]) -> list[str]:
    """Check one ``noether-control`` command (``arguments``: the words after
    ``noether-control``); returns why parts of it were not checked."""
    if not arguments or arguments[0] in ("-h", "--help", "help"):
        assert "commands:" in usage()
        return []
    name = arguments[0]
    if name == "COMMAND":
        return [SKIPPED["template"]]
    assert name in COMMANDS, f"unknown command {name!r}; expected one of {sorted(COMMANDS)}"
    prepared = prepare(arguments[1:])
    if command.shorthand:
        prepared.skipped.append("shorthand")
    partial = bool({"elided", "shorthand", "placeholder"} & set(prepared.skipped))
    if prepared.help:
        command_help(name, prepared.overrides)
    elif command.inline and not arguments[1:]:
        compose_command(name, [])  # a command named in a sentence, not a command line
    elif command.expected_error is not None:
        with pytest.raises(ValueError) as raised:
            check_cli_command(name, prepared.overrides)
        assert one_line(raised.value) == command.expected_error, (
            f"the doc shows the error {command.expected_error!r}, the command says "
            f"{one_line(raised.value)!r}")
    else:
        for overrides in each_run(prepared):
            check_cli_command(name, overrides, partial)
    return [SKIPPED[reason] for reason in dict.fromkeys(prepared.skipped)]


# ---------------------------------------------------------------------------- benchmarks
def script_of(words: list[str] | tuple[str, ...]) -> str | None:
    """The ``benchmarks/...`` script that ``python``/``bash`` runs in ``words``, if any."""
    if len(words) >= 2 and words[1].startswith("benchmarks/") and (
            words[0] == "bash" or Path(words[0]).name.startswith("python")):
        return words[1]
    return None


def argument_variants(arguments: list[str]) -> list[list[str]]:
    """The argument lists a usage line such as ``X [--mode a|b]`` stands for: without each
    optional ``[...]`` group and with each of its alternatives."""
    groups: list[list[list[str]]] = []
    index = 0
    while index < len(arguments):
        if arguments[index].startswith("[-"):
            end = next(i for i in range(index, len(arguments)) if arguments[i].endswith("]"))
            words = " ".join(arguments[index:end + 1])[1:-1].split()
            choices = [word.split("|") for word in words]
            groups.append([[], *map(list, itertools.product(*choices))])
            index = end + 1
        else:
            groups.append([[arguments[index]]])
            index += 1
    return [[word for part in choice for word in part]
            for choice in itertools.product(*groups)]


class ArgumentsParsed(Exception):  # noqa: N818 (a signal, not an error)
    """Raised in place of running a benchmark once its parser has accepted the arguments."""


def parse_benchmark_arguments(script: Path, arguments: list[str]) -> None:
    """Run ``script``'s ``main()`` until its argparse parser has parsed ``arguments``."""
    spec = importlib.util.spec_from_file_location(f"documented_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parse(parser, *args, **kwargs)  # type: ignore[arg-type]
        raise ArgumentsParsed

    with mock.patch.dict(sys.modules, {spec.name: module}), \
            mock.patch.object(sys, "path", [str(script.parent), *sys.path]), \
            mock.patch.object(sys, "argv", [str(script), *arguments]), \
            mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        spec.loader.exec_module(module)
        assert "argparse" in vars(module), (
            f"{script.name} does not parse its arguments with argparse; cannot check "
            f"{arguments}")
        try:
            module.main()
        except SystemExit as error:
            raise AssertionError(f"{script.name} refused the arguments {arguments} "
                                 f"(exit {error.code}; its usage message is above)") from None
        except ArgumentsParsed:
            return
    raise AssertionError(f"{script.name}'s main() ended without parsing its arguments")


def check_benchmark(words: tuple[str, ...]) -> list[str]:
    """The script a doc runs exists and accepts the arguments (a shell script: parses)."""
    written = script_of(words) or words[0]
    paths = sorted(ROOT.glob(written.rstrip("/"))) if "*" in written else [ROOT / written]
    assert paths and all(path.exists() for path in paths), f"{written}: no such file"
    if written.endswith(".sh"):
        for path in paths:
            done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                                  check=False)
            assert done.returncode == 0, f"bash -n {written}: {done.stderr}"
    elif script_of(words) is not None:
        for arguments in argument_variants(list(words[2:])):
            parse_benchmark_arguments(paths[0], arguments)
    return []


def check_make(targets: tuple[str, ...]) -> list[str]:
    """The Makefile has the targets (``make -n``: nothing is made)."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *targets], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, f"make -n {' '.join(targets)}: {done.stderr.strip()}"
    return []


# ---------------------------------------------------------------------------- the docs
DOC_COMMANDS = [command for doc in DOCS for command in doc_commands(doc, doc.read_text())]


def check_doc_command(command: DocCommand) -> list[str]:
    """Check ``command``; returns why parts of it were not checked."""
    arguments = list(command.words) if command.shorthand else cli_arguments(command.words)
    if arguments is not None:
        return check_noether_control(command, arguments)
    if command.words[0] == "make":
        return check_make(command.words[1:])
    return check_benchmark(command.words)


@pytest.mark.parametrize("command", DOC_COMMANDS, ids=lambda c: f"{c.where} {c.text[:60]}")
def test_documented_command_works_as_written(command: DocCommand) -> None:
    """Fails naming the doc line; what is left unchecked, and why, is printed (``-rP``)."""
    try:
        unchecked = check_doc_command(command)
    except Exception as error:
        pytest.fail(f"{command.where}: `{command.text}`: {type(error).__name__}: "
                    f"{one_line(error)}", pytrace=False)
    for reason in unchecked:
        print(f"{command.where}: `{command.text}`: not checked in full: {reason}")


def test_the_docs_write_the_commands_this_test_reads() -> None:
    commands = {(c.where.split(":")[0], c.words[:2]) for c in DOC_COMMANDS}
    assert ("README.md", ("noether-control", "collect")) in commands
    assert ("docs/discovery.md", ("noether-control", "discover")) in commands
    assert ("docs/noether.md", ("bash", "benchmarks/noether_cpu.sh")) in commands
    assert ("README.md", ("torchrun", "--nproc_per_node=2")) in commands
    assert sum(c.expected_error is not None for c in DOC_COMMANDS) >= 1


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_the_smoke_preset_the_readme_promises(name: str) -> None:
    assert "every command has a smoke preset" in (ROOT / "README.md").read_text()
    check_cli_command(name, ["experiment=smoke"], partial=True)  # inputs such as data.path: none


# ---------------------------------------------------------------------------- the checker
def test_a_broken_doc_command_fails_with_its_file_and_line() -> None:
    doc = ROOT / "docs" / "broken.md"  # where() is relative to the checkout
    text = ("text\n\n```bash\nnoether-control train data.path=D \\\n    train.lrr=1  # typo\n"
            "noether-control plan agent=nope\nnoether-control evaluate checkpoint=X horizon=0\n"
            "noether-control mbrl 'train_overrides=[\"experiment=nope\"]'\n"
            "python benchmarks/bench_envs.py --quik\nbash benchmarks/nothing.sh\nmake nothing\n"
            "```\n\n```text\n$ noether-control train data.path=D train.lr=nan\n"
            "noether-control train: train.lr: not what it says\n```\n"
            "In prose, `plan experiment=nope`.\n")
    commands = doc_commands(doc, text)
    assert [(c.where, c.words[0]) for c in commands] == [
        ("docs/broken.md:4", "noether-control"),
        ("docs/broken.md:6", "noether-control"),
        ("docs/broken.md:7", "noether-control"),
        ("docs/broken.md:8", "noether-control"),
        ("docs/broken.md:9", "python"),
        ("docs/broken.md:10", "bash"),
        ("docs/broken.md:11", "make"),
        ("docs/broken.md:15", "noether-control"),
        ("docs/broken.md:18", "plan"),
    ]
    assert commands[-2].expected_error == "train.lr: not what it says"
    for command in commands:
        with pytest.raises(pytest.fail.Exception, match=re.escape(command.where)):
            test_documented_command_works_as_written(command)


def test_placeholders_and_optional_arguments_are_read_as_the_docs_mean_them() -> None:
    prepared = prepare(["checkpoint=RUN", "noether.test_inner_steps=K", "...", "--debug"])
    assert prepared.overrides == ["checkpoint=RUN", "noether.test_inner_steps=10"]
    assert prepared.skipped == ["elided"]
    assert argument_variants(["CKPT", "[--mode", "a|b]"]) == [
        ["CKPT"], ["CKPT", "--mode", "a"], ["CKPT", "--mode", "b"]]
    assert each_run(prepare(["-m", "a=1,2", "b=3"])) == [["a=1", "b=3"], ["a=2", "b=3"]]
    assert split_words("A=1 B=x bash benchmarks/x.sh out  # note") == [
        "bash", "benchmarks/x.sh", "out"]
