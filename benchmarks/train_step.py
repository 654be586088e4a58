"""Training-step benchmark of every method, per backend (the same as ``kmedssl bench train``; the code is
``kmedssl.bench.train_step``, which also runs as ``python -m kmedssl.bench.train_step``).

Run:  OMP_NUM_THREADS=2 python benchmarks/train_step.py [--methods spcl,mvmae] [--sizes phantom,vit-s16]
          [--backends torch,tensorflow,jax] [--batch-size 16] [--steps 5] [--warmup 2]
          [--jit-compile auto,true] [--threads 2] [--csv runs/bench-train.csv]
"""

from kmedssl.bench.train_step import main

if __name__ == "__main__":
    main()
