#!/usr/bin/env bash
# GPU check: VGG16 fc7 images/s, model-only and end to end, fp16 and bf16, batch 256, with CPU
# decoding (PIL or torchvision in the workers) and GPU decoding (--decoder gpu: nvJPEG + resize on the GPU).
# Run from the repository root on a machine with an NVIDIA GPU:  bash bench/gpu/gpu_check.sh
# N (images, default 3000), BATCH (256), SECONDS_MODEL (10) and DEVICE (default cuda; cpu for a dry
# run) can be set.
set -euo pipefail
N=${N:-3000}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
PY=${PY:-python3}
if ! "$PY" -c "import torch, torchvision, h5py, sklearn, efficientnet_lite_pytorch" 2>/dev/null; then
  "$PY" -m pip install -q -e .
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
# Photo-sized JPEGs (500x375, like the flower photos) so decoding costs what it costs in real use.
"$PY" - "$DATA" "$N" <<'PYEOF'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
for i in range(n):
    cls = f"class{i % 5}"
    os.makedirs(os.path.join(root, cls), exist_ok=True)
    img = np.roll(base, i * 7, axis=1) // (1 + i % 3)
    Image.fromarray(img).save(os.path.join(root, cls, f"{i:05d}.jpg"), quality=90)
PYEOF
for decoder in pil torchvision gpu; do
  for precision in fp16 bf16; do
    echo "== vgg16 fc7, $precision, batch $BATCH, decoder $decoder, $N images =="
    "$PY" bench/extract_bench.py "$DATA" --backbone vgg16 --weights random --limit "$N" --batch-size "$BATCH" \
      --precision "$precision" --device "$DEVICE" --decoder "$decoder" --seconds "${SECONDS_MODEL:-10}" --skip-classic
  done
done
