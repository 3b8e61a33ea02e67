#!/usr/bin/env bash
# A wake word of your own, end to end (docs/wake-word.md explains each step; tests/test_wake_word.py runs
# this file with small sizes): "hey computer" synthesized in many voices, negatives from real speech,
# 1.5-second clips, the kws recipe, a streaming evaluation, an ONNX export, and listening to a recording.
set -euo pipefail
BIN=${BIN:-.venv/bin}                                     # where speechcls is installed
WORK=${WORK:-wake}                                        # everything this example writes
NEGATIVES=${NEGATIVES:-../shared/data/speech_commands_v0.01_mini}  # real speech of other words (a tree)
VOICES=${VOICES:-80}                                      # synthetic speakers of the phrase
EPOCHS=${EPOCHS:-40}
MINUTES=${MINUTES:-10}                                    # of the evaluation stream
mkdir -p "$WORK"

# 1. Positives: the phrase in VOICES espeak-ng voices (accent x variant x rate x pitch), 1.5 s clips, half
#    of them in a small room, noise at 5-20 dB SNR; near misses said by the same voices are negatives.
"$BIN/speechcls" synth --out "$WORK/synth" --words "hey computer,hey commuter,computer,lights on" \
  --voices "$VOICES" --clip-seconds 1.5 --reverb 0.5 --snr 5,20

# 2. One manifest of both sources, each clip with its own tree's speaker-disjoint split (paths are
#    relative to the manifest's folder, so the real speech is linked in beside the synthetic).
ln -sfn "$(cd "$NEGATIVES" && pwd)" "$WORK/negatives"
"$BIN/python" - "$WORK" <<'EOF'
import csv, sys
from pathlib import Path
from speechcls.data.tree import index_tree

work = Path(sys.argv[1])
with open(work / "wake.csv", "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["path", "label", "split", "speaker"])
    for folder in ("synth", "negatives"):
        index = index_tree(work / folder)
        for clip, code in zip(index.clips, index.split("official")):
            split = ("train", "validation", "test")[code]
            out.writerow([f"{folder}/{clip.path}", index.classes[clip.label], split, clip.speaker])
EOF
"$BIN/speechcls" data info --manifest "$WORK/wake.csv" --keywords "hey computer" --no-check-audio

# 3. Features: waveforms of 1.5 s (24,000 samples); the log-mel features are computed on the device.
"$BIN/speechcls" featurize --manifest "$WORK/wake.csv" --variant waveform --clip-seconds 1.5 --out "$WORK/wake.zarr"

# 4. The kws recipe for one keyword: classes _silence_ (cut from the noise), _unknown_ (every other label), hey computer.
"$BIN/speechcls" train --store "$WORK/wake.zarr" --keywords "hey computer" --noise-dir "$WORK/synth/_background_noise_" \
  --recipe kws --model matchboxnet-3x1x64 --epochs "$EPOCHS" --out "$WORK/run" --overwrite

# 5. Streaming evaluation: a long recording of the test split's noise with the phrase and other words at
#    known times; false rejects and false accepts per hour over the threshold; the operating point is kept.
"$BIN/speechcls" stream build --store "$WORK/wake.zarr" --keywords "hey computer" --noise-dir "$WORK/synth/_background_noise_" \
  --minutes "$MINUTES" --out "$WORK/stream" --overwrite
"$BIN/speechcls" stream eval "$WORK/run" "$WORK/stream.wav" --labels "$WORK/stream.csv"

# 6. Export: one ONNX file taking (batch, 24000) samples at 16 kHz, its operating point in the metadata.
"$BIN/speechcls" export "$WORK/run"

# 7. Listen: a recording holding the phrase (a test voice, never trained on) between other speech.
"$BIN/python" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

work = Path(sys.argv[1])
test = {line.strip() for line in open(work / "synth" / "testing_list.txt") if line.startswith("hey computer/")}
phrase, rate = sf.read(work / "synth" / sorted(test)[0], dtype="float32")
other, _ = sf.read(work / "synth" / sorted(test)[0].replace("hey computer/", "lights on/"), dtype="float32")
gap = np.zeros(rate, dtype=np.float32)
sf.write(work / "recording.wav", np.concatenate([gap, other, gap, phrase, gap]), rate, subtype="PCM_16")
EOF
"$BIN/speechcls" listen "$WORK/run/best.onnx" "$WORK/recording.wav"
