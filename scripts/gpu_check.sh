#!/usr/bin/env bash
# One-command GPU check (docs/gpu.md): on a machine with CUDA, in at most 9 minutes, writes
# $OUT/gpu_check.md (default gpu_check_out/) with bench_octo, bench_envs, the CUDA RNG
# kill-and-resume check, the largest Octo-small PPO batch under 24 GiB, and preset=gpu
# recipe runs (pixel CNN on the ten MT10 tasks, Octo-small on one).
#
#   bash scripts/gpu_check.sh                  # everything, 9 minutes at most
#   bash scripts/gpu_check.sh --only bench_octo,max_batch
#   bash scripts/gpu_check.sh --dry-run        # the stages, budgets and commands
#
# What it uses, all optional (made here by scripts/prepare_gpu_carry.sh, carried to the box):
#   .whl/   wheels: installed with `pip install --no-index --no-deps --target .site`
#           (the fill-ins, e.g. matplotlib, only when the box lacks them)
#   .debs/  Debian packages of the EGL loader (libglvnd): unpacked into / when libEGL is missing
# Environment: PYTHON (default python3), OUT (report directory), GPU_CHECK_LIMIT (seconds,
# default 540, counted from this script's start).
set -uo pipefail
START=$(date +%s)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT=${GPU_CHECK_LIMIT:-540}

for arg in "$@"; do  # a dry run needs neither CUDA nor the carried packages
    if [ "$arg" = "--dry-run" ]; then exec "$PY" scripts/gpu_check.py "$@"; fi
done

# 1. No CUDA: one line naming what is missing, before anything is installed.
"$PY" scripts/gpu_check.py require-cuda || exit $?

# 2. The carried wheels (skipped when already installed on this machine).
#    On failure it goes on: the report then names what is missing and skips what needs it.
if [ -d .whl ]; then
    "$PY" scripts/gpu_check.py install --wheels .whl --target .site \
        || echo "gpu_check.sh: installing the carried wheels failed (see above); going on without them" >&2
fi

# 3. EGL for MuJoCo: the libglvnd loader from the carried debs when the box has no libEGL;
#    NVIDIA's EGL vendor file when the driver's library is there but its JSON is not.
if [ -d .debs ] && ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 '; then
    if [ "$(id -u)" = "0" ] && command -v dpkg >/dev/null 2>&1; then
        for deb in .debs/*.deb; do dpkg -x "$deb" /; done
        ldconfig
        echo "gpu_check.sh: unpacked $(ls .debs/*.deb | wc -l) debs into / (EGL loader)"
    else
        root=$PWD/.site/debroot
        mkdir -p "$root"
        for deb in .debs/*.deb; do
            if command -v dpkg >/dev/null 2>&1; then dpkg -x "$deb" "$root"; else
                (cd "$root" && ar p "$OLDPWD/$deb" data.tar.xz | tar -xJ); fi
        done
        export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "gpu_check.sh: not root: EGL loader unpacked into $root (LD_LIBRARY_PATH); see docs/gpu.md if EGL fails"
    fi
fi
if ! ls /usr/share/glvnd/egl_vendor.d/*nvidia* >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libEGL_nvidia.so.0'; then
    mkdir -p .site/egl_vendor.d
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}\n' \
        > .site/egl_vendor.d/10_nvidia.json
    export __EGL_VENDOR_LIBRARY_DIRS=$PWD/.site/egl_vendor.d${__EGL_VENDOR_LIBRARY_DIRS:+:$__EGL_VENDOR_LIBRARY_DIRS}
fi

# 4. The check itself; it stops its own stages in time, `timeout` is the backstop.
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYTHONPATH=$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}
LEFT=$(( LIMIT - ($(date +%s) - START) ))
exec timeout --signal=TERM --kill-after=15 "$LEFT" \
    "$PY" scripts/gpu_check.py --started-at "$START" --limit "$LIMIT" "$@"
