#!/usr/bin/env bash
# The first hour, as a new user has it: a fresh virtual environment, a plain `pip install .` (no
# extras), then `speechcls --help` and a featurize of the real-speech mini tree with that install.
# Run by `make test` so that an undeclared import (issue 23: click) cannot come back unseen.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q .
"$tmp/venv/bin/speechcls" --help >/dev/null
echo "plain install: speechcls --help ok"
mini=../shared/data/speech_commands_v0.01_mini
if [ -d "$mini" ]; then
    (cd "$tmp" && "$tmp/venv/bin/speechcls" featurize --variant mel --root "$OLDPWD/$mini" --out "$tmp/mini-mel.zarr")
    "$tmp/venv/bin/speechcls" info "$tmp/mini-mel.zarr" >/dev/null
    echo "plain install: featurize of the mini tree ok"
else
    echo "plain install: $mini absent, featurize check skipped"
fi
