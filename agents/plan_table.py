"""``noether-control plan_table``: several ``plan`` results side by side, paired by episode seed.

    noether-control plan_table +runs.random=RUN_A +runs.cem=RUN_B +runs.oracle=RUN_C \
        reference=random

Each run is a ``noether-control plan`` run directory (or its ``results.json``), or a list of
them (``+runs.loop='[RUN_A,RUN_B]'``): the episodes of one agent evaluated in several runs on
different seeds (``seed=1000 episodes=20``, then ``seed=1020 episodes=40``), joined into one
row. The table gives every agent's mean return with its standard error, ms per action and the
real environment steps behind its model; and, for agents evaluated on the same episode seeds as
``reference``, the paired difference of returns (agent − reference) with a 95 % t-interval over
episodes, its median, and on how many episodes the agent returned more. Written to the run
directory as ``table.md``, ``table.csv``, ``results.json`` and ``returns.png``.

``returns.png`` shows the returns per agent and, when runs record ``real_env_steps``, the mean
return against the real environment steps: runs whose names differ only in a trailing
``_<steps>`` (``sac_pixels_5000``, ``sac_pixels_10000``, ``sac_pixels``) form one curve, and
runs that learned from no real steps (the oracle, random actions) are horizontal lines.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from scipy import stats

from noether_control.agents.harness import return_statistics
from noether_control.runtime import atomic_path, run_dir, to_dataclass, write_json


@dataclass
class PlanTableConfig:
    """Config of ``noether-control plan_table`` (``conf/commands/plan_table/plan_table.yaml``)."""

    runs: dict[str, Any] = field(default_factory=dict)
    """Agent name -> ``plan`` run directory or results file (``+runs.NAME=PATH``), or a list of
    them holding one agent's episodes on different seeds (``+runs.NAME='[PATH_A,PATH_B]'``)."""
    reference: str | None = None
    """The run the paired differences are taken against; ``None``: the first run."""


def read_plan_results(path: str | Path) -> dict[str, Any]:
    """A ``plan`` run's ``results.json`` (given the file or its run directory)."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"runs: expected a `noether-control plan` run directory or its "
                         f"results.json, got {str(path)!r} ({error})") from error
    if not {"episode_returns", "seeds"} <= set(document):
        raise ValueError(f"runs: {str(file)!r} is not a `noether-control plan` result (no "
                         "episode_returns and seeds)")
    return document


#: The fields that make several results one agent's: the same env, agent, planner and model.
SAME_AGENT_FIELDS = ("env_id", "agent", "planner", "checkpoint", "real_env_steps")


def merge_plan_results(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One agent's results from several ``plan`` results on different episode seeds.

    The episodes are concatenated in the order given and the return statistics recomputed;
    ``ms_per_action`` is the episode-weighted mean (``None`` if any run lacks it). Raises
    ``ValueError`` when a seed repeats or the runs differ in :data:`SAME_AGENT_FIELDS`.
    """
    first = documents[0]
    for document in documents[1:]:
        for key in SAME_AGENT_FIELDS:
            if document.get(key) != first.get(key):
                raise ValueError(f"runs.{name}: expected runs of one agent, got {key} "
                                 f"{first.get(key)!r} and {document.get(key)!r}")
    seeds = [seed for document in documents for seed in document["seeds"]]
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"runs.{name}: expected runs on different episode seeds, got seeds "
                         f"{repeated} in more than one run")
    returns = np.array([value for document in documents
                        for value in document["episode_returns"]], dtype=np.float64)
    episodes = np.array([len(document["seeds"]) for document in documents], dtype=np.float64)
    timings = [document.get("ms_per_action") for document in documents]
    return {**first, "seeds": seeds, "episode_returns": returns.tolist(),
            "episodes": len(seeds), **return_statistics(returns),
            "ms_per_action": None if None in timings
            else float(np.dot(timings, episodes) / episodes.sum())}


def read_agent_results(name: str, paths: Any) -> dict[str, Any]:
    """Agent ``name``'s results from one ``plan`` run (a path) or several (a list of paths)."""
    if isinstance(paths, str | Path):
        return read_plan_results(paths)
    if not isinstance(paths, list | tuple) or not paths or not all(
            isinstance(path, str | Path) for path in paths):
        raise ValueError(f"runs.{name}: expected a plan run directory or a list of them, got "
                         f"{paths!r}")
    return merge_plan_results([read_plan_results(path) for path in paths], name)


def paired_difference(returns: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """Mean of ``returns − reference`` (paired episodes) with its standard error and 95 %
    t-interval (None for fewer than two pairs), its median, and ``better``: the number of
    episodes where ``returns`` is the higher."""
    differences = np.asarray(returns, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mean = float(differences.mean())
    shape = {"median": float(np.median(differences)), "better": int((differences > 0).sum())}
    if len(differences) < 2:
        return {"mean": mean, "stderr": None, "low": None, "high": None, **shape}
    stderr = float(differences.std(ddof=1) / math.sqrt(len(differences)))
    half = float(stats.t.ppf(0.975, len(differences) - 1)) * stderr
    return {"mean": mean, "stderr": stderr, "low": mean - half, "high": mean + half, **shape}


def table_rows(runs: dict[str, dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """One row per run: returns, cost, data, and the paired difference against ``reference``."""
    base = runs[reference]
    base_returns = dict(zip(base["seeds"], base["episode_returns"], strict=True))
    rows = []
    for name, document in runs.items():
        returns = np.asarray(document["episode_returns"], dtype=np.float64)
        statistics = return_statistics(returns)
        shared = [seed for seed in document["seeds"] if seed in base_returns]
        paired = None
        if name != reference and shared:
            mine = dict(zip(document["seeds"], returns, strict=True))
            paired = paired_difference(np.array([mine[s] for s in shared]),
                                       np.array([base_returns[s] for s in shared]))
        rows.append({
            "agent": name,
            "kind": (document.get("agent") or {}).get("kind"),
            "planner": (document.get("planner") or {}).get("kind"),
            "episodes": len(returns),
            "mean_return": statistics["mean_return"],
            "stderr_return": statistics["stderr_return"],
            "ms_per_action": document.get("ms_per_action"),
            "real_env_steps": document.get("real_env_steps"),
            "paired_episodes": len(shared) if name != reference else None,
            "difference": paired,
        })
    return rows


def learning_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float]]]:
    """The rows with ``real_env_steps`` as curves ``{name: [(steps, mean, stderr), ...]}`` sorted
    by steps; a name's trailing ``_<digits>`` is dropped, so ``loop_8000`` and ``loop`` join."""
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        if row["real_env_steps"] is not None:
            name = re.sub(r"_\d+$", "", row["agent"])
            curves.setdefault(name, []).append(
                (int(row["real_env_steps"]), row["mean_return"], row["stderr_return"] or 0.0))
    return {name: sorted(points) for name, points in curves.items()}


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], reference: str) -> str:
    """The rows as a markdown table."""
    lines = [
        f"| agent | planner | episodes | mean return ± s.e. | − {reference} (95 % CI, paired) "
        "| better in (median) | ms/action | real steps |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        difference = row["difference"]
        paired, better = ("–", "–") if difference is None else (
            f"{difference['mean']:+.1f} [{_number(difference['low'])}, "
            f"{_number(difference['high'])}]",
            f"{difference['better']} / {row['paired_episodes']} ({difference['median']:+.1f})")
        lines.append(
            f"| {row['agent']} | {row['planner'] or '–'} | {row['episodes']} | "
            f"{row['mean_return']:.1f} ± {_number(row['stderr_return'])} | {paired} | {better} | "
            f"{_number(row['ms_per_action'])} | {row['real_env_steps'] or '–'} |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]], reference: str,
                  out_dir: Path) -> None:
    """``table.md``, ``table.csv``, ``results.json`` and ``returns.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with atomic_path(out_dir / "table.md") as temporary:
        temporary.write_text(markdown_table(rows, reference))
    columns = ["agent", "kind", "planner", "episodes", "mean_return", "stderr_return",
               "ms_per_action", "real_env_steps", "paired_episodes", "difference_mean",
               "difference_low", "difference_high", "difference_median", "better_episodes"]
    with atomic_path(out_dir / "table.csv") as temporary, temporary.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            difference = row["difference"] or {}
            writer.writerow({**{key: row[key] for key in columns[:9]},
                             "difference_mean": difference.get("mean"),
                             "difference_low": difference.get("low"),
                             "difference_high": difference.get("high"),
                             "difference_median": difference.get("median"),
                             "better_episodes": difference.get("better")})
    write_json(out_dir / "results.json", {"reference": reference, "rows": rows})
    curves = learning_curves(rows)
    width = 1.6 * len(runs) + 2
    figure, axes = plt.subplots(1, 2 if curves else 1, squeeze=False,
                                figsize=(width + (7 if curves else 0), 4))
    axis = axes[0, 0]
    axis.boxplot([runs[name]["episode_returns"] for name in runs], showmeans=True)
    axis.set_xticks(range(1, len(runs) + 1), list(runs))
    axis.set_ylabel("episode return")
    axis.set_title("returns per agent (same episode seeds)")
    if curves:
        _plot_curves(axes[0, 1], curves, [row for row in rows if row["real_env_steps"] is None])
    figure.tight_layout()
    with atomic_path(out_dir / "returns.png") as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def _plot_curves(axis: Any, curves: dict[str, list[tuple[int, float, float]]],
                 without_steps: list[dict[str, Any]]) -> None:
    """Mean return ± s.e. against real env steps; runs without real steps as flat lines."""
    for name, points in curves.items():
        steps, means, stderrs = (np.array(column) for column in zip(*points, strict=True))
        axis.errorbar(steps, means, yerr=stderrs, marker="o", capsize=3, label=name)
    for index, row in enumerate(without_steps, start=len(curves)):
        axis.axhline(row["mean_return"], linestyle="--", linewidth=1, color=f"C{index % 10}",
                     label=f"{row['agent']} (no data)")
    axis.set_xlabel("real environment steps")
    axis.set_ylabel("mean return ± s.e.")
    axis.set_title("return against real experience")
    axis.legend(fontsize=8)


def run(cfg: DictConfig) -> None:
    """Entry point of ``noether-control plan_table``."""
    config = to_dataclass(PlanTableConfig, cfg)
    if not config.runs:
        raise ValueError("runs: expected at least one plan run, e.g. +runs.random=RUN_DIR, "
                         "got none")
    runs = {name: read_agent_results(name, paths) for name, paths in config.runs.items()}
    reference = config.reference or next(iter(runs))
    if reference not in runs:
        raise ValueError(f"reference: expected one of {sorted(runs)}, got {reference!r}")
    rows = table_rows(runs, reference)
    out_dir = run_dir()
    write_outputs(rows, runs, reference, out_dir)
    print(markdown_table(rows, reference) + f"results: {out_dir / 'table.md'}")
