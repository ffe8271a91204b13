#!/usr/bin/env bash
# Small data: baseline vs more-steps control vs Noether variants, over several training seeds,
# every run of a stage in parallel (sized for one GPU; see experiment=noether_small).
#
#   bash benchmarks/noether_small_data.sh [OUT_DIR]          (default: runs/noether_small)
#
# Environment: NOETHER_ENV (env config, default pendulum_random), SEEDS (default "0 1 2 3"),
# VARIANTS (noether configs, default "default frames_context scale_free"), SWEEP (test-time
# inner steps of the sweep, default [0,1,2,5,10,20,50]), DEVICE (default auto), EXTRA (Hydra
# overrides added to every train command; a shorter E1 needs train.steps, noether.pretrain_steps,
# the decay lengths and E1 itself, e.g. for a 1-minute smoke run: SEEDS=0 VARIANTS=default
# SWEEP=[0] E1=4 EXTRA="train.steps=8 noether.pretrain_steps=4 train.lr_decay_steps=4
# train.schedule_steps=4 train.checkpoint_every=4 train.val_windows=4").
#
# 1. collect 100 OU-policy episodes of 32 px frames: 25 train, 5 val, 70 test;
# 2. per seed, the baseline: E1 plain steps (experiment=noether_small);
# 3. per seed, in parallel: the more-steps control (the baseline resumed for E2 steps) and each
#    Noether variant meta-trained for E2 steps from the baseline's step-E1 checkpoint;
# 4. per seed and variant, `compare` (horizon 25, inner-step sweep, energy probe), and the
#    baseline's closed-loop MSE on its training episodes beside the test episodes (the
#    generalisation gap); then the summary table OUT_DIR/table.md (benchmarks/noether_table.py).
set -euo pipefail
OUT=$(realpath -m "${1:-runs/noether_small}")
source "$(dirname "$0")/tools.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SEEDS=${SEEDS:-0 1 2 3}
VARIANTS=${VARIANTS:-default frames_context scale_free}
SWEEP=${SWEEP:-[0,1,2,5,10,20,50]}
DEVICE=${DEVICE:-auto}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

stamp "collect"
$CLI collect env="${NOETHER_ENV:-pendulum_random}" policy=ou episodes=100 num_envs=50 \
  env.kwargs.image_size=32 progress=false dataset.root="$OUT/datasets" dataset.overwrite=true \
  hydra.run.dir="$OUT/collect" > "$OUT/collect.log" 2>&1
DATA=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['path'])" \
  "$OUT/collect/results.json")
E1=${E1:-$($PY - <<'PY'
import yaml, pathlib, noether_control
conf = pathlib.Path(noether_control.__file__).parent / "conf/commands/train/experiment/noether_small.yaml"
print(yaml.safe_load(conf.read_text())["noether"]["pretrain_steps"])
PY
)}
# shellcheck disable=SC2206  # EXTRA is a list of overrides, split on spaces on purpose
TRAIN=(experiment=noether_small data.path="$DATA" device="$DEVICE" ${EXTRA:-})

stamp "baselines: $E1 steps, seeds $SEEDS"
pids=()
for seed in $SEEDS; do
  $CLI train "${TRAIN[@]}" seed="$seed" train.steps="$E1" hydra.run.dir="$OUT/s$seed/baseline" \
    > "$OUT/s$seed.baseline.log" 2>&1 &
  pids+=($!)
done
wait_all "${pids[@]}"

stamp "controls and Noether variants ($VARIANTS), in parallel"
pids=()
for seed in $SEEDS; do
  cp "$OUT/s$seed/baseline/checkpoints/step_$(printf %07d "$E1").pt" "$OUT/s$seed/baseline_e1.pt"
  $CLI train "${TRAIN[@]}" seed="$seed" hydra.run.dir="$OUT/s$seed/baseline" \
    > "$OUT/s$seed.control.log" 2>&1 &
  pids+=($!)
done
start_variants "$OUT" "$OUT/s%s/baseline_e1.pt" "${TRAIN[@]}"
# a failed variant is reported in its log; the others are still compared
wait_all "${pids[@]}" || stamp "a control or variant run failed: see $OUT/s*.log"

stamp "compare, and the baselines' training-episode MSE"
pids=()
start_comparisons "$OUT" "$OUT/s%s/baseline_e1.pt" "$OUT/s%s/baseline"
for seed in $SEEDS; do
  for split in train test; do
    $CLI evaluate checkpoint="$OUT/s$seed/baseline_e1.pt" split="$split" lpips=false \
      gif_sequences=0 device="$DEVICE" hydra.run.dir="$OUT/s$seed/gap_$split" \
      > "$OUT/s$seed.gap_$split.log" 2>&1 &
    pids+=($!)
  done
done
wait_all "${pids[@]}" || stamp "a comparison failed: see $OUT/s*.compare_*.log"
$PY "$(dirname "$0")/noether_table.py" "$OUT"
stamp "done: $OUT/table.md"
