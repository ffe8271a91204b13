#!/usr/bin/env bash
# Noether on top of a world model that already predicts the motion: more-steps control vs
# Noether variants, each fine-tuned for E2 joint steps from the same trained checkpoint.
#
#   bash benchmarks/noether_from_trained.sh CHECKPOINT [OUT_DIR]   (default: runs/noether_from_trained)
#
# CHECKPOINT is a `train` checkpoint (e.g. the last model of `mbrl experiment=pendulum_20k`,
# trained with the dynamics phase); its own stored config (model, data, optimiser) is reused,
# so both arms see its dataset and architecture. Environment: E2 (fine-tuning steps, default
# 600), SEEDS (batch-order seeds, default "0 1"), VARIANTS (noether configs, default "default
# fast_embedding"), SWEEP (test-time inner steps, default [0,1,2,5,10,20]), DEVICE (default auto),
# EXTRA (Hydra overrides added to every train command, e.g. "data.n_future=25" for train
# windows as long as the evaluated horizon).
#
# Per seed: the control continues the checkpoint for E2 plain joint steps (train.init_from);
# each variant meta-trains for the same E2 steps from it (noether.init_from, same batches and
# Adam state); the dynamics phase is off and the steps run in float32 in every arm. Then
# `compare` (baseline = the checkpoint itself; horizon 25 on its test episodes, the inner-step
# sweep and the energy probe) per variant, and the summary table OUT_DIR/table.md
# (benchmarks/noether_table.py).
set -euo pipefail
CHECKPOINT=$(realpath "${1:?usage: bash benchmarks/noether_from_trained.sh CHECKPOINT [OUT_DIR]}")
OUT=$(realpath -m "${2:-runs/noether_from_trained}")
source "$(dirname "$0")/tools.sh"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
E2=${E2:-600}
SEEDS=${SEEDS:-0 1}
VARIANTS=${VARIANTS:-default fast_embedding}
SWEEP=${SWEEP:-[0,1,2,5,10,20]}
DEVICE=${DEVICE:-auto}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

# The checkpoint's stored config as Hydra overrides (its Noether settings and the keys this
# script sets itself left out), and its step.
mapfile -t STORED < <($PY - "$CHECKPOINT" <<'PY'
import json, sys
from noether_control.models.checkpoint import read_checkpoint

payload = read_checkpoint(sys.argv[1])
# the dataset sets the frame and action sizes
skip = {"noether", "device", "train.init_from", "train.steps", "train.dynamics_steps",
        "train.amp", "train.progress", "train.tensorboard", "model.image_size", "model.channels",
        "model.action_dim", "model.state_dim"}

def leaves(node, prefix=""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if name in skip:
            continue
        if isinstance(value, dict):
            yield from leaves(value, name + ".")
        else:
            yield f"{name}={json.dumps(value)}"

print(payload["step"])
print("\n".join(leaves(payload["config"])))
PY
)
STEP=${STORED[0]}
# shellcheck disable=SC2206  # EXTRA is a list of overrides, split on spaces on purpose
COMMON=("${STORED[@]:1}" train.steps=$((STEP + E2)) train.dynamics_steps=0 train.amp=false
        train.progress=false train.tensorboard=false device="$DEVICE" ${EXTRA:-})

stamp "control and Noether variants ($VARIANTS): $E2 steps from step $STEP, seeds $SEEDS"
pids=()
for seed in $SEEDS; do
  $CLI train "${COMMON[@]}" seed="$seed" noether=off train.init_from="$CHECKPOINT" \
    hydra.run.dir="$OUT/s$seed/control" > "$OUT/s$seed.control.log" 2>&1 &
  pids+=($!)
done
start_variants "$OUT" "$CHECKPOINT" "${COMMON[@]}" noether.pretrain_steps="$STEP"
wait_all "${pids[@]}" || stamp "a control or variant run failed: see $OUT/s*.log"

stamp "compare"
pids=()
start_comparisons "$OUT" "$CHECKPOINT" "$OUT/s%s/control"
wait_all "${pids[@]}" || stamp "a comparison failed: see $OUT/s*.compare_*.log"
$PY "$(dirname "$0")/noether_table.py" "$OUT"
stamp "done: $OUT/table.md"
