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
