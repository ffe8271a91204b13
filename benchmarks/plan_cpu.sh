#!/usr/bin/env bash
# Planning through the learned pixel model on PixelPendulum-v0 with at most 20 000 real steps
# (PlaNet-style data collection), then every agent on the same 20 seeded episodes.
#
#   bash benchmarks/plan_cpu.sh [OUT_DIR]          (default: runs/plan_cpu)
#
# 1. collect 40 OU-policy episodes (8 000 steps, the demo's data) and train the demo's world
#    model on them (experiment=demo, ~8 min on one thread);
# 2. ROUNDS (default 2) times: collect 30 episodes (6 000 steps) with MPC through the latest
#    model plus exploration noise (policy=mpc, planner mppi_cpu), on top of the previous
#    dataset (dataset.base: nothing is overwritten), and (but for the last round) train a fresh
#    demo-scale model on the grown data to collect the next round with;
# 3. train the planning model on all of it with a budget that grows with the data
#    (train experiment=plan_cpu: the demo model, 10000 joint steps, ~35 min on one thread);
# 4. `noether-control plan experiment=plan_cpu` through that model (agent=mppi_cpu: MPPI
#    200 x 15), random actions and the oracle (MPPI through the true simulator), 20 episodes
#    each with seeds 1000..1019 (never seen in training), and `noether-control plan_table`.
# About 90 minutes on the 2-core CPU.
# A stage whose results.json exists is skipped, so an interrupted run picks up where it stopped
# (train resumes from its last checkpoint). Figures: docs/planning.md.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/plan_cpu}")
ROUNDS=${ROUNDS:-2}
source "$(dirname "$0")/tools.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
field() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

if [ ! -f "$OUT/collect0/results.json" ]; then
  stamp "collect 40 OU episodes"
  $CLI collect env=pendulum policy=ou episodes=40 progress=false dataset.root="$OUT/datasets" \
    dataset.id=noether-control/pixel-pendulum/round0-v0 hydra.run.dir="$OUT/collect0"
fi
DATA=$(field "$OUT/collect0/results.json" path)
for round in $(seq 0 $((ROUNDS - 1))); do
  MODEL="$OUT/model$round"
  if [ ! -f "$MODEL/results.json" ]; then
    stamp "round $round: train on $(field "$OUT/collect$round/results.json" total_steps) steps"
    $CLI train experiment=demo data.path="$DATA" train.progress=false hydra.run.dir="$MODEL"
  fi
  next=$((round + 1))
  if [ ! -f "$OUT/collect$next/results.json" ]; then
    stamp "round $next: collect 30 episodes with MPC through model $round"
    $CLI collect env=pendulum policy=mpc 'planner@policy.planner=mppi_cpu' \
      policy.checkpoint="$MODEL" episodes=30 num_envs=15 seed="$next" progress=false \
      dataset.base="$DATA" dataset.root="$OUT/datasets" \
      dataset.id=noether-control/pixel-pendulum/round$next-v0 hydra.run.dir="$OUT/collect$next"
  fi
  DATA=$(field "$OUT/collect$next/results.json" path)
done
MODEL="$OUT/model_final"
if [ ! -f "$MODEL/results.json" ]; then
  stamp "planning model: train experiment=plan_cpu on $(field "$OUT/collect$ROUNDS/results.json" total_steps) steps"
  $CLI train experiment=plan_cpu data.path="$DATA" train.progress=false hydra.run.dir="$MODEL"
fi
for agent in mppi_cpu random oracle_mppi; do
  if [ ! -f "$OUT/plan_$agent/results.json" ]; then
    stamp "plan: $agent"
    $CLI plan experiment=plan_cpu agent="$agent" checkpoint="$MODEL" progress=false \
      hydra.run.dir="$OUT/plan_$agent"
  fi
done
$CLI plan_table "+runs.mpc_mppi=$OUT/plan_mppi_cpu" "+runs.random=$OUT/plan_random" \
  "+runs.oracle_mppi=$OUT/plan_oracle_mppi" reference=random hydra.run.dir="$OUT/table"
stamp "done: $OUT/table/table.md"
