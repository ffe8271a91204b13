"""Each config group's default YAML and its dataclass agree, so the CLI (which reads the YAML)
and the Python API and the demo (which build the dataclasses) train the same thing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

import noether_control
from noether_control.discovery.discover import DiscoverConfig
from noether_control.evaluation.evaluate import EvaluateConfig
from noether_control.models.svg import SVGConfig
from noether_control.noether.config import NoetherConfig
from noether_control.training.config import DataConfig, OptimConfig

CONF = Path(noether_control.__file__).parent / "conf"
COMMANDS = CONF / "commands"


def differences(values: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: yaml X, dataclass Y`` for every YAML value that differs from the default."""
    found = []
    for key, value in values.items():
        if key == "defaults":
            continue
        name = f"{prefix}{key}"
        if key not in defaults:
            found.append(f"{name}: in the YAML, not in the dataclass")
        elif isinstance(value, dict):
            found += differences(value, defaults[key], f"{name}.")
        else:
            default = defaults[key]
            if (list(default) if isinstance(default, tuple) else default) != value:
                found.append(f"{name}: yaml {value!r}, dataclass {default!r}")
    return found


def field_defaults(cls: type) -> dict[str, Any]:
    """Defaults of a dataclass (nested dataclasses as dicts); required fields are left out."""
    out = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            out[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
            out[item.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) \
                else value
    return out


@pytest.mark.parametrize(("path", "cls"), [
    ("evaluate/evaluate.yaml", EvaluateConfig),
    ("discover/discover.yaml", DiscoverConfig),
])
def test_command_yaml_matches_the_dataclass_defaults(path: str, cls: type) -> None:
    values = yaml.safe_load((COMMANDS / path).read_text())
    values.pop("hydra")
    assert differences(values, field_defaults(cls)) == []


@pytest.mark.parametrize(("path", "cls", "overrides"), [
    ("train/default.yaml", OptimConfig, {}),
    ("data/default.yaml", DataConfig, {}),
    ("model/dcgan64.yaml", SVGConfig, {}),
    # The `default` Noether group switches Noether on; `off` (the dataclass default) does not.
    ("noether/default.yaml", NoetherConfig, {"enabled": True}),
])
def test_group_yaml_matches_the_dataclass_defaults(path: str, cls: type,
                                                   overrides: dict[str, Any]) -> None:
    values = yaml.safe_load((CONF / path).read_text())
    defaults = {**field_defaults(cls), **overrides}
    values.pop("path", None)  # data.path: required (??? in the YAML), no dataclass default
    assert differences(values, defaults) == []


def test_differences_names_the_key_and_both_values() -> None:
    assert differences({"a": {"b": 2}, "c": 1}, {"a": {"b": 3}, "c": 1}) == [
        "a.b: yaml 2, dataclass 3"]
