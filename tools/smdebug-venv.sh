#!/usr/bin/env bash
# Build the venv benchmarks/overhead_torch.py uses to measure smdebug 1.0.34 side by side.
# usage: tools/smdebug-venv.sh [VENV_DIR]   (default ~/.cache/tensortap/venvs/smdebug)
# smdebug is frozen (numpy<2 only, undeclared dependencies): it gets its own venv, never ours.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$HOME/.cache/tensortap/venvs/smdebug}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv" >&2
  "$py" -m venv "$venv"
fi
log="$venv/.pip-install.log"
if ! { "$venv/bin/pip" install -q --upgrade pip wheel setuptools &&
       "$venv/bin/pip" install -q -r "$here/requirements/smdebug.txt"; } >"$log" 2>&1; then
  grep -v "is ignored: it is neither" "$log" >&2
  echo "pip install -r requirements/smdebug.txt failed (full log: $log)" >&2
  exit 1
fi
"$venv/bin/python" - 2>/dev/null <<'PY'
import numpy, torch, smdebug
from smdebug.pytorch import Hook  # noqa: F401  (fails here, not in the benchmark, if an import is missing)
print(f"smdebug {smdebug.__version__}, torch {torch.__version__}, numpy {numpy.__version__}: ok")
PY
