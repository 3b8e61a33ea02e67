#!/usr/bin/env bash
# The main job end to end on offline demo data (`make demo`): synthesize a Speech Commands-style tree,
# featurize it (mel) into the Zarr cache, train the chapter's CNN on CPU, evaluate, predict one clip,
# export, listen, draw the figures and the HTML report. Every step is a no-op when its output is there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
TREE=data/synth_commands
RUN=runs/demo

"$BIN/speechcls" synth --voices 40 --noise 0.05
"$BIN/speechcls" data info --root "$TREE"
"$BIN/speechcls" featurize --variant mel --root "$TREE"
"$BIN/speechcls" info cache/synth_commands/mel-*.zarr
if [ -f "$RUN/metrics.json" ]; then
    echo "$RUN: already trained"
elif [ -f "$RUN/last.pt" ]; then
    "$BIN/speechcls" train --resume "$RUN"
else
    "$BIN/speechcls" train --variant mel --epochs 16 --min-epochs 16 --out "$RUN"
fi
"$BIN/speechcls" evaluate "$RUN"
first=$(head -n 1 "$TREE/testing_list.txt")
"$BIN/speechcls" predict "$RUN" "$TREE/$first"
"$BIN/speechcls" export "$RUN"
"$BIN/speechcls" listen "$RUN/best.onnx" "$TREE/_background_noise_/white_noise.wav"
"$BIN/speechcls" plot spectrogram "$TREE/$first" --out "$RUN/spectrogram.png"
"$BIN/speechcls" plot curves "$RUN" --out "$RUN/curves.png"
"$BIN/speechcls" plot confusion "$RUN" --out "$RUN/confusion.png"
"$BIN/speechcls" report "$RUN" --out "$RUN/report.html"
# the training summary again (the last one in train.log) and the page to open
grep -h -A1 '^summary: ' "$RUN/train.log" 2>/dev/null | tail -n 2 || true
echo "open $RUN/report.html"
