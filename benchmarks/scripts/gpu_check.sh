#!/usr/bin/env bash
# GPU conformance on a CUDA machine (issue 4): every engine usable there, against the FP32
# reference, per stage and for the whole pipeline:
#     bash benchmarks/scripts/gpu_check.sh      (the script puts this repository on PYTHONPATH)
# Full-size synthetic models are made once in $FUSIONRT_HOME (default /tmp/fusionrt_home) and
# reused by the other benchmark scripts given the same FUSIONRT_HOME.
# Writes gpu.txt, doctor.json, conformance.log, pipeline_engines.json under ${OUT:-/tmp/out}.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FUSIONRT_HOME=${FUSIONRT_HOME:-/tmp/fusionrt_home}
T0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m fusionrt.cli doctor --json > "$OUT/doctor.json" 2>&1
python3 -m fusionrt.cli doctor 2>&1 | tail -30
echo "== synthesize full-size models (seeded random weights) into $FUSIONRT_HOME"
python3 -c "from fusionrt.builders.synth import ensure_synthetic
from fusionrt.models.store import ModelStore
print(ensure_synthetic(ModelStore(), ['arcface_w600k_r50', 'inswapper_128', 'simswap_256']))"
echo "== conformance (+$((SECONDS - T0)) s)"
FUSIONRT_TEST_STORE=$FUSIONRT_HOME FUSIONRT_TEST_DEVICE=cuda FUSIONRT_TEST_WIDTH=1.0 \
  timeout ${CONFORMANCE_S:-300} python3 -m pytest -q -rs -p no:cacheprovider \
  tests/test_engines_conformance.py 2>&1 | tee "$OUT/conformance.log" | tail -25
echo "== full pipeline per engine (+$((SECONDS - T0)) s)"
timeout ${PIPELINE_S:-150} python3 benchmarks/scripts/pipeline_engines_check.py --device cuda \
  --engines ort-cuda ort-trt torch torch-compile "detect=ort-cuda,embed=ort-cuda,swap=torch" \
  --out "$OUT/pipeline_engines.json" 2>&1 | grep -v Warning | tail -12
echo "== done (+$((SECONDS - T0)) s)"
