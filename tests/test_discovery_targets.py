"""The discovery targets on generated HNN data (slow: minutes; also printed by the benchmark)."""

from __future__ import annotations

import pytest
from support import load_benchmark


@pytest.mark.slow
@pytest.mark.parametrize("system", ["pendulum", "spring"])
def test_discovery_targets(system: str) -> None:
    row = load_benchmark("bench_discovery").targets(system, seed=0)
    failed = [name for name, ok in row["checks"].items() if not ok]
    assert not failed, f"{system}: failed {failed}: {row}"


@pytest.mark.slow
def test_batched_search_beats_one_at_a_time_fitting_at_depth_7() -> None:
    # Wall-clock targets live in the benchmark; here only a ratio measured in the same run.
    bench = load_benchmark("bench_discovery")
    rows = [bench.speed(system, bench.SearchConfig()) for system in ("pendulum", "spring")]
    assert all(row["n_enumerated"] >= 10_000 for row in rows)
    assert all(row["speedup"] > 5 for row in rows)
