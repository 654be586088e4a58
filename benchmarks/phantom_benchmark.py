"""The phantom benchmark: every SSL method vs scratch and the supervised baseline, same CPU budget each.

Run:  KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/phantom_benchmark.py [--budget-minutes 2]
      [--methods ace,spcl] [--labels 0.1,1.0] [--protocols linear,finetune] [--output DIR] [--quick]

The same as ``kmedssl bench phantom`` (see ``kmedssl.bench.phantom`` for what is measured).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kmedssl.cli.bench import phantom  # noqa: E402

if __name__ == "__main__":
    phantom(prog_name="phantom_benchmark.py")
