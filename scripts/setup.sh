#!/usr/bin/env bash
# Creates .venv (if missing) and installs torchrl_chunk with its test extras.
# Used by both README commands and by .ci/run; safe to run again (pip skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Headless OpenGL for MuJoCo's pixel observations (EGL from Mesa). Without it, state-only
# training works and the pixel tests skip; installed when missing and we are root on Debian.
if ! ldconfig -p 2>/dev/null | grep -q "libEGL.so.1"; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null) \
            || echo "setup: could not install EGL (pixel observations will be unavailable)" >&2
    else
        echo "setup: no libEGL found; install libegl1 libegl-mesa0 libgl1-mesa-dri for pixel observations" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
# pip returns quickly when everything is already installed, so this also brings an
# existing .venv up to date with pyproject.toml.
python -m pip install -q --upgrade pip
# The exact pin matters: on these machines torch==2.13.0 resolves to a local CPU wheel,
# while an open range makes pip download several GB of CUDA wheels.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
