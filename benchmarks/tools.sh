# Sourced by the benchmark scripts: CLI and PY are the project's .venv commands (made by `make`)
# when there is one, else whatever is on PATH; NOETHER_CONTROL and PYTHON override them.
VENV_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin
if [ -x "$VENV_BIN/noether-control" ]; then
  CLI=${NOETHER_CONTROL:-$VENV_BIN/noether-control}
  PY=${PYTHON:-$VENV_BIN/python}
else
  CLI=${NOETHER_CONTROL:-noether-control}
  PY=${PYTHON:-python3}
fi

# Waits for every pid given; fails if any failed, after all have ended.
wait_all() { local failed=0; for pid in "$@"; do wait "$pid" || failed=1; done; return $failed; }

# start_comparisons OUT BASELINE_FORMAT CONTROL_FORMAT: starts, in the background, `compare` of
# each seed's baseline, control and Noether variant OUT/sSEED/VARIANT into OUT/sSEED/compare_VARIANT
# for every seed of SEEDS and variant of VARIANTS (with SWEEP and DEVICE), appending the pids to
# the caller's `pids` array. The formats are printf patterns of the seed ("$OUT/s%s/control").
start_comparisons() {
  local out=$1 seed variant baseline control
  for seed in $SEEDS; do
    # shellcheck disable=SC2059  # the formats are the caller's patterns
    printf -v baseline "$2" "$seed"
    # shellcheck disable=SC2059
    printf -v control "$3" "$seed"
    for variant in $VARIANTS; do
      $CLI compare +runs.baseline="$baseline" +runs.control="$control" \
        +runs.noether="$out/s$seed/$variant" sweep_steps="$SWEEP" device="$DEVICE" \
        hydra.run.dir="$out/s$seed/compare_$variant" > "$out/s$seed.compare_$variant.log" 2>&1 &
      pids+=($!)
    done
  done
}

# start_variants OUT INIT_FORMAT TRAIN_ARGS...: starts, in the background, one `train` per seed
# of SEEDS and Noether variant of VARIANTS, meta-training from the checkpoint INIT_FORMAT (a
# printf pattern of the seed) into OUT/sSEED/VARIANT, logging to OUT/sSEED.VARIANT.log, and
# appends the pids to the caller's `pids` array.
start_variants() {
  local out=$1 format=$2 seed variant init
  shift 2
  for seed in $SEEDS; do
    # shellcheck disable=SC2059  # the format is the caller's pattern
    printf -v init "$format" "$seed"
    for variant in $VARIANTS; do
      $CLI train "$@" seed="$seed" noether="$variant" noether.init_from="$init" \
        hydra.run.dir="$out/s$seed/$variant" > "$out/s$seed.$variant.log" 2>&1 &
      pids+=($!)
    done
  done
}
