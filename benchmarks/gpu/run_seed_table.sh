#!/usr/bin/env bash
# On the GPU machine: install the parts staged by benchmarks/gpu/stage.sh as they arrive (one
# device call per part, back to back while the machine stays warm), then run the seed table.
#
#   run(command="bash benchmarks/gpu/run_seed_table.sh", carry=["build/gpu-bundle/<n>"],
#       timeout_s=600)                       # n = 1, 2, 3; the last required one runs the table
#
# Each call installs what its part holds into build/gpu-venv (a venv over the machine's own
# Python 3.12 and torch 2.11 / torchvision 0.26: nothing here pulls our torch pin; autotune
# itself goes in with --no-deps), in one pip call, leaving alone what the machine already has.
# Detectron2 arrives as a pure-Python wheel (no `_C`: the article's Mask R-CNN R50-FPN does not
# use it; its NMS and RoIAlign are torchvision's CUDA kernels). With D2_BUILD=1 the first call
# instead builds the full Detectron2 from the source beside it with nvcc (sm_90, 16 jobs: a few
# minutes of the device time). When every required part is in (and numpy and pillow are there:
# else it asks for the optional part), it runs benchmarks/seed_table.py (under 8 minutes on one
# H200), copies the table, its JSON and the logs to $OUT, and runs the handlers' CUDA tests in
# the call's time left. Without Detectron2 it falls back to --backend torchvision and says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
out=${OUT:-/tmp/out}
mkdir -p "$out" build/gpu-installed
venv=build/gpu-venv
py=$venv/bin/python
log() { echo "[$(date +%T)] $*"; }

if [ ! -x "$py" ]; then
  python3 -m venv --system-site-packages "$venv"
  log "venv over $(python3 -V), torch $("$py" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))')"
fi
required=0
for part in build/gpu-bundle/*/; do
  read -r n required optional <"$part/PART" || true
  [ -e "build/gpu-installed/$n" ] && continue
  log "installing part $n${optional:+ (optional)}"
  # The wheels of distributions the machine lacks (numpy, pillow, ... beside its torch stay).
  mapfile -t wheels < <("$py" - "$part" <<'PY'
import importlib.metadata as md, pathlib, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(d.metadata["Name"]) for d in md.distributions()} - {"setuptools", "wheel"}
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    if norm(whl.name.split("-")[0]) not in have:
        print(whl)
PY
  )
  if [ "${#wheels[@]}" -gt 0 ]; then
    "$py" -m pip install -q --no-deps "${wheels[@]}"
  fi
  if [ -e "$part/jre.tar.xz" ]; then
    tar -C build -xJf "$part/jre.tar.xz"
  fi
  if [ -e "$part/detectron2-src.tar.gz" ] && [ "${D2_BUILD:-0}" = 1 ]; then
    tar -C build -xzf "$part/detectron2-src.tar.gz"
    log "building Detectron2 with nvcc (sm_90)"
    (cd build/detectron2 && TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 FORCE_CUDA=1 \
      "../../$py" -m pip wheel -q --no-build-isolation --no-deps -w ../d2-wheel . \
      >../d2-build.log 2>&1) || log "Detectron2 build failed (see build/d2-build.log): the pure-Python one stays"
    for whl in build/d2-wheel/detectron2-*.whl; do
      [ -e "$whl" ] && "$py" -m pip install -q --no-deps --force-reinstall "$whl"
    done
  fi
  touch "build/gpu-installed/$n"
done
if [ "${GPU_TESTS_ONLY:-0}" = 1 ]; then
  JAVA_HOME=$PWD/build/jre timeout 580 "$py" -m pytest -q -p no:cacheprovider tests/handlers \
    -k "cuda or fp16" 2>&1 | tee "$out/gpu-tests.log"
  exit
fi
missing=()
for n in $(seq "$required"); do
  [ -e "build/gpu-installed/$n" ] || missing+=("$n")
done
if [ "$required" = 0 ] || [ "${#missing[@]}" -gt 0 ]; then
  log "parts still to come: ${missing[*]:-all}; call again with the next one"
  exit 0
fi
if ! "$py" -c 'import numpy, PIL' 2>/dev/null; then
  log "this machine lacks numpy or pillow: call again with the optional part, build/gpu-bundle/$((required + 1))"
  exit 0
fi

"$py" -m pip install -q --no-deps --no-build-isolation -e .
export JAVA_HOME=$PWD/build/jre
"$py" -m pip check >"$out/pip-check.txt" 2>&1 || true
backend=detectron2
"$py" -c 'import detectron2' 2>/dev/null || { backend=torchvision; log "no Detectron2: --backend torchvision"; }
log "torch $("$py" -c 'import torch; print(torch.__version__)'), backend $backend"

timeout 470 "$py" benchmarks/seed_table.py --out build/seed --backend "$backend" 2>&1 \
  | tee "$out/seed_table.log" || log "seed_table.py did not finish"
cp build/seed/seed_table.md build/seed/seed_table.json build/seed/study.log "$out/" 2>/dev/null || true
tail -n 40 build/seed/rows/*/*/model_log.log >"$out/model_log_tail.txt" 2>/dev/null || true

# Then, in the call's time left, the CUDA paths of the handlers (fp16, TorchScript on cuda,
# Detectron2 on cuda); a later call can run them alone with GPU_TESTS_ONLY=1.
left=$((590 - SECONDS))
if [ "$left" -gt 30 ]; then
  timeout "$left" "$py" -m pytest -q -p no:cacheprovider tests/handlers -k "cuda or fp16" \
    2>&1 | tee "$out/gpu-tests.log" || log "GPU handler tests failed or ran out of time"
fi
