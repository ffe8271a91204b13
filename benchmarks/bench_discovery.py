"""Benchmark and target check for conservation-law discovery (docs/discovery.md).

Speed: enumeration + de-duplication + batched fitting + filtering for the HNN spring and pendulum
at size 7, in candidates per second, against a reference measured in the same run: the same
formulas fitted one at a time (same evaluator, same Adam steps) on a sample, extrapolated.

Targets (the whole pipeline, ``noether-control discover system=...`` with the default config):
pendulum finds ``p**2 - k*cos(q)`` with k within 2% of 3, spring ``q**2 + c*p**2`` with c within 2%
of 1; long-horizon RMSE with the found law within 5% of the true-energy oracle, and on the
pendulum at most 0.8x the vanilla MLP.

    python benchmarks/bench_discovery.py                 # speed + targets, both systems
    python benchmarks/bench_discovery.py --speed-only
    python benchmarks/bench_discovery.py --seeds 0 1 2 --out /tmp/discovery_bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import sympy
import torch

from noether_control.discovery.data import generate
from noether_control.discovery.discover import (
    DiscoverConfig,
    SearchConfig,
    SystemConfig,
    discover,
    search,
)
from noether_control.discovery.fitting import FitData, fit_formulas

TRUE_CONSTANT = {"pendulum": 3.0, "spring": 1.0}


def naive_fit_rate(system: str, config: SearchConfig, sample: int = 40) -> float:
    """Candidates/s when each formula is fitted alone (the per-candidate loop being avoided)."""
    from noether_control.discovery.expressions import enumerate_formulas

    rng = np.random.default_rng(0)
    train, _ = generate(system, 50, 0.1, rng).split(0.5, rng)
    train = train.smoothed(config.smooth_window)
    formulas = [f for f in enumerate_formulas(train.units, config.max_size, config.max_params,
                                              config.ops).formulas if f.n_params > 0]
    chosen = [formulas[i] for i in rng.choice(len(formulas), sample, replace=False)]
    points, segments = train.points()
    data = FitData.from_arrays(points, segments, dtype=getattr(torch, config.fit_dtype))
    start = time.perf_counter()
    for formula in chosen:
        fit_formulas([formula], data, steps=config.fit_steps, lr=config.fit_lr)
    return sample / (time.perf_counter() - start)


def speed(system: str, config: SearchConfig) -> dict[str, Any]:
    """Time the batched search of one system and the per-formula reference."""
    rng = np.random.default_rng(0)
    train, _ = generate(system, 50, 0.1, rng).split(0.5, rng)
    start = time.perf_counter()
    result = search(train, config, rng, torch.device("cpu"))
    seconds = time.perf_counter() - start
    batched = result.n_candidates / seconds
    naive = naive_fit_rate(system, config)
    return {"system": system, "n_enumerated": result.n_enumerated,
            "n_candidates": result.n_candidates, "n_conserved": len(result.survivors),
            "seconds": seconds, "stage_seconds": result.seconds,
            "candidates_per_second": batched, "naive_candidates_per_second": naive,
            "speedup": batched / naive}


def constant_of(formula: dict[str, Any], system: str) -> float | None:
    """The constant of the found law in the target's normal form (k of p**2 - k*cos(q), c of
    q**2 + c*p**2), or None when the formula is not of that family."""
    q, p = sympy.symbols("q p")
    expression = sympy.sympify(formula["fitted"], locals={"q": q, "p": p})
    if system == "pendulum":
        p2, cos_q = sympy.Symbol("P2"), sympy.Symbol("C")
        shaped = sympy.expand(expression).subs({p**2: p2, sympy.cos(q): cos_q})
        if shaped.free_symbols != {p2, cos_q} or not shaped.is_polynomial(p2, cos_q):
            return None
        poly = sympy.Poly(shaped, p2, cos_q)
        if poly.total_degree() != 1:
            return None
        return float(-poly.coeff_monomial(cos_q) / poly.coeff_monomial(p2))
    q2, p2 = sympy.Symbol("Q2"), sympy.Symbol("P2")
    shaped = sympy.expand(expression).subs({q**2: q2, p**2: p2})
    if shaped.free_symbols != {q2, p2} or not shaped.is_polynomial(q2, p2):
        return None
    poly = sympy.Poly(shaped, q2, p2)
    if poly.total_degree() != 1:
        return None
    return float(poly.coeff_monomial(p2) / poly.coeff_monomial(q2))


def fitted_constant_interval(formula: dict[str, Any], system: str
                             ) -> tuple[float, list[float]] | None:
    """(constant, 95% interval) of the conservation fit in the target's normal form, from a
    one-constant formula's ``params_before_meta`` (or ``params``) and ``fit_interval``."""
    fitted = formula["params_before_meta"] or formula["params"]
    if formula["fit_interval"] is None or len(fitted) != 1:
        return None
    (name, value), = fitted.items()
    expression = sympy.sympify(formula["expr"])

    def at(constant: float) -> float | None:
        return constant_of({"fitted": str(expression.subs(sympy.Symbol(name), constant))},
                           system)

    # The map from k0 to the normal form's constant need not be monotone (k0**2): take its
    # range over the interval.
    mapped = [at(float(k)) for k in np.linspace(*formula["fit_interval"][name], 41)]
    centre = at(value)
    if centre is None or None in mapped:
        return None
    return centre, [min(mapped), max(mapped)]


def targets(system: str, seed: int, config: DiscoverConfig | None = None) -> dict[str, Any]:
    """Run the full pipeline on one system and check the discovery targets."""
    config = config or DiscoverConfig()
    config = replace(config, seed=seed, plot=False, system=SystemConfig(name=system))
    with tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        results = discover(config, Path(output))
        seconds = time.perf_counter() - start
    rmse = results["rmse"]
    constant = constant_of(results["formulas"][0], system) if results["formulas"] else None
    # Where the usefulness stage picked another law: the target family's best-ratio survivor.
    by_ratio = sorted(results["formulas"], key=lambda f: -f["variance_ratio"])
    family = [(f, constant_of(f, system)) for f in by_ratio]
    family = [(f, c) for f, c in family if c is not None]
    error = None if constant is None else abs(constant / TRUE_CONSTANT[system] - 1)
    fit = fitted_constant_interval(results["formulas"][0], system) if constant is not None \
        else None
    checks = {
        "law_found": constant is not None,
        "constant_within_2pct": error is not None and error <= 0.02,
        "rmse_within_5pct_of_oracle": rmse["noether"] is not None
        and rmse["true_energy"] is not None and rmse["noether"] <= 1.05 * rmse["true_energy"],
    }
    if system == "pendulum":
        checks["rmse_at_most_0.8x_mlp"] = rmse["noether"] is not None \
            and rmse["noether"] <= 0.8 * rmse["mlp"]
    return {"system": system, "seed": seed, "law": results["formulas"][0]["fitted"]
            if results["formulas"] else None, "constant": constant, "relative_error": error,
            "constant_fit": None if fit is None else fit[0],
            "constant_fit_interval": None if fit is None else fit[1],
            "rmse": rmse, "n_candidates": results["n_candidates"],
            "n_conserved": results["n_conserved"], "seconds": seconds, "checks": checks,
            "target_family_survivor": family[0][0]["fitted"] if family else None,
            "target_family_constant": family[0][1] if family else None,
            "target_family_rank": results["formulas"].index(family[0][0]) + 1 if family else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["pendulum", "spring"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (2 threads on a shared 2-core machine ran 7x slower)")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--targets-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"threads": args.threads, "speed": [], "targets": []}
    if not args.targets_only:
        total = 0.0
        print(f"speed (depth 7, {args.threads} threads):")
        for system in args.systems:
            row = speed(system, SearchConfig())
            total += row["seconds"]
            report["speed"].append(row)
            print(f"  {system:<9} enumerated {row['n_enumerated']:>6}  distinct "
                  f"{row['n_candidates']:>5}  conserved {row['n_conserved']:>3}  "
                  f"{row['seconds']:6.1f} s  {row['candidates_per_second']:7.1f} cand/s  "
                  f"(one-at-a-time reference {row['naive_candidates_per_second']:.1f} cand/s, "
                  f"x{row['speedup']:.1f})")
        print(f"  both systems: {total:.1f} s (target < 600 s)")
        report["speed_total_seconds"] = total
    if not args.speed_only:
        print("\ntargets:")
        print(f"  {'system':<9} {'seed':>4}  {'found law':<34} {'const':>7} {'err':>6}  "
              f"{'mlp':>7} {'noether':>7} {'oracle':>7} {'hnn':>7}  checks")
        for system in args.systems:
            for seed in args.seeds:
                row = targets(system, seed)
                report["targets"].append(row)
                rmse = row["rmse"]
                cell = lambda v: "   n/a" if v is None else f"{v:7.4f}"  # noqa: E731
                constant = "    n/a" if row["constant"] is None else f"{row['constant']:7.4f}"
                error = "   n/a" if row["relative_error"] is None \
                    else f"{100 * row['relative_error']:5.2f}%"
                passed = ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in
                                   row["checks"].items())
                print(f"  {system:<9} {seed:>4}  {str(row['law'])[:34]:<34} {constant} {error}  "
                      f"{cell(rmse['mlp'])} {cell(rmse['noether'])} {cell(rmse['true_energy'])} "
                      f"{cell(rmse['hnn'])}  {passed}")
                if row["constant_fit"] is not None:
                    low, high = row["constant_fit_interval"]
                    covers = low <= TRUE_CONSTANT[system] <= high
                    print(f"  {'':<14} conservation fit (before meta-tailoring) "
                          f"{row['constant_fit']:.4f}, 95% interval [{low:.4f}, {high:.4f}]"
                          f"{' covers ' if covers else ' misses '}{TRUE_CONSTANT[system]:g}")
                if row["target_family_survivor"] is not None:
                    print(f"  {'':<14} target family among survivors: "
                          f"{row['target_family_survivor']} (rank {row['target_family_rank']}, "
                          f"constant {row['target_family_constant']:.4f})")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=lambda o: None
                                       if isinstance(o, float) and math.isnan(o) else str(o)))


if __name__ == "__main__":
    main()
