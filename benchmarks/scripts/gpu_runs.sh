#!/usr/bin/env bash
# The benchmark runs behind the H100 rounds of results (benchmarks/results/*-h100-r2/: generator,
# aot, video, ray; *-h100-r3/: rewrite, final, midbatch), one part per invocation, on your GPU
# machine (the script puts this repository on PYTHONPATH):
#     bash benchmarks/scripts/gpu_runs.sh PART [OUT_DIR]     (OUT_DIR default: ./bench-out)
#   generator : GPU 0 — generator steps 1, 6, 7, 10, 12, 13 at bs1 and bs16 (eager FP32, eager
#               FP16 + graph, ORT CUDA FP32, torch.compile FP16 without / with conv channel
#               padding, eager FP16 with padding), kernel profiles of 10 and 12; GPU 1 (or after,
#               on one GPU) — AOT package build, then two fresh processes loading it from the
#               engine cache (profiled); detector conformance on CUDA.
#   aot       : only the AOT part of 'generator' (build, then two profiled loads).
#   video     : the GPU video bench on GPU 0, pinned to 16 CPU cores (one H100's share of the
#               2-GPU host of the r2 results).
#   rewrite   : GPU 0 — the exact layer rewrites (builders/generator_rewrite.py) added one at a
#               time to step 10 (steps 14-17; 14-16 at bs16 only), eager FP32 as the PSNR reference,
#               kernel profiles of 10 and 17 at bs1 and bs16.
#   final     : GPU 0 — one run for the issue-6 table: eager FP32, eager FP16 + graph, ORT CUDA
#               FP32 (needs onnxruntime-gpu), step 10, the large-batch (21) and small-batch (25)
#               rewrite sets, with kernel profiles of 21 and 25 (r3).
#   midbatch  : GPU 0 — the two rewrite sets (21 large-batch, 25 small-batch) at bs4 and bs8,
#               eager FP32 as the PSNR reference: where torch-compile's rewrite="auto" should
#               switch from 25's set to 21's (r4).
#   ray       : fusionrt batch scaling, 1 then 2 GPU workers on the GPU video path
#               (RAY_ENGINE: engine map, default the GPU path's; RAY_PRESET: x264 preset).
# Each part is bounded in time: the budgets of the recorded runs (GEN_S, VIDEO_S, RAY_S override).
# Outputs go to OUT_DIR/<part>/. Full-size synthetic (random-weight) models in $FUSIONRT_HOME
# (default /tmp/frh): speed only.
set -u
part=${1:?usage: gpu_runs.sh generator|aot|rewrite|final|midbatch|video|ray [OUT_DIR]}
mkdir -p "${2:-bench-out}/$part"
OUT=$(cd "${2:-bench-out}" && pwd)
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" FUSIONRT_HOME=${FUSIONRT_HOME:-/tmp/frh}
ngpu=$(nvidia-smi -L | wc -l)
other=$(( ngpu > 1 ? 1 : 0 ))
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv > "$OUT/$part/gpu.txt"
case $part in rewrite|final|midbatch) models="'simswap_256'" ;;
  *) models="'arcface_w600k_r50', 'inswapper_128', 'simswap_256'" ;; esac
python3 -c "from fusionrt.builders.synth import ensure_synthetic
from fusionrt.models.store import ModelStore
print(ensure_synthetic(ModelStore(), [$models]))"
aot() {
  for run in build load1 load2; do
    timeout 300 python3 benchmarks/scripts/compile_cache_check.py simswap_256 --device cuda \
      --batch 16 --precision fp16 --aot --profile-load "$OUT/$part/aot_$run.prof.txt" \
      2>"$OUT/$part/aot_$run.err" | tee -a "$OUT/$part/aot.jsonl"
  done
}
# benchmarks/scripts/gpu_generator_opt.py on GPU 0 into OUT_DIR/$part: killed after
# ${GEN_S:-LIMIT} s, its own time budget MARGIN s less (room for the last compile and the
# Markdown). Args: LIMIT MARGIN ARGS…
gen_steps() {
  local limit=${GEN_S:-$1} margin=$2
  shift 2
  CUDA_VISIBLE_DEVICES=0 timeout "$limit" python3 benchmarks/scripts/gpu_generator_opt.py \
    --out "$OUT/$part" "$@" --budget-s $(( limit - margin )) > "$OUT/$part/steps.log" 2>&1
  echo "steps rc $?"
}
case $part in
generator)
  gen_steps 480 60 --batches 1,16 --runs 30 --steps 1,6,7,10,12,13 --profile 10,12 &
  gen=$!
  [ "$other" = 0 ] && wait $gen
  CUDA_VISIBLE_DEVICES=$other aot
  FUSIONRT_TEST_STORE=$FUSIONRT_HOME FUSIONRT_TEST_DEVICE=cuda FUSIONRT_TEST_WIDTH=1.0 \
    CUDA_VISIBLE_DEVICES=$other timeout 200 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_engines_conformance.py -k detector > "$OUT/generator/conformance_detector.log" 2>&1
  tail -3 "$OUT/generator/conformance_detector.log"
  wait
  tail -5 "$OUT/generator/steps.log"
  ;;
aot)
  CUDA_VISIBLE_DEVICES=$other aot
  ;;
rewrite)
  gen_steps 560 90 --batches 1,16 --runs 30 --steps 1,10,14,15,16,17 \
    --batches-for 14=16,15=16,16=16 --profile 10,17 --profile-batches 1,16
  tail -12 "$OUT/rewrite/steps.log"
  ;;
final)
  gen_steps 560 90 --batches 1,16 --runs 50 --steps "${FINAL_STEPS:-1,6,7,10,21,25}" \
    --profile 21,25 --profile-batches 1,16
  tail -12 "$OUT/final/steps.log"
  ;;
midbatch)
  gen_steps 540 150 --batches 4,8 --runs 50 --steps 1,21,25
  tail -8 "$OUT/midbatch/steps.log"
  ;;
video)
  CUDA_VISIBLE_DEVICES=0 taskset -c 0-15 timeout ${VIDEO_S:-540} \
    python3 benchmarks/scripts/gpu_video_bench.py --out "$OUT/video" --results-dir "$OUT/video" \
    --budget-s $(( ${VIDEO_S:-540} - 40 )) --seconds 10 --baseline-seconds 3 --precision tf32 \
    --extra-precision fp16 --e2e "4:superfast,4:ultrafast,6:ultrafast,8:ultrafast,4:ultrafast:none" \
    --extra-engine "detect=ort-cuda" 2>&1 | grep -v -i warn | tail -40
  ;;
ray)
  export RAY_AUTH_MODE=disabled RAY_memory_monitor_refresh_ms=0
  timeout ${RAY_S:-500} python3 benchmarks/scripts/batch_scaling.py --workers 1,2 \
    --gpus-per-worker 1 --cpus-per-worker 16 --gpu-path --swapper inswapper_128 --allow-synthetic \
    --precision tf32 --preset "${RAY_PRESET:-superfast}" ${RAY_ENGINE:+--engine "$RAY_ENGINE"} \
    --size 1920x1080 --clips 8 --seconds 15 --fps 30 --det-size 640 --repeats 1 --out-dir "$OUT/ray" \
    --notes "Device run: $ngpu GPU(s), one worker per GPU on the GPU video path." 2>&1 | tail -30
  ;;
esac
