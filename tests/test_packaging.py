"""The package layout promises: envs/ and agents/ install under noether_control, nowhere else."""

import importlib.util
from pathlib import Path

import noether_control
import noether_control.agents
import noether_control.envs

REPO = Path(__file__).resolve().parent.parent


def test_envs_and_agents_import_from_their_folders_under_noether_control() -> None:
    assert Path(noether_control.envs.__file__).resolve() == REPO / "envs" / "__init__.py"
    assert Path(noether_control.agents.__file__).resolve() == REPO / "agents" / "__init__.py"


def test_no_generic_top_level_envs_or_agents_module_is_importable() -> None:
    assert importlib.util.find_spec("envs") is None
    assert importlib.util.find_spec("agents") is None


def test_every_package_folder_is_listed_for_setuptools() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {
        "noether_control." + ".".join(init.parent.relative_to(REPO / "noether_control").parts)
        for init in (REPO / "noether_control").rglob("__init__.py")
        if init.parent != REPO / "noether_control"
    }
    assert on_disk | {"noether_control", "noether_control.envs", "noether_control.agents"} == listed
