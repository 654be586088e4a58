"""Training step time and images/second of every method at the phantom size (a figure to track).

Run:  KERAS_BACKEND=torch OMP_NUM_THREADS=2 python benchmarks/train_step.py [--methods spcl,mvmae] [--steps 10]

Each method is built from its phantom recipe, one batch of real phantom views is made by the input
pipeline, and ``model.train_on_batch`` is timed on it after warm-up (data loading excluded). Images per
second count every input image of a sample (2 for a frontal/lateral pair).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402

from kmedssl import recipes  # noqa: E402
from kmedssl.ops.runtime import configure_threads  # noqa: E402
from kmedssl.recipes.benchmark import time_step  # noqa: E402

IMAGES_PER_SAMPLE = {"mvmae": 2, "mvcon": 2}


def time_method(name, steps, warmup):
    """(median step seconds, images/second, batch size) of method ``name`` at its phantom size."""
    recipe = recipes.make_recipe(name, "phantom")
    step, _ = time_step(recipe, seed=0, warmup=warmup, steps=steps)
    return step, recipe.batch_size * IMAGES_PER_SAMPLE.get(name, 1) / step, recipe.batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(recipes.list_methods()))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    configure_threads()
    print(f"backend={keras.backend.backend()} threads={os.environ.get('OMP_NUM_THREADS', 'default')} phantom size")
    print(f"{'method':<12} {'batch':>6} {'step ms':>9} {'images/s':>9}")
    for name in args.methods.split(","):
        step, rate, batch = time_method(name, args.steps, args.warmup)
        print(f"{name:<12} {batch:>6} {step * 1000:>9.1f} {rate:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
