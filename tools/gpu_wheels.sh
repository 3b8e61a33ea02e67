#!/usr/bin/env bash
# Run HERE (with pip and network to PyPI), before `benchmarks/gpu_check.sh` runs on a bare GPU machine:
# downloads the wheels that machine lacks (Python 3.12, x86_64; it has torch, torchaudio, numpy, typer,
# rich, pytest, pyyaml, typing-extensions, packaging) into .whl/ (git-ignored), and copies the real
# speech of ../shared/data/speech_commands_v0.01_mini into .shared_data/ (git-ignored; ~10 MB).
# Then call the device tool with carry [".whl", ".shared_data"] and command `bash benchmarks/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 soundfile==0.14.0 \
           cffi==2.1.1 pycparser==3.12; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat[@]}" -d .whl "$pkg"
done
mkdir -p .shared_data
rsync -a --delete ../shared/data/speech_commands_v0.01_mini .shared_data/ 2>/dev/null \
    || cp -r ../shared/data/speech_commands_v0.01_mini .shared_data/
du -sh .whl .shared_data
