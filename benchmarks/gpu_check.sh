#!/usr/bin/env bash
# The one prepared GPU check: on a bare GPU machine (Python 3.12 + torch 2.11, no network, nothing of
# ours) install the carried wheels and the project (no deps), make the data, run the CUDA tests and
# the benchmarks; under 8 minutes. Prepare with tools/gpu_wheels.sh here, then run it through the
# device tool with carry [".whl", ".shared_data"]. Results land in $OUT (the device tool brings them
# back) and are committed under benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CLIPS=${CLIPS:-64727}         # the size of v0.01; smaller for a dry run
ENGINES=${ENGINES:-torch/cuda}
PEER_WORKERS=${PEER_WORKERS:-$(nproc)}
if [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1: a dry run where the packages are installed already
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
export SPEECHCLS_SHARED_DATA=$PWD/.shared_data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, torchaudio, zarr, soundfile; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0), torchaudio.__version__, zarr.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"

echo "== CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_featurize.py tests/test_dataset.py 2>&1 | tee "$OUT/tests.txt" | tail -15

echo "== data: a $CLIPS-clip synthetic tree (64,727: the size of v0.01)"
start=$(date +%s); python3 tools/make_tree.py --out /tmp/tree --clips "$CLIPS"; echo "make_tree $(( $(date +%s) - start )) s"

echo "== featurize benchmark (full size, CUDA vs the peer)"
timeout 300 python3 benchmarks/featurize.py --root /tmp/tree --engines "$ENGINES" --peer-workers "$PEER_WORKERS" \
    --repeats 3 --out "$OUT" 2>&1 | tail -25
ls -la "$OUT"
