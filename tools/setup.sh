#!/usr/bin/env bash
# Set speechcls up on a fresh machine, idempotently (fast when already done):
#   1. the system packages: espeak-ng (synthetic speech, demo and tests); chromium only with
#      SPEECHCLS_WITH_CHROMIUM=1 (`make test` sets it): a test renders the HTML report in it, the demo
#      does not need it;
#   2. a virtual environment ($VENV, default .venv) with speechcls and its test extra, editable.
# torch comes from pip's usual sources; on the development machines pip takes 2.14.1 from local disk.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# espeak-ng speaks the demo data; chromium renders the HTML report in the tests (Debian's packages)
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
if [ "${SPEECHCLS_WITH_CHROMIUM:-0}" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "setup: installing ${missing[*]} (apt-get)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: ${missing[*]} missing; install with your package manager (e.g. brew install espeak-ng chromium)" >&2
    fi
fi

stamp="$VENV/.speechcls-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    echo "setup: installing speechcls into $VENV (first time: 1 to 3 minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    touch "$stamp"
fi
