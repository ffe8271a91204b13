#!/usr/bin/env bash
# Planning through the baseline, the more-steps control and the Noether model on
# PixelPendulumRandom-v0 (gravity, mass, length and damping drawn per episode), paired by
# episode seed.
#
#   bash benchmarks/plan_noether_cpu.sh [OUT_DIR]     (default: runs/plan_noether_cpu)
#
# 1. `noether-control demo` on the random-physics env (its collect, world-model and Noether
#    stages: the baseline, the control continued for 50 plain steps and Noether meta-trained for
#    the same 50 steps from it; ~10 min on one thread);
# 2. `noether-control plan experiment=plan_cpu env=pendulum_random` (MPPI 200 x 15, 20 episodes,
#    seeds 1000..1019) through the baseline, the control, Noether without tailoring and Noether
#    tailored to each episode before every plan (agent.tailor=once_per_step, the checkpoint's K);
# 3. `noether-control plan_table` against the control. Stages with a results.json are skipped.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/plan_noether_cpu}")
source "$(dirname "$0")/tools.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

if [ ! -f "$OUT/demo/results.json" ]; then
  stamp "demo on PixelPendulumRandom-v0 (collect, world model, control and Noether)"
  $CLI demo env@collect.env=pendulum_random planning.enabled=false hydra.run.dir="$OUT/demo"
fi
plan() {  # name checkpoint [overrides...]
  local name=$1 checkpoint=$2
  shift 2
  if [ ! -f "$OUT/plan_$name/results.json" ]; then
    stamp "plan: $name"
    $CLI plan experiment=plan_cpu env=pendulum_random checkpoint="$checkpoint" progress=false \
      "$@" hydra.run.dir="$OUT/plan_$name"
  fi
}
plan baseline "$OUT/demo/world_model"
plan control "$OUT/demo/noether/control"
plan noether_untailored "$OUT/demo/noether/noether"
plan noether_tailored "$OUT/demo/noether/noether" agent.tailor=once_per_step
$CLI plan_table "+runs.control=$OUT/plan_control" "+runs.baseline=$OUT/plan_baseline" \
  "+runs.noether_untailored=$OUT/plan_noether_untailored" \
  "+runs.noether_tailored=$OUT/plan_noether_tailored" reference=control hydra.run.dir="$OUT/table"
stamp "done: $OUT/table/table.md"
