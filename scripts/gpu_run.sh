#!/usr/bin/env bash
# Runs GPU tests and benchmarks on the lent GPU machine in one call; every job's output lands in $OUT/<job>.log and
# its JSON (last line starting with '{') in $OUT/<job>.json. Usage: bash scripts/gpu_run.sh JOB [JOB...]
# The shared reference data travels in .gpu_shared/ (bash scripts/stage_gpu_shared.sh [--parity]; git-ignored) and is
# linked as ../shared.
# off-* jobs also need the official code there: bash scripts/stage_official.sh (.gpu_shared/official/, never committed).
# serve-gpu needs Ray: bash scripts/pack_ray.sh (.gpu_ray/ray-site.tar.xz, 38 MB; carry .gpu_shared and .gpu_ray).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
[ -e ../shared ] || ln -sfn "$PWD/.gpu_shared" ../shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# torch.compile's caches (Inductor's graphs and autotuning, Triton's kernels) from an earlier call of this session:
# every call gets a bare machine, and compiling the render path takes ~5 of a call's 10 minutes. The cache comes
# back as $OUT/inductor.tar.xz after every job; before the next call:
#   mkdir -p .gpu_cache && cp FILES_AT/inductor.tar.xz .gpu_cache/    and carry .gpu_cache. The compiled code still checks every source hash, so a changed file just compiles
# again. Budget: a call carries 64 MiB (.gpu_ray 38 MB, .gpu_shared 0.2 MB without --parity: stage_gpu_shared.sh)
# and brings back 8 files (gpu.txt, the cache, a .log and a .json per job: three jobs at most).
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
if [ -f .gpu_cache/inductor.tar.xz ]; then
  if xz -t .gpu_cache/inductor.tar.xz && tar xJf .gpu_cache/inductor.tar.xz -C "$TORCHINDUCTOR_CACHE_DIR"; then
    echo "inductor cache: $(du -sm "$TORCHINDUCTOR_CACHE_DIR" | cut -f1) MB from .gpu_cache"
  else
    echo "inductor cache in .gpu_cache is damaged: compiling from scratch"; rm -rf "${TORCHINDUCTOR_CACHE_DIR:?}"/*
  fi
fi
save_cache() {  # after every job (a call cut off at its limit keeps the last one); written whole, then renamed
  tar -C "$TORCHINDUCTOR_CACHE_DIR" -cf - . | xz -6 -T0 > /tmp/inductor.tar.xz && mv /tmp/inductor.tar.xz "$OUT/"
  echo "inductor cache: $OUT/inductor.tar.xz ($(( $(stat -c %s "$OUT/inductor.tar.xz") / 1048576 )) MiB; 16 come back at most)"
}
py=python3
run() {  # name, timeout_s, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  grep '^{' "$OUT/$name.log" | tail -1 > "$OUT/$name.json"
  echo "=== $name rc=$rc in $(( $(date +%s) - t0 )) s"; tail -c 1500 "$OUT/$name.log"; echo
  save_cache
}
for job in "$@"; do
  case $job in
    eat-test)   run eat-test 480 $py -m pytest -q -s -x -m gpu tests/head/test_eat_models.py tests/core/test_host_copy.py -p no:cacheprovider ;;
    eat-bf16)   run eat-bf16 300 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --long-frames 3000 ;;
    eat-bf16c)  run eat-bf16c 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --long-frames 3000 ;;
    eat-fp16c)  run eat-fp16c 420 $py scripts/bench_eat.py --device cuda --dtype float16 --batch 64 --compile --long-frames 0 ;;
    eat-b64c)   run eat-b64c 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 64 --a2kp-batch 128 --compile --long-frames 3000 ;;
    eat-10min)  run eat-10min 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --iters 3 --long-frames 15000 ;;
    eat-prof)   run eat-prof 200 $py scripts/profile_eat.py --device cuda --dtype bfloat16 --batch 32 ;;
    eat-profc)  run eat-profc 400 $py scripts/profile_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --parts ;;
    modnet-p40) run modnet-p40 300 $py scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile default --freezing --profile 45 ;;
    eat-fp32)   run eat-fp32 200 $py scripts/bench_eat.py --device cuda --dtype float32 --batch 1 --iters 5 --long-frames 0 ;;
    glm-test)   run glm-test 200 $py -m pytest -q -x -m gpu tests/chat/test_chatglm2.py -p no:cacheprovider ;;
    glm-graph)  run glm-graph 240 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 ;;
    glm-comp)   run glm-comp 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --compile ;;
    glm-eager)  run glm-eager 200 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 64 --no-cuda-graph ;;
    gfp-test)   run gfp-test 300 $py -m pytest -q -s -x -m gpu tests/enhance/test_gfpgan.py tests/enhance/test_enhance.py tests/matting/test_modnet.py -p no:cacheprovider ;;
    gfp-bench)  run gfp-bench 300 $py scripts/bench_enhance.py --device cuda --batch 32,64 --what both ;;
    gfp-comp)   run gfp-comp 420 $py scripts/bench_enhance.py --device cuda --batch 64 --what both --compile default --no-e2e ;;
    gfp-prof)   run gfp-prof 300 $py scripts/profile_enhance.py --device cuda --batch 64 --compile ;;
    gfp-c128)   run gfp-c128 300 $py scripts/bench_enhance.py --device cuda --batch 128 --what gfpgan --compile default --no-e2e ;;
    gfp-c96)    run gfp-c96 300 $py scripts/bench_enhance.py --device cuda --batch 96 --what gfpgan --compile default --no-e2e ;;
    gfp-maxa)   run gfp-maxa ${MAXA_S:-560} $py scripts/bench_enhance.py --device cuda --batch 64 --what both --compile max-autotune-no-cudagraphs --no-e2e ;;
    gemv-test)  run gemv-test 300 $py -m pytest -q -s -x -m gpu tests/chat/test_gemv.py -p no:cacheprovider ;;
    gemv-bench) run gemv-bench 200 $py scripts/bench_gemv.py --dtype float16 ;;
    glm-gemv)   run glm-gemv 240 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --gemv ;;
    glm-cgemv)  run glm-cgemv 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --compile --gemv ;;
    glm-int8)   run glm-int8 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --int8 --agreement 10 ;;
    turn-gpu)   run turn-gpu 500 $py scripts/bench_turn_gpu.py --turns 20 --whisper-tokenizer .gpu_shared/whisper/tokenizer.json ;;
    asr-test)   WHISPER_TOKENIZER_JSON=$PWD/.gpu_shared/whisper/tokenizer.json run asr-test 300 $py -m pytest -q -s -x -m gpu tests/asr/test_whisper_hf.py -p no:cacheprovider ;;
    ds-test)    run ds-test 300 $py -m pytest -q -s -x -m gpu tests/head/test_deepspeech_torch.py -p no:cacheprovider ;;
    glm-ftest)  run glm-ftest 400 $py -m pytest -q -s -x -m gpu tests/chat/test_glm_decode.py tests/chat/test_gemv.py tests/chat/test_chatglm2.py -p no:cacheprovider ;;  # test_chatglm2: stage_gpu_shared.sh --parity
    glm-fused)  run glm-fused 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --prompt-tokens 30 --fused --profile 25 ;;
    glm-fused8) run glm-fused8 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --prompt-tokens 30 --fused --int8 --agreement 10 ;;
    glm-host)   run glm-host 240 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --host-ms 1 ;;
    glm-prof)   run glm-prof 400 $py scripts/bench_chatglm2.py --device cuda --dtype float16 --new-tokens 256 --compile --profile 25 ;;
    modnet-c)   run modnet-c 300 $py scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile default --profile 25 ;;
    modnet-frz) run modnet-frz 300 $py scripts/bench_enhance.py --device cuda --batch 64,128 --what modnet --compile default --freezing --profile 25 ;;
    render-gpu) run render-gpu 400 $py scripts/bench_render_gpu.py --clips 3 --clip-s 10 ;;
    render-best) run render-best 420 $py scripts/bench_render_gpu.py --clips 3 --clip-s 10 --compile-keypoints --modes pipelined --enhance-batch 64 --freezing ;;
    serve-gpu)  mkdir -p /tmp/raysite && tar xJf .gpu_ray/ray-site.tar.xz -C /tmp/raysite &&
                PYTHONPATH=/tmp/raysite:${PYTHONPATH:-} TORCH_LOGS=recompiles run serve-gpu 540 $py scripts/bench_serve_gpu.py --sessions 1,4,8,10,11,12 --clip-s 10 --compile-keypoints --streams default,per-thread ;;
    render-dev) run render-dev 420 $py scripts/bench_render_gpu.py --clips 3 --clip-s 10 --compile-keypoints --modes pipelined,device ;;
    render-ckp) run render-ckp ${CKP_S:-420} $py scripts/bench_render_gpu.py --clips 3 --clip-s 10 --compile-keypoints --modes pipelined ;;
    eat-convs)  run eat-convs 400 $py scripts/bench_eat_convs.py --batch 32 ;;
    eat-maxa)   run eat-maxa 560 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --compile-keypoints --autotune --long-frames 0 ;;
    eat-ckp)    run eat-ckp 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --compile-keypoints --long-frames 0 ;;
    modnet-pad1) run modnet-pad1 300 $py scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile default --freezing --modnet-pad 1 ;;
    modnet-pad8) run modnet-pad8 300 $py scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile default --freezing --modnet-pad 8 --profile 25 ;;
    modnet-maxa) run modnet-maxa 400 $py scripts/bench_enhance.py --device cuda --batch 64 --what modnet --compile max-autotune-no-cudagraphs --freezing ;;
    eat-c)      run eat-c 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --long-frames 0 ;;
    eat-frz)    run eat-frz 420 $py scripts/bench_eat.py --device cuda --dtype bfloat16 --batch 32 --compile --freezing --long-frames 0 ;;
    gfp-frz)    run gfp-frz 420 $py scripts/bench_enhance.py --device cuda --batch 64 --what gfpgan --compile default --freezing --no-e2e ;;
    gfp-c)      run gfp-c 420 $py scripts/bench_enhance.py --device cuda --batch 64 --what gfpgan --compile default --no-e2e ;;
    off-eat)    run off-eat 580 $py scripts/bench_official.py --official-eat .gpu_shared/official/eat --device cuda --compile ;;
    off-gfp)    run off-gfp 420 $py scripts/bench_official.py --official-gfpgan .gpu_shared/official/gfpgan --device cuda --compile ;;
    off-modnet) run off-modnet 300 $py scripts/bench_official.py --official-modnet .gpu_shared/official/modnet --device cuda --compile ;;
    *) echo "unknown job $job" ;;
  esac
done
