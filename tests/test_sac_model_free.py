"""The model-free SAC reference: checkpoints, the learning curve and a finished run left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sac_model_free.py"


def run_script(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--obs", "state", "--steps", "200", "--checkpoint-every",
         "100", "--episodes", "2", "--curve", "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300, check=False)


def test_curve_evaluates_every_earlier_checkpoint_on_the_same_episodes(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((tmp_path / "results.json").read_text())
    early = json.loads((tmp_path / "curve" / "steps_100" / "results.json").read_text())
    assert (final["real_env_steps"], early["real_env_steps"]) == (200, 100)
    assert early["seeds"] == final["seeds"] == [1000, 1001]
    assert early["agent"] == final["agent"] == {"kind": "sac_model_free_state",
                                                 "policy": "MlpPolicy"}
    assert not (tmp_path / "curve" / "steps_200").exists()  # the last one is results.json
    # a rerun neither retrains nor rewrites what is there
    stamp = (tmp_path / "results.json").stat().st_mtime_ns
    again = run_script(tmp_path)
    assert again.returncode == 0 and "already has the agent after 200" in again.stdout
    assert (tmp_path / "results.json").stat().st_mtime_ns == stamp
