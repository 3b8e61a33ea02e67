#!/usr/bin/env bash
# The one prepared GPU check: on a bare GPU machine (Python 3.12 + torch 2.11, no network, nothing of
# ours) install the carried wheels and the project (no deps), make the data, run the CUDA tests and
# the benchmarks; under 8 minutes, each part under its own time limit so one slow part cannot eat the
# rest. Prepare with `bash tools/gpu_wheels.sh` here, then run it through the device tool with carry
# [".whl", ".shared_data"]. Results land in $OUT (the device tool brings them back) and are committed
# under benchmarks/results/ with the GPU named.
#
# Dry run on a CPU machine (skips the CUDA parts cleanly):
#   SKIP_WHEELS=1 CLIPS=1500 SMALL_CLIPS=600 ENGINES=torch/cpu PEER_WORKERS=2 FEATURIZE_WORKERS=1,2 DEVICE=cpu \
#       OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
BUDGET=${BUDGET:-470}             # seconds for the whole script: each part gets min(its cap, what is left)
T0=$(date +%s)
# cap N: a timeout of N seconds, or less where the budget has less left (at least 5)
cap() { local left=$(( BUDGET - ($(date +%s) - T0) )); [ "$left" -lt "$1" ] && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
RES=${RES:-/tmp/gpu_results}      # every result file; packed into $OUT/results.tgz at the end (the device
rm -rf "$RES"; mkdir -p "$RES"    # tool brings back at most 8 files)
CLIPS=${CLIPS:-64727}            # featurize at full size: the clip count of v0.01
SMALL_CLIPS=${SMALL_CLIPS:-12000} # the input and training benchmarks
ENGINES=${ENGINES:-torch/cuda}
DEVICE=${DEVICE:-cuda}
PEER_WORKERS=${PEER_WORKERS:-$(nproc)}
FEATURIZE_WORKERS=${FEATURIZE_WORKERS:-1,4,8,16}  # featurize --workers counts to compare
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1: a dry run where the packages are installed already
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile -e . || export PYTHONPATH=/tmp/site:$PWD
fi
export SPEECHCLS_SHARED_DATA=$PWD/.shared_data
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch, torchaudio, zarr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0), 'torchaudio', torchaudio.__version__, 'zarr', zarr.__version__)"
} | tee "$RES/gpu.txt"

echo "== CUDA tests: featurize CUDA == CPU, loader CUDA == CPU, parity on real clips, DDP on 2+ GPUs"
timeout $(cap 100) python3 -m pytest -q -p no:cacheprovider tests/test_featurize.py tests/test_featurize_pipeline.py tests/test_loader.py tests/test_distributed.py tests/test_augment.py tests/test_tasks.py -k "cuda or every_item" 2>&1 | tail -6 | tee "$RES/tests.txt"

echo "== data: $CLIPS clips (64,727: the size of v0.01) and $SMALL_CLIPS for the input and training benchmarks"
start=$(date +%s)
timeout $(cap 90) python3 tools/make_tree.py --out /tmp/tree --clips "$CLIPS" && timeout $(cap 30) python3 tools/make_tree.py --out /tmp/tree_small --clips "$SMALL_CLIPS"
echo "make_tree $(( $(date +%s) - start )) s"

echo "== featurize at full size: speechcls on $ENGINES vs the peer (num_workers $PEER_WORKERS), with each run's stage breakdown"
# one timed run each, no warm-up run: at full size a run is seconds and four variants must fit the budget;
# the tree is in the page cache (make_tree just wrote it) and the script starts CUDA before timing
timeout $(cap 150) python3 benchmarks/featurize.py --root /tmp/tree --engines "$ENGINES" --peer-workers "$PEER_WORKERS" \
    --variants mel,spectrogram,complex,waveform --repeats 1 --warmup 0 --out "$RES" 2>&1 | grep -v "^|" | tail -48
echo "== featurize by worker count at full size (mel, $ENGINES): clips/s and the bound at $FEATURIZE_WORKERS workers"
# no warm-up run either (as above)
timeout $(cap 70) python3 benchmarks/featurize.py --root /tmp/tree --engines "$ENGINES" --no-peer --variants mel \
    --workers "$FEATURIZE_WORKERS" --repeats 1 --warmup 0 --out "$RES/workers" 2>&1 | grep -v "^|" | tail -32
echo "== featurize's CPU stages alone by worker count (decode: threads vs processes, RIFF vs libsndfile; encode; write)"
timeout $(cap 45) python3 benchmarks/featurize.py --scaling --root /tmp/tree --workers "$FEATURIZE_WORKERS" --clips 4096 \
    --stages decode,encode,write --variants mel,complex --repeats 1 --out "$RES" 2>&1 | grep -v "^|---" | tail -30

echo "== training step: device tensors vs our loader vs the peer; fp32, bf16 + channels_last, bf16 + compile"
for opts in "--precision fp32" "--precision bf16 --channels-last"; do
    tag=$(echo "$opts" | tr -d ' -' | tr -s ' ' _)
    timeout $(cap 50) python3 benchmarks/train_step.py --root /tmp/tree_small --device "$DEVICE" --steps 40 \
        --peer-workers "$PEER_WORKERS" --variants mel,complex $opts --out "$RES/train_$tag" 2>&1 | grep -v "^|" | tail -7
done
timeout $(cap 70) python3 benchmarks/train_step.py --root /tmp/tree_small --device "$DEVICE" --steps 40 --peer-workers "$PEER_WORKERS" \
    --variants mel --precision bf16 --compile --out "$RES/train_compile" 2>&1 | grep -v "^|" | tail -4

echo "== input pipeline: a full epoch onto the device, every loader mode, float32 and float16, waveform cache"
timeout $(cap 80) python3 benchmarks/input_pipeline.py --root /tmp/tree_small --device "$DEVICE" --peer-workers "$PEER_WORKERS" \
    --variants mel,complex --dtypes float32,float16 --out "$RES" 2>&1 | grep -v "^|" | tail -16
echo "== augmentation on the device: its share of a train step (goal <= 10 %)"
timeout $(cap 60) python3 benchmarks/train_step.py --augment --variants none --device "$DEVICE" --steps 40 \
    --speed 0.1 --out "$RES/train_augment" 2>&1 | grep -v "^|" | tail -12

echo "== the kws recipe at full size ($CLIPS clips; synthetic tones, so the accuracy only shows it learns): epoch time"
# words (30 classes) and kws12 with BC-ResNet-8's recipe, 2 epochs each, from one waveform store; the
# background noise for _silence_ and mixing is the synthetic tree's white / pink / brown noise
python3 -c "from pathlib import Path; from speechcls.data.synth import write_noise; write_noise(Path('/tmp/noise'), 0)"
timeout $(cap 40) python3 -m speechcls featurize --variant waveform --root /tmp/tree --out /tmp/wave.zarr 2>&1 | tail -1
for task in words kws12; do
    timeout $(cap 90) python3 -m speechcls train --store /tmp/wave.zarr --recipe kws --model bcresnet-8 --task $task \
        --noise-dir /tmp/noise --epochs 2 --device "$DEVICE" --out "$RES/kws_$task" 2>&1 | grep -E "^(model|task|recipe|epoch|summary)"
done
echo "== total $(( $(date +%s) - T0 )) s"
find "$RES" -type f | sort
tar czf "$OUT/results.tgz" -C "$RES" .
