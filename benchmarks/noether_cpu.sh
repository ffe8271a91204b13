#!/usr/bin/env bash
# Baseline vs more-steps control vs Noether on PixelPendulumRandom-v0 (or NOETHER_ENV), 2 CPU cores.
#
#   bash benchmarks/noether_cpu.sh [OUT_DIR]        (default: runs/noether_cpu)
#   NOETHER_ENV=pendulum bash benchmarks/noether_cpu.sh runs/noether_cpu_fixed
#
# NOETHER_ENV picks the env config (default pendulum_random: PixelPendulumRandom-v0; pendulum:
# PixelPendulum-v0, fixed physics).
#
# 1. collect 120 OU-policy episodes of 32 px frames (seconds);
# 2. train the baseline for E1 = 9000 steps (experiment=noether_cpu, Noether off);
# 3. in parallel, one thread each: resume the baseline for E2 = 3000 more plain steps (the
#    more-steps control) and meta-train Noether for the same 3000 steps from the baseline's
#    step-E1 checkpoint (same batches, same Adam state);
# 4. `noether-control compare` the three on the same test windows (horizon 25), with the
#    inner-step sweep and the energy probe; the report is OUT_DIR/compare/results.json.
# Measured run time: see docs/noether.md. Extra arguments are not accepted: edit E1/E2 in
# conf/commands/train/experiment/noether_cpu.yaml.
set -euo pipefail
OUT=$(realpath -m "${1:-runs/noether_cpu}")
source "$(dirname "$0")/tools.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

stamp "collect"
$CLI collect env="${NOETHER_ENV:-pendulum_random}" policy=ou episodes=120 num_envs=40 env.kwargs.image_size=32 \
  progress=false dataset.root="$OUT/datasets" dataset.overwrite=true hydra.run.dir="$OUT/collect"
DATA=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['path'])" \
  "$OUT/collect/results.json")
E1=$($PY - <<'PY'
import yaml, pathlib, noether_control
conf = pathlib.Path(noether_control.__file__).parent / "conf/commands/train/experiment/noether_cpu.yaml"
print(yaml.safe_load(conf.read_text())["noether"]["pretrain_steps"])
PY
)
BASE="$OUT/baseline"
BASELINE_CKPT="$BASE/checkpoints/step_$(printf %07d "$E1").pt"

stamp "baseline: $E1 steps"
$CLI train experiment=noether_cpu data.path="$DATA" train.steps="$E1" hydra.run.dir="$BASE"

stamp "control (resumed baseline) and Noether (from $BASELINE_CKPT), in parallel"
cp "$BASELINE_CKPT" "$OUT/baseline_e1.pt"
$CLI train experiment=noether_cpu data.path="$DATA" hydra.run.dir="$BASE" > "$OUT/control.log" 2>&1 &
control=$!
$CLI train experiment=noether_cpu noether=default data.path="$DATA" \
  noether.init_from="$OUT/baseline_e1.pt" hydra.run.dir="$OUT/noether" > "$OUT/noether.log" 2>&1 &
noether=$!
wait "$control"
wait "$noether"
tail -n 3 "$OUT/control.log" "$OUT/noether.log"

stamp "compare"
$CLI compare +runs.baseline="$OUT/baseline_e1.pt" +runs.control="$BASE" \
  +runs.noether="$OUT/noether" hydra.run.dir="$OUT/compare"
stamp "done: $OUT/compare/results.json"
