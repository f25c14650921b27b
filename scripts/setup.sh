#!/usr/bin/env bash
# Creates .venv (if missing) and installs torchrl_chunk with its test extras.
# Used by both README commands and by .ci/run; safe to run again (pip skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torchrl_chunk, torchrl, metaworld, jax" >/dev/null 2>&1; then
    python -m pip install -q --upgrade pip
    # The exact pin matters: on these machines torch==2.13.0 resolves to a local CPU wheel,
    # while an open range makes pip download several GB of CUDA wheels.
    python -m pip install -q "torch==2.13.0"
    python -m pip install -q -e ".[test]"
fi
