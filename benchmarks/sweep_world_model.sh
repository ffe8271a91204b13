#!/usr/bin/env bash
# Demo-scale world-model variants side by side: one dataset (the demo's: 40 OU-policy pendulum
# episodes, seed 0), each variant trained like `make demo`'s world_model stage (4 context
# frames, 700 joint steps at batch 8, lr 2e-3 decayed to 0 and scheduled sampling over them,
# then 3000 dynamics steps) with its own overrides, then evaluated at horizons 1..25; prints per
# variant the MSE at h1/h5/h10/h25 and both reference predictors.
#
#   bash benchmarks/sweep_world_model.sh [OUT_DIR]       (default: runs/sweep_world_model)
#
# Environment: JOBS (variants trained at once, default 2), STEPS (joint steps, default 700),
# N_PAST (default 4), DYNAMICS_STEPS (default 3000; a variant's own data.n_past or
# train.dynamics_steps wins), DEVICE (default auto; on a GPU the runs keep float32, like the CPU),
# VARIANTS_FILE (one variant per line: a name, then Hydra overrides; default: the list below).
# Each job uses one torch thread. (docs/world_model.md's sweep table was measured before the
# dynamics phase: N_PAST=2 DYNAMICS_STEPS=0, and without the lr decay.)
set -euo pipefail
OUT=$(realpath -m "${1:-runs/sweep_world_model}")
source "$(dirname "$0")/tools.sh"
JOBS=${JOBS:-2}
STEPS=${STEPS:-700}
N_PAST=${N_PAST:-4}
DYNAMICS_STEPS=${DYNAMICS_STEPS:-3000}
DEVICE=${DEVICE:-auto}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
DEFAULT_VARIANTS="default
lr_4e-3 train.lr=4.0e-3
latent_10 train.latent_weight=10
n_past_2 data.n_past=2
no_dynamics train.dynamics_steps=0
keypoints_32 model.keypoints=32
teacher train.rollout=teacher
closed train.rollout=closed
seed_1 seed=1"
VARIANTS=$(if [[ -n "${VARIANTS_FILE:-}" ]]; then cat "$VARIANTS_FILE"; else echo "$DEFAULT_VARIANTS"; fi)

$CLI collect env=pendulum policy=ou episodes=40 num_envs=16 seed=0 progress=false \
  dataset.root="$OUT/datasets" dataset.overwrite=true hydra.run.dir="$OUT/collect" > /dev/null
DATA=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['path'])" \
  "$OUT/collect/results.json")

run_variant() {
  local name=$1; shift
  local dir="$OUT/$name"
  local base=() setting
  for setting in data.n_past="$N_PAST" train.dynamics_steps="$DYNAMICS_STEPS"; do
    [[ " $* " == *" ${setting%%=*}="* ]] || base+=("$setting")
  done
  $CLI train data.path="$DATA" train.steps="$STEPS" train.batch_size=8 train.lr=2.0e-3 \
    train.lr_decay_steps="$STEPS" "${base[@]}" \
    train.schedule_steps="$STEPS" train.log_every=35 train.checkpoint_every="$STEPS" \
    train.image_every=0 train.val_windows=0 train.tensorboard=false train.progress=false \
    train.amp=false device="$DEVICE" "$@" hydra.run.dir="$dir/train" > "$dir.log" 2>&1 &&
  $CLI evaluate checkpoint="$dir/train/checkpoints/last.pt" horizon=25 lpips=false \
    gif_sequences=0 device="$DEVICE" hydra.run.dir="$dir/evaluate" >> "$dir.log" 2>&1 ||
  echo "variant $name failed: see $dir.log"
}

while read -r name overrides; do
  [[ -z "$name" ]] && continue
  # shellcheck disable=SC2086  # the overrides are meant to split into Hydra arguments
  run_variant "$name" $overrides &
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
done <<< "$VARIANTS"
wait

$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'variant':14s} {'h1':>9s} {'h5':>9s} {'h10':>9s} {'h25':>9s}  h10 vs best reference")
shown = None
for results in sorted(out.glob("*/evaluate/results.json")):
    doc = json.loads(results.read_text())
    mse = doc["per_horizon"]["mse"]
    refs = {k: v["mse"] for k, v in doc["references"].items()}
    shown = refs
    best = min(r[9] for r in refs.values())
    print(f"{results.parent.parent.name:14s} " + " ".join(f"{mse[h - 1]:.3e}" for h in (1, 5, 10, 25))
          + f"  {best / mse[9]:.2f}x")
for name, ref in (shown or {}).items():
    print(f"{name:14s} " + " ".join(f"{ref[h - 1]:.3e}" for h in (1, 5, 10, 25)))
PY
