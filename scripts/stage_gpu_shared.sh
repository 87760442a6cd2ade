#!/usr/bin/env bash
# Copies what the GPU jobs read of ../shared into .gpu_shared/ (git-ignored; gpu_run.sh links it as ../shared there).
# A device call carries 64 MiB in all: the benchmarks need only the seeding tools and the state_dict manifests
# (0.2 MB); the parity tests (eat-test, gfp-test, glm-test) need the parity data too (--parity, +20 MB), which
# leaves too little room beside Ray (.gpu_ray, 38 MB) and a compile cache (.gpu_cache).
# Usage: bash scripts/stage_gpu_shared.sh [--parity]
set -euo pipefail
cd "$(dirname "$0")/.."
src=../shared
dest=.gpu_shared
rm -rf "$dest/tools" "$dest/reference" && mkdir -p "$dest/reference"  # official/ (stage_official.sh) stays
cp -r "$src/tools" "$dest/"
cp "$src"/reference/*.tsv "$dest/reference/"
if [ "${1:-}" = "--parity" ]; then
  cp "$src"/reference/*.npz "$src"/reference/*.model "$src"/reference/*.json "$dest/reference/"
fi
echo "$dest: $(du -sm "$dest" | cut -f1) MB"
