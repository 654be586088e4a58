"""Benchmarks shipped with the package and run by ``kmedssl bench`` (SPEC §7): ``phantom`` (every method vs
scratch and supervised on the phantom, ``phantom_benchmark``), ``train_step`` (per-method training step
time, one process per measurement) and ``kernels`` (kernel microbenchmarks); the last two also run as
``python -m kmedssl.bench.train_step`` / ``python -m kmedssl.bench.kernels``. Nothing is imported here, so
the Keras backend can still be chosen after ``import kmedssl.bench``."""
