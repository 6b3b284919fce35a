#!/usr/bin/env bash
# Issue 50's device figures in one prepared run (bench/gpu/device_check.py, at most 8 minutes, then
# at most 60 s for the writer's ceiling and 45 s for the loop's, named below: 585 s in all):
# for VGG16 fc7 and efficientnet_lite0, fp16, on 3,000 generated 500x375 and 2048x1536 JPEGs: the
# network alone (settled cuDNN and cudnn.benchmark), decoding alone (CPU workers: PIL,
# torchvision; the gpu decoder), extract with each decoder, the seed's classic loop on the same
# GPU, and whether two extract processes give bit-identical codes; then the main process's own
# ceiling with an infinitely fast network (pipeline_ceiling_bench.py --writer-ceiling: the cache's
# writer with and without group commit) and extract's whole loop with an infinitely fast network and
# decoder (--loop-ceiling: the main process's CPU an image on this machine's cores). Run from the
# repository root:
#   bash bench/gpu/device_check.sh                 # on a CUDA machine
#   bash bench/gpu/device_check.sh --dry-run       # on a CPU: every step, tiny (about 2 minutes on 2 cores)
# Other arguments go to device_check.py (--n, --sizes, --backbones, --json FILE). CARRY=DIR: wheels
# in DIR/whl that the GPU machine lacks (bench/gpu/device_carry.sh makes them) are installed first.
set -uo pipefail
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${CARRY:-}" ] && ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$CARRY"/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
started=$SECONDS
timeout "${LIMIT:-480}" "$PY" bench/gpu/device_check.py "$@"
echo "-- rc $? in $((SECONDS - started)) s"
shards=64; [[ " $* " == *" --dry-run "* ]] && shards=8
timeout 60 "$PY" bench/pipeline_ceiling_bench.py --writer-ceiling "$shards" --runs 1
echo "-- writer ceiling rc $? in $((SECONDS - started)) s"
images=65536; [[ " $* " == *" --dry-run "* ]] && images=4096
timeout 45 "$PY" bench/pipeline_ceiling_bench.py --loop-ceiling "$images" --runs 2
echo "-- loop ceiling rc $? in $((SECONDS - started)) s"
