"""Kernel microbenchmarks (the same as ``kmedssl bench kernels``; the code is ``kmedssl.bench.kernels``, which
also runs as ``python -m kmedssl.bench.kernels``; ``--help`` lists the options).

Run:  KERAS_BACKEND=torch python benchmarks/kernels/bench_kernels.py [--op tsp,supcon] [--sizes 1024,4096]
          [--dims 128] [--interpret] [--cpu-memory] [--csv FILE]
"""

from kmedssl.bench.kernels import main

if __name__ == "__main__":
    main()
