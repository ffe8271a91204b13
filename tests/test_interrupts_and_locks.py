"""Interrupts stop every run, a run directory serves one run at a time, and a killed write's
staging folder is cleaned by the next write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noether_control.runtime import (
    LOCK_NAME,
    RunDirectoryInUseError,
    atomic_path,
    remove_stale_staging,
    run_directory_lock,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def collect(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "noether_control", "collect", "experiment=smoke", "episodes=800",
         "num_envs=16", "episode_steps=200", "env.kwargs.image_size=32", "progress=false",
         f"hydra.run.dir={out}", *extra], cwd=out.parent, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def wait_for_staging(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the dataset's staging folder exists: the collection is under way."""
    deadline = time.monotonic() + timeout
    while not list(out.glob("datasets/**/.*-v0.*")):
        assert process.poll() is None, "collect ended before it started writing"
        assert time.monotonic() < deadline, "collect did not start writing in time"
        time.sleep(0.05)


@pytest.mark.parametrize("delay", [0.1, 0.6, 1.5])
def test_ctrl_c_stops_collect_and_leaves_no_dataset(tmp_path: Path, delay: float) -> None:
    out = tmp_path / "run"
    process = collect(out)
    wait_for_staging(out, process)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert "collected" not in output, "the collection ended before the interrupt: make it longer"
    assert process.returncode != 0, output
    datasets = out / "datasets"
    written = [p for p in datasets.rglob("main_data.hdf5")] if datasets.exists() else []
    assert not written, f"a dataset survived the interrupt: {written}\n{output}"
    assert "Exception ignored" not in output


def test_a_run_directory_in_use_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with run_directory_lock(out):
        busy = subprocess.run(
            [sys.executable, "-m", "noether_control", "collect", "experiment=smoke",
             f"hydra.run.dir={out}"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
            timeout=300, check=False)
        assert busy.returncode != 0
        assert f"run directory {str(out)!r} is in use by noether-control (pid {os.getpid()})" \
            in busy.stderr + busy.stdout
        refused = pytest.raises(RunDirectoryInUseError, match=r"another hydra\.run\.dir")
        with refused, run_directory_lock(out):
            pass
    done = subprocess.run(
        [sys.executable, "-m", "noether_control", "collect", "experiment=smoke",
         f"hydra.run.dir={out}"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "results.json").is_file()


def test_a_killed_writes_staging_folder_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "dataset"
    # a writer killed mid-write: its staging folder stays, and its lock died with it
    killer = subprocess.run(
        [sys.executable, "-c",
         "import os, sys\n"
         "from noether_control.runtime import atomic_path\n"
         f"with atomic_path({str(target)!r}) as p:\n"
         "    p.mkdir(); (p / 'half').write_bytes(b'x' * 1000)\n"
         "    os._exit(9)\n"], env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert killer.returncode == 9, killer.stderr
    stale = [p for p in tmp_path.glob(".dataset.*")]
    assert len(stale) == 1 and (stale[0] / LOCK_NAME).is_file()
    # a live writer's staging folder is left alone
    with atomic_path(tmp_path / "other") as live:
        live.write_text("in progress")
        assert remove_stale_staging(tmp_path / "other") == []
        with atomic_path(target) as temporary:
            assert not stale[0].exists()  # the killed run's leftovers are gone
            temporary.mkdir()
            (temporary / "done").write_text("ok")
    assert (target / "done").read_text() == "ok"
    assert (tmp_path / "other").read_text() == "in progress"
    assert not list(tmp_path.glob(".dataset.*")) and not list(tmp_path.glob(".other.*"))
