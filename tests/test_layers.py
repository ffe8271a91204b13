"""The package's layer order (``[tool.importlinter]`` in pyproject.toml), checked by import-linter.

``envs/`` and ``agents/`` install as ``noether_control.envs`` and ``noether_control.agents``
(``package-dir`` in pyproject.toml), which the editable install serves from outside the package's
folder, where import-linter does not look; so the check runs on a copy with the installed
layout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def installed_layout(target: Path) -> Path:
    """A copy of the package as a wheel installs it, under ``target``; returns ``target``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = target / "noether_control"
    shutil.copytree(ROOT / "noether_control", package, ignore=ignore)
    for mapped in ("envs", "agents"):
        shutil.copytree(ROOT / mapped, package / mapped, ignore=ignore)
    return target


def lint_imports(source: Path) -> subprocess.CompletedProcess[str]:
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.fail(f"import-linter: expected {linter} (pip install -e '.[dev]'), got none")
    return subprocess.run(
        [str(linter), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=source, env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_every_import_points_down_the_layers(tmp_path: Path) -> None:
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    source = installed_layout(tmp_path)
    svg = source / "noether_control" / "models" / "svg.py"
    svg.write_text(svg.read_text() + "\nfrom noether_control.training import train  # noqa\n")
    result = lint_imports(source)
    assert result.returncode != 0
    assert "noether_control.models.svg -> noether_control.training.train" in result.stdout
