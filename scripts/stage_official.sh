#!/usr/bin/env bash
# Copies the official network code that scripts/bench_official.py times next to ours, from snapshots of the
# authors' repositories (bare git directories, e.g. the `fetch` tool's /work/.mirror/<owner>+<name>/repo), into
# .gpu_shared/official/{eat,gfpgan,modnet}/ at pinned commits. .gpu_shared/ is git-ignored and travels to the GPU
# machine with gpu_run.sh; nothing copied here is ever committed (the code stays the authors').
#   bash scripts/stage_official.sh [MIRROR_ROOT]        # default /work/.mirror
set -euo pipefail
cd "$(dirname "$0")/.."
MIRRORS=${1:-/work/.mirror}
DEST=.gpu_shared/official
git check-ignore -q "$DEST/x" || { echo "$DEST is not git-ignored: add /.gpu_shared/ to .git/info/exclude" >&2
                                   exit 1; }

stage() {  # name, owner+repo, commit, paths...
  local name=$1 repo=$2 commit=$3; shift 3
  rm -rf "${DEST:?}/$name"; mkdir -p "$DEST/$name"
  for path in "$@"; do  # file by file: `git archive` walks the whole tree and trips over absent large blobs
    mkdir -p "$DEST/$name/$(dirname "$path")"
    git --git-dir="$MIRRORS/$repo/repo" show "$commit:$path" > "$DEST/$name/$path"
  done
  echo "$repo $commit" > "$DEST/$name/COMMIT"
  echo "staged $name: $(find "$DEST/$name" -name '*.py' | wc -l) .py files from $repo@${commit:0:8}"
}

# EAT generator: OcclusionAwareSPADEGeneratorEam and what modules/generator.py imports (shared/reference/README.md)
stage eat yuangan+EAT_code 95beccbc9422cf57cf78e0570073831aed289d23 \
  modules/generator.py modules/util.py modules/dense_motion.py modules/audioencoder.py \
  modules/layers/__init__.py modules/layers/conv.py modules/layers/misc.py modules/layers/activation_norm.py \
  modules/layers/nonlinearity.py modules/layers/weight_norm.py modules/layers/residual.py \
  sync_batchnorm/__init__.py sync_batchnorm/batchnorm.py sync_batchnorm/comm.py sync_batchnorm/replicate.py \
  config/deepprompt_eam3d_st_tanh_304_3090_all.yaml
# GFPGAN v1.4: the two clean archs only (gfpgan/archs/__init__.py would import basicsr's registry machinery)
stage gfpgan TencentARC+GFPGAN 7552a7791caad982045a7bbe5634bbf1cd5c8679 \
  gfpgan/archs/gfpganv1_clean_arch.py gfpgan/archs/stylegan2_clean_arch.py
# MODNet: the model and its MobileNetV2 backbone
stage modnet ZHKKKe+MODNet 28165a451e4610c9d77cfdf925a94610bb2810fb \
  src/__init__.py src/models/__init__.py src/models/modnet.py \
  src/models/backbones/__init__.py src/models/backbones/wrapper.py src/models/backbones/mobilenetv2.py
