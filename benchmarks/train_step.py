"""Training-step benchmark of every method, per backend (the same as ``kmedssl bench train``; the code is
``kmedssl.bench.train_step``, which also runs as ``python -m kmedssl.bench.train_step``).

Run:  OMP_NUM_THREADS=2 python benchmarks/train_step.py [--methods spcl,mvmae]
          [--sizes phantom,vit-s16,vit-b16,vit-b16-512] [--backends torch,tensorflow,jax] [--batch-size 16]
          [--steps 5] [--warmup 2] [--jit-compile auto,true] [--precision fp32,bf16] [--plain-torch]
          [--peak-tflops 989] [--threads 2] [--timeout 3600] [--csv runs/bench-train.csv]

``--plain-torch`` times the same step in plain PyTorch (``benchmarks/plain_torch`` beside this file) and prints
the ratio kmedssl / plain; achieved TFLOP/s and MFU (against the GPU's dense peak, or ``--peak-tflops``) are
columns of every row. See docs/performance.md.
"""

from kmedssl.bench.train_step import main

if __name__ == "__main__":
    main()
