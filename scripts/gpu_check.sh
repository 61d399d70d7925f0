#!/usr/bin/env bash
# GPU conformance on the device machine: every engine usable there, against the FP32 reference.
# Run from the repo root after `source scripts/device_env.sh`. Writes logs under ${OUT:-/tmp/out}.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export FUSIONRT_HOME=${FUSIONRT_HOME:-/tmp/fusionrt_home}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m fusionrt.cli doctor --json > "$OUT/doctor.json" 2>&1; tail -c 1500 "$OUT/doctor.json"; echo
# 1. conformance: full-width synthetic models, every engine, on CUDA
FUSIONRT_TEST_DEVICE=cuda FUSIONRT_TEST_WIDTH=1.0 timeout 420 python3 -m pytest -q -rs \
  tests/test_engines_conformance.py -p no:cacheprovider 2>&1 | tee "$OUT/conformance.log" | tail -25
