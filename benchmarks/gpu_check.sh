#!/usr/bin/env bash
# One-shot GPU check: the Triton kernels compiled on the GPU, the kernel benchmark, and the ViT-B/16 training-step
# table (fp32 vs bf16, eager vs compiled, kmedssl vs plain PyTorch, with achieved TFLOP/s and MFU).
# docs/kernels.md ("Measured on a GPU") and docs/performance.md ("ViT-B/16 on a GPU: MFU and plain PyTorch").
#
# Runs on a CUDA machine whose python3 already has torch and triton (keras and the other pure-Python
# dependencies may come as wheels in .whl/, installed into /tmp/site), from the root of a source checkout
# (the plain-PyTorch baseline is benchmarks/plain_torch). Every step has its own time cap and its own log, and
# the benchmarks write their CSVs as they go, so a slow step never loses the others' results (nor its own
# finished rows).
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]        # default: $OUT, else runs/gpu-check
#
# Steps (caps sum to 565 s, plus ~10 s of wheel install: one 10-minute device call):
#   versions            GPU, driver, Python, torch, CUDA, Triton, Keras
#   kernel_tests        tests/kernels + tests/ops/test_kernel_dispatch.py compiled (TRITON_INTERPRET=0), bf16 included
#   bench_kernels       tsp and supcon in bf16 at 2N = 8192, 32768 and D = 128, 512, 768 (naive/blocked/triton)
#   bench_kernels_ace   ace at B = 64, 256, C = 768 (and the token partition), bf16
#   train_eager         ViT-B/16 at 224 px, batch 128: spcl, mvmae, simclr x bf16, fp32, eager, kmedssl + plain PyTorch
#   train_compiled      the same with jit_compile=true (torch.compile on both sides), bf16 first; each row capped
#                       at 85 s, so rows that compile longer (or recompile) are reported as timed out
set -u
out="${1:-${OUT:-runs/gpu-check}}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:$PWD/kernels:${PYTHONPATH:-}"
export KERAS_BACKEND=torch TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

step() {  # step NAME SECONDS COMMAND...: run with a time cap, log to $out/NAME.log, report the exit status
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (cap ${seconds}s)"
    local start=$SECONDS
    timeout "$seconds" "$@" >"$out/$name.log" 2>&1
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - start))s"
    tail -n 30 "$out/$name.log"
}

step versions 15 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python3 -c "import sys, torch, triton, keras; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, keras.__version__, torch.cuda.get_device_name())"'
# pytest-xdist (in the CUDA image) compiles the kernels of several tests at once; plain pytest without it.
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 4)
step kernel_tests 110 python3 -m pytest -q -p no:cacheprovider "${xdist[@]}" -rfE --durations=8 \
    tests/kernels tests/ops/test_kernel_dispatch.py
step bench_kernels 80 python3 benchmarks/kernels/bench_kernels.py --dtype bfloat16 --repeats 5 --warmup 2 \
    --op tsp,supcon --sizes 8192,32768 --dims 128,512,768 --paths naive,triton --csv "$out/bench_kernels_gpu.csv"
step bench_kernels_ace 25 python3 benchmarks/kernels/bench_kernels.py --dtype bfloat16 --repeats 5 --warmup 2 \
    --op ace,partition --sizes 64,256 --dims 768 --csv "$out/bench_kernels_gpu_ace.csv"
# Training steps: one worker process per row (kmedssl, then plain PyTorch, per method); --timeout caps each row.
train=(python3 benchmarks/train_step.py --sizes vit-b16 --methods spcl,mvmae,simclr --backends torch
       --batch-size 128 --plain-torch)
step train_eager 160 "${train[@]}" --jit-compile auto --precision bf16,fp32 --steps 5 --warmup 2 --timeout 45 \
    --csv "$out/bench_train_eager.csv"
step train_compiled 175 "${train[@]}" --jit-compile true --precision bf16,fp32 --steps 5 --warmup 3 --timeout 85 \
    --csv "$out/bench_train_compiled.csv"
