#!/usr/bin/env bash
# Where a GPU extract's time goes when the network is far faster than the pipeline: VGG16 fc7 fp16
# on N generated 500x375 JPEGs, the end-to-end rate at several worker counts, then the main
# process profiled (cProfile, top functions by own time). Run from the repository root:
#   OUT=/tmp/x bash bench/gpu/extract_scaling.sh
set -uo pipefail
OUT=${OUT:-/tmp/extract_scaling}; N=${N:-2000}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
mkdir -p "$OUT"; export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=$(mktemp -d); trap 'rm -rf "$DATA"' EXIT
"$PY" - "$DATA" "$N" <<'PYEOF'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
base = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
for i in range(n):
    os.makedirs(os.path.join(root, f"class{i % 5}"), exist_ok=True)
    Image.fromarray(np.roll(base, i * 7, axis=1) // (1 + i % 3)).save(os.path.join(root, f"class{i % 5}", f"{i:05d}.jpg"), quality=90)
PYEOF
for workers in ${WORKERS:-4 8 15}; do
  echo "== workers $workers =="
  timeout 120 "$PY" bench/extract_bench.py "$DATA" --backbone vgg16 --weights random --limit "$N" --batch-size 256 \
    --precision fp16 --device "$DEVICE" --workers "$workers" --seconds 3 --skip-classic | grep -E "cnncodes |model-only|ratio"
done
echo "== profile of the main process, workers 8 =="
timeout 150 "$PY" -m cProfile -o "$OUT/extract.prof" pipeline.py extract "$DATA" --cache "$OUT/p.h5" --backbone vgg16 \
  --weights random --batch-size 256 --precision fp16 --device "$DEVICE" --workers 8 --no-progress
"$PY" -c "import pstats; pstats.Stats('$OUT/extract.prof').sort_stats('tottime').print_stats(22)" | tail -32
