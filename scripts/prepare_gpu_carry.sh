#!/usr/bin/env bash
# Prepares, on a machine with a package index, what the GPU box lacks (docs/gpu.md), for the
# device tool to carry with the working tree (ignored paths, 64 MiB in all):
#
#   .whl/   Python 3.12 manylinux wheels, pinned (installed on the box by scripts/gpu_check.sh
#           with `pip install --no-index --no-deps --target .site`). The box has torch (2.11,
#           CUDA), JAX and flax, hence numpy, scipy and PyYAML: torch is never carried.
#   .debs/  Debian packages of the EGL loader (libglvnd), for MuJoCo's EGL rendering.
#
# MetaWorld's wheel is 37 MB, 33 MB of it textures; the MT10 models use a few of them. By
# default the wheel is rebuilt without the images no MT10 model references, and checked
# by building all ten MT10 tasks from it; if that fails the full wheel is kept.
#
#   bash scripts/prepare_gpu_carry.sh             # fetch, slim, check, print the sizes
#   bash scripts/prepare_gpu_carry.sh --dry-run   # print what it would fetch; change nothing
#   options: --no-debs  --full-metaworld  --with-video (adds av, ~36 MB: over 64 MiB with the rest)
#            --python-version 3.12
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0 DEBS=1 SLIM=1 VIDEO=0 PYVER=3.12
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --no-debs) DEBS=0 ;;
        --full-metaworld) SLIM=0 ;;
        --with-video) VIDEO=1 ;;
        --python-version) PYVER=$2; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "prepare_gpu_carry.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# The versions this project is tested with (the local .venv); torch is not carried.
CORE=(torchrl==0.14.1 tensordict==0.14.3 hoptorch==0.1.4 pyvers==0.2.3 orjson==3.13.0
      metaworld==3.1.1 mujoco==3.3.0 gymnasium==1.4.0 farama-notifications==0.0.6
      hydra-core==1.3.8 omegaconf==2.3.1 PyOpenGL==3.1.10 glfw==2.11.0)
SDIST=(antlr4-python3-runtime==4.9.3)  # hydra's parser: published as an sdist only
# Installed on the box only where it lacks them (gpu_check.py install): metaworld imports
# imageio; torchrl/tensordict need packaging and cloudpickle; the recipe tqdm and matplotlib.
FILL=(imageio==2.38.2 packaging==26.4 cloudpickle==3.1.3 tqdm==4.70.1 matplotlib==3.11.2
      contourpy==1.3.3 cycler==0.12.1 fonttools==4.69.1 kiwisolver==1.5.1 pyparsing==3.3.3
      pillow==13.0.0 python-dateutil==4.0.0 six==1.17.0)
[ "$VIDEO" = 1 ] && FILL+=(av==18.1.0)
DEB_NAMES=(libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
PLATFORM=(--only-binary=:all: --python-version "$PYVER" --platform manylinux_2_28_x86_64
          --platform manylinux2014_x86_64)

if [ "$DRY" = 1 ]; then
    echo "prepare_gpu_carry.sh --dry-run: would fetch (nothing changed)"
    echo "  with: pip download --no-deps ${PLATFORM[*]} -d .whl SPEC"
    for spec in "${CORE[@]}" "${FILL[@]}"; do echo "  wheel  $spec"; done
    for spec in "${SDIST[@]}"; do echo "  build  $spec  (pip wheel --no-deps -w .whl $spec)"; done
    if [ "$SLIM" = 1 ]; then
        echo "  slim   metaworld==3.1.1: drop the images no MT10 model references, check the ten MT10 tasks"
    fi
    if [ "$DEBS" = 1 ]; then
        for d in "${DEB_NAMES[@]}"; do echo "  deb    $d  (apt-get download $d, into .debs)"; done
    fi
    echo "  into .whl/ and .debs/ (ignored by git); carry: .whl .debs (64 MiB in all)"
    exit 0
fi

# Local versions that differ from the pins (the pins may be out of date).
"$PY" - "${CORE[@]}" <<'EOF' || true
import importlib.metadata as md, sys
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        continue
    if have.split("+")[0] != want:
        print(f"prepare_gpu_carry.sh: note: this machine has {name} {have}, the carry pins {want}")
EOF

mkdir -p .whl
# our previous downloads (any version) go; other files in .whl are left alone
for spec in "${CORE[@]}" "${FILL[@]}" "${SDIST[@]}" av==0; do
    name=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_')
    find .whl -maxdepth 1 -iname "${name}-*.whl" -delete
done
PIP=("$PY" -m pip)
"${PIP[@]}" download -q --no-deps "${PLATFORM[@]}" -d .whl "${CORE[@]}" "${FILL[@]}"
"${PIP[@]}" wheel -q --no-deps -w .whl "${SDIST[@]}"

if [ "$SLIM" = 1 ]; then
    "$PY" - .whl/metaworld-3.1.1-py3-none-any.whl "$PWD" <<'EOF'
"""Rebuild the metaworld wheel without the images no MT10 model references; check it."""
import json, os, re, shutil, subprocess, sys, tempfile, zipfile
from pathlib import Path

wheel, root = Path(sys.argv[1]), Path(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix="mw_slim_"))
try:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{root}", "MUJOCO_GL": "disable"}
    # each MT10 model's file and a hash of its compiled textures (the slimmed copy must give the same)
    ask = ("import hashlib, json, metaworld; from metaworld.env_dict import ALL_V3_ENVIRONMENTS as E; "
           "from torchrl_chunk.envs import MT10_TASKS; envs = [E[t]() for t in MT10_TASKS]; "
           "print(json.dumps([metaworld.__file__, [e.model_name for e in envs], "
           "[hashlib.sha256(e.model.tex_data.tobytes()).hexdigest() for e in envs]]))")
    out = subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True, text=True, check=True)
    where, models, textures = json.loads(out.stdout.strip().splitlines()[-1])
    assert where.startswith(str(tmp)), where
    assets = tmp / "metaworld" / "assets"
    by_name = {}
    for p in assets.rglob("*.xml"):
        by_name.setdefault(p.name, []).append(p)
    todo, seen, used = [Path(m) for m in models], set(), set()
    while todo:  # every file="..." (and fileup/filedown/... of cube textures) in the include closure
        xml = todo.pop()
        if xml in seen:
            continue
        seen.add(xml)
        for ref in re.findall(r'\bfile\w*="([^"]+)"', xml.read_text()):
            name = Path(ref).name
            if name.endswith(".xml"):
                todo += by_name.get(name, [])
            else:
                used.add(name)
    images = [p for p in assets.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    drop = [p for p in images if p.name not in used]
    for p in drop:
        p.unlink()
    check = ("import metaworld; from torchrl_chunk.envs import MT10_TASKS; "
             "from torchrl_chunk.envs.metaworld import TaskSim\n"
             "for t in MT10_TASKS:\n    s = TaskSim(t, max_steps=200, image_size=None); s.seed(1); s.reset_fresh(); s.close()\n"
             "print('ok', metaworld.__file__)")
    ok = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    again = subprocess.run([sys.executable, "-c", ask], env=env, capture_output=True, text=True)
    same = again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])[2] == textures
    if ok.returncode != 0 or str(tmp) not in ok.stdout or not same:
        print("prepare_gpu_carry.sh: the slimmed metaworld failed to build the MT10 tasks; keeping the full "
              "wheel:\n" + ok.stderr[-2000:], file=sys.stderr)
        sys.exit(0)
    dropped = {str(p.relative_to(tmp)) for p in drop}
    record = next(tmp.glob("metaworld-*.dist-info/RECORD"))
    record.write_text("".join(line for line in record.read_text().splitlines(True)
                              if line.split(",")[0] not in dropped))
    before = wheel.stat().st_size
    new = wheel.with_suffix(".slim")
    with zipfile.ZipFile(new, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(tmp).as_posix())
    os.replace(new, wheel)
    print(f"metaworld slimmed: {len(drop)} of {len(images)} images dropped (kept "
          f"{', '.join(sorted(used & {p.name for p in images}))}); {before / 2**20:.1f} -> "
          f"{wheel.stat().st_size / 2**20:.1f} MiB; the ten MT10 tasks build from it, with the same textures")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
EOF
fi

if [ "$DEBS" = 1 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        mkdir -p .debs
        rm -f .debs/*.deb
        (apt-get update -qq >/dev/null 2>&1 || true)
        (cd .debs && apt-get download "${DEB_NAMES[@]}" >/dev/null) \
            || echo "prepare_gpu_carry.sh: apt-get download failed: no .debs (EGL only if the box has libEGL)" >&2
    else
        echo "prepare_gpu_carry.sh: no apt-get here: no .debs (EGL only if the box has libEGL)" >&2
    fi
fi

echo "carry (device tool: carry=[\".whl\", \".debs\"]):"
ls -S -l .whl/*.whl .debs/*.deb 2>/dev/null | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $9}'
total=$(cat .whl/*.whl .debs/*.deb 2>/dev/null | wc -c)
awk -v t="$total" 'BEGIN { printf "total %.1f MiB of the 64 MiB a device call carries%s\n", t / 1048576,
    (t > 64 * 1048576 ? ": TOO BIG, see docs/gpu.md (split the carry over two calls)" : "") }'
