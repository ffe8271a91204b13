"""Summary table of ``benchmarks/noether_small_data.sh``: one row per seed and Noether variant.

Usage: ``python benchmarks/noether_table.py OUT_DIR``. Reads ``OUT_DIR/s*/compare_*/results.json``
(``noether-control compare``) and ``OUT_DIR/s*/gap_{train,test}/results.json`` (``evaluate`` of
the baseline on its training and test episodes); writes ``OUT_DIR/table.md`` and
``OUT_DIR/table.csv`` and prints the markdown.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

HORIZON = 25


def _diff(document: dict[str, Any], other: str, index: int) -> dict[str, float]:
    diff = document["paired"]["mse"][f"noether − {other}"]
    return {key: diff[key][index] for key in ("relative", "low", "high")}


def comparison_row(seed: str, variant: str, document: dict[str, Any]) -> dict[str, Any]:
    """The figures of one comparison: MSE at h1 and h25, Noether's paired differences at h25
    (relative, and the interval of the absolute difference), the conservation cut, the
    predicted motion against the true one, and the energy probe's R²."""
    index = min(HORIZON, document["horizon"]) - 1
    runs = document["runs"]
    noether = runs["noether"]
    conservation = noether.get("conservation_loss") or {}
    motion = noether.get("predicted_motion") or {}
    true_motion = sum(document["true_motion"]) / len(document["true_motion"])
    row: dict[str, Any] = {"seed": seed, "variant": variant}
    for name in ("baseline", "control", "noether"):
        row[f"{name}_h1"] = runs[name]["mse"][0]
        row[f"{name}_h{index + 1}"] = runs[name]["mse"][index]
    for other in ("baseline", "control"):
        diff = _diff(document, other, index)
        row[f"vs_{other}_pct"] = 100 * diff["relative"]
        row[f"vs_{other}_ci"] = f"[{diff['low']:.2e}, {diff['high']:.2e}]"
        row[f"vs_{other}_h1_pct"] = 100 * _diff(document, other, 0)["relative"]
    before, after = conservation.get("before"), conservation.get("after")
    row["conservation_cut"] = before / after if before and after else None
    row["motion_ratio"] = motion.get("after", 0.0) / true_motion if true_motion else None
    row["probe_r2"] = (document.get("probe") or {}).get("r2")
    return row


def gap_row(seed: str, train: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """The baseline's closed-loop MSE at h25 on its training and on its test episodes."""
    index = min(HORIZON, train["horizon"]) - 1
    train_mse = train["per_horizon"]["mse"][index]
    test_mse = test["per_horizon"]["mse"][index]
    return {"seed": seed, "train_h25": train_mse, "test_h25": test_mse,
            "test_over_train": test_mse / train_mse}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, float):
        return str(value)
    if key.endswith("_pct"):
        return f"{value:+.1f}"
    if key in ("conservation_cut", "motion_ratio", "probe_r2", "test_over_train"):
        return f"{value:.2f}"
    return f"{value:.3e}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "(no rows)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(key, row[key]) for key in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python benchmarks/noether_table.py OUT_DIR (a noether_small_data.sh "
                 "output folder)")
    out = Path(sys.argv[1])
    rows = [comparison_row(path.parent.parent.name[1:], path.parent.name[len("compare_"):],
                           json.loads(path.read_text()))
            for path in sorted(out.glob("s*/compare_*/results.json"))]
    gaps = []
    for train in sorted(out.glob("s*/gap_train/results.json")):
        test = train.parent.parent / "gap_test" / "results.json"
        if test.exists():
            gaps.append(gap_row(train.parent.parent.name[1:], json.loads(train.read_text()),
                                json.loads(test.read_text())))
    text = ("Noether (after tailoring) against the baseline and the more-steps control; "
            "vs_*_pct: relative MSE difference at h25 (negative: Noether better), vs_*_ci: "
            "interval of the absolute difference (clustered by test episode)\n\n"
            + markdown(rows) + "\nBaseline closed-loop MSE on training vs test episodes\n\n"
            + markdown(gaps))
    (out / "table.md").write_text(text)
    if rows:
        with open(out / "table.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(text)


if __name__ == "__main__":
    main()
