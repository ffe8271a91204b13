"""The discovery targets on generated HNN data (slow: minutes; also printed by the benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_discovery.py"
    spec = importlib.util.spec_from_file_location("bench_discovery", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("system", ["pendulum", "spring"])
def test_discovery_targets(system: str) -> None:
    row = _bench().targets(system, seed=0)
    failed = [name for name, ok in row["checks"].items() if not ok]
    assert not failed, f"{system}: failed {failed}: {row}"


@pytest.mark.slow
def test_batched_search_beats_one_at_a_time_fitting_at_depth_7() -> None:
    # Wall-clock targets live in the benchmark; here only a ratio measured in the same run.
    bench = _bench()
    rows = [bench.speed(system, bench.SearchConfig()) for system in ("pendulum", "spring")]
    assert all(row["n_enumerated"] >= 10_000 for row in rows)
    assert all(row["speedup"] > 5 for row in rows)
