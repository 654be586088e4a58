#!/usr/bin/env bash
# One-shot GPU check of the Triton kernels and the torch training step (docs/kernels.md, "Measured on a GPU").
#
# Runs on a CUDA machine whose python3 already has torch and triton (keras and the other pure-Python
# dependencies may come as wheels in .whl/, installed into /tmp/site). Every step has its own time cap
# and its own log, so a slow step never loses the others' results.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]        # default: $OUT, else runs/gpu-check
#
# Steps: versions; the kernel tests compiled on the GPU (TRITON_INTERPRET=0, bf16 included); the
# dispatch tests; the kernel microbenchmarks (bf16, the GPU sweep trimmed to fit a few minutes); the
# training step of S-PCL, SimCLR and MVMAE at ViT-S/16 on torch (the Triton path in auto mode).
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
    tail -n 25 "$out/$name.log"
}

# Caps sum to 525 s (plus ~10 s of wheel install), inside one 590 s device call.
step versions 40 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
    python3 -c "import sys, torch, triton, keras; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, keras.__version__, torch.cuda.get_device_name())"'
# pytest-xdist (in the CUDA image) compiles the kernels of several tests at once; plain pytest without it.
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 4)
step kernel_tests 130 python3 -m pytest -q -p no:cacheprovider "${xdist[@]}" -rfE --durations=8 \
    tests/kernels tests/ops/test_kernel_dispatch.py
step bench_kernels 180 python3 benchmarks/kernels/bench_kernels.py --repeats 5 --warmup 2 \
    --op tsp,supcon --sizes 4096,16384,65536 --dims 128,512 --csv "$out/bench_kernels_gpu.csv"
step bench_kernels_ace 45 python3 benchmarks/kernels/bench_kernels.py --repeats 5 --warmup 2 \
    --op ace,partition --sizes 64,256 --dims 768 --csv "$out/bench_kernels_gpu_ace.csv"
step bench_train 130 python3 benchmarks/train_step.py --methods spcl,simclr,mvmae --sizes vit-s16 --backends torch \
    --batch-size 64 --steps 5 --warmup 2 --timeout 60 --csv "$out/bench_train_gpu.csv"
