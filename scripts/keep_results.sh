#!/usr/bin/env bash
# Copy what a finished (or partly finished) run directory's numbers need into the repository:
# config.yaml, results.md/.csv, stats.md, wall_time.txt and every jobs/<algo>/<task>/seed_<k>/result.json.
# No checkpoints, buffers or logs. python -m torchrl_chunk.experiment.merge_results reads the copy like the
# run directory, and `resume=` of a copy put back under runs/ runs only the jobs that have no result.json yet.
#   bash scripts/keep_results.sh runs/mt10/ours_s1 docs/runs/ours_s1
set -euo pipefail
src=${1:?usage: keep_results.sh RUN_DIR DEST}
dst=${2:?usage: keep_results.sh RUN_DIR DEST}
[ -f "$src/config.yaml" ] || { echo "error: $src has no config.yaml; pass a run directory of recipes/mt10.py" >&2; exit 1; }
mkdir -p "$dst"
(cd "$src" && find . \( -name result.json -o -name config.yaml -o -name 'results.md' -o -name 'results.csv' \
    -o -name stats.md -o -name wall_time.txt \) -not -path '*/checkpoint*' -print0 | tar --null -cf - -T -) | tar -xf - -C "$dst"
echo "$(find "$dst" -name result.json | wc -l) result.json files in $dst"
