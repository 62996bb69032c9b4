#!/usr/bin/env bash
# The prepared GPU check of one device session (one call): versions; the training, ADA and autocast tests on CUDA
# (bf16 autocast, channels_last, fused Adam, R1 double backward); the training-iteration benchmark per D precision
# (each variant in its own process and time limit; JSON lines and kernel profiles under $OUT); generation throughput.
# Usage on a GPU machine from the repo root:  OUT=<folder> bash benchmarks/gpu_check.sh
#   VARIANTS="bf16 bf16:reduce-overhead" TEST_S=90 COMPILE_TEST_S=120 BENCH_S=120 COMPILE_BENCH_S=240 SAMPLE=1
#   to change what runs (the defaults' time limits add up to 570 s, inside one 600 s device call). A variant is a D
#   precision, optionally :<torch.compile mode> and @nchw (generator kept NCHW: CUDA's group_norm copies
#   channels_last inputs); compiled variants get COMPILE_BENCH_S, as their warm-up compiles.
#   A second call, if device time is left: TEST_S=0 COMPILE_TEST_S=0 VARIANTS="bf16@nchw" OUT=<folder> bash ...
#   or the per-GPU rate at a larger pass (bf16 D peaked at 20.5 GiB at 64, so 128 should fit): TEST_S=0 COMPILE_TEST_S=0 BATCH=128 ...
#   COMPILE_TEST_S runs the compiled-vs-eager training test on CUDA (CUDA graphs); 0 skips it.
#   BATCH=64 BATCH_GPU= ROUND_BATCH= set the benchmark's per-GPU batch, virtual GPU size and samples per pass (e.g.
#   BATCH_GPU=32 for the registry's paper split: 2 rounds; add ROUND_BATCH=64 for one pass of 2 virtual GPUs).
# Missing pure-Python dependencies may be given as wheels in .whl/ (installed to /tmp/site, never system-wide).
set -u
OUT=${OUT:-gpu-check}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
python3 -c "import torch, timm, torchvision; print('torch', torch.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__)"
timeout ${TEST_S:-90} python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_ema.py tests/test_ada.py \
  tests/test_edm_networks.py -k "not reference and not equals_edm" >"$OUT/tests.txt" 2>&1; tail -4 "$OUT/tests.txt"
if [ "${COMPILE_TEST_S:-120}" != 0 ]; then
  timeout ${COMPILE_TEST_S:-120} python3 -m pytest -q -p no:cacheprovider -m slow tests/test_training.py -k compiled \
    >"$OUT/tests-compile.txt" 2>&1; tail -4 "$OUT/tests-compile.txt"
fi
for v in ${VARIANTS:-bf16 bf16:reduce-overhead}; do
  case "$v" in *:*) limit=${COMPILE_BENCH_S:-240} ;; *) limit=${BENCH_S:-120} ;; esac
  timeout "$limit" python3 benchmarks/bench_train.py --batch ${BATCH:-64} ${BATCH_GPU:+--batch-gpu $BATCH_GPU} \
    ${ROUND_BATCH:+--round-batch $ROUND_BATCH} --variants "$v" --profile "$OUT" \
    --json "$OUT/bench_train.jsonl" 2>&1 | grep -v -i -e warn -e "writing data"
done
[ -n "${SAMPLE:-}" ] && timeout 60 python3 benchmarks/bench_sampling.py --arch cifar10 --batch 500 2>&1 | tail -4
true
