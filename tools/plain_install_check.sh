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
# without extras, a command that needs one says which, in one line (and exits 1)
expect_extra() {  # extra, command...
    local extra=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        echo "plain install: '$*' succeeded without its extra" >&2
        exit 1
    fi
    if [ "$(printf '%s\n' "$out" | grep -c .)" != 1 ] || ! grep -qF "pip install 'speechcls[$extra]'" <<<"$out"; then
        printf "plain install: '%s' should name speechcls[%s] in one line, said:\n%s\n" "$*" "$extra" "$out" >&2
        exit 1
    fi
}
mkdir -p "$tmp/run"
printf 'x' >"$tmp/m.onnx"
expect_extra export "$tmp/venv/bin/speechcls" export "$tmp/run"
expect_extra export "$tmp/venv/bin/speechcls" listen "$tmp/m.onnx" "$tmp/m.onnx"
echo "plain install: export and listen to an .onnx name their extra"
if [ -d "$mini" ]; then
    expect_extra s3 "$tmp/venv/bin/speechcls" featurize --root "$mini" --out s3://bucket/x.zarr
    expect_extra tb "$tmp/venv/bin/speechcls" train --store "$tmp/mini-mel.zarr" --tensorboard --out "$tmp/tb-run"
    echo "plain install: s3:// and --tensorboard name their extras"
fi
