#!/usr/bin/env bash
# Copies the CRDs (crds/*.yaml, the single source) into the chart's crds/ folder and
# removes any the source no longer has. tests/chart/test_chart_static.py
# (test_chart_crds_are_byte_identical_copies_of_crds) checks that the two folders are
# byte-identical; run this after editing crds/.
#
# Usage: bash charts/sync-crds.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds"
dst="$root/charts/kubemaas/crds"

shopt -s nullglob
sources=("$src"/*.yaml)
if ((${#sources[@]} == 0)); then
  echo "sync-crds.sh: error: no CRD YAML in $src" >&2
  exit 1
fi
mkdir -p "$dst"
for stale in "$dst"/*; do
  [[ -e "$src/$(basename "$stale")" ]] || { rm -f "$stale"; echo "  removed $(basename "$stale")"; }
done
for f in "${sources[@]}"; do
  cp "$f" "$dst/$(basename "$f")"
  echo "  copied crds/$(basename "$f")"
done
echo "sync-crds.sh: ${#sources[@]} CRD file(s) in charts/kubemaas/crds"
