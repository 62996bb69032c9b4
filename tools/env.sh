#!/usr/bin/env bash
# Create (once) and activate the project's virtual environment; source it from the other scripts.
# The venv lives outside the checkout, keyed on the dependency file and the Python version, so CI and fresh clones
# reuse it only when the dependencies are unchanged. Override with D2O_VENV=/path.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required (set PYTHON=...)" >&2; exit 1; }
KEY=$( (cat "$REPO/pyproject.toml"; "$PY" --version) | sha256sum | cut -c1-12)
VENV=${D2O_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/d2o/venv-$KEY}
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
  echo "==> creating $VENV (torch and dependencies; a few minutes the first time)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  pip_q() { "$VENV/bin/pip" install -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2; }
  pip_q --upgrade pip
  # torch/torchvision first, at the versions the ranges in pyproject.toml admit (see README)
  pip_q "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
  pip_q -e "$REPO[workflow,test]"
  touch "$VENV/.complete"
else
  "$VENV/bin/pip" install -q --no-deps -e "$REPO" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2  # this checkout
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg
