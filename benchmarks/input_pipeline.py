"""Decode + augment throughput of the input pipeline at 224 px, per worker count, against a plain loop.

Run:  KERAS_BACKEND=torch python benchmarks/input_pipeline.py [--images 512] [--workers 0,1,2]

Writes phantom radiographs as 512-px JPEG files, then measures images/second for
- baseline: a plain PIL + NumPy loop (decode, centre crop, resize to 224, then two views, each a random
  crop + resize + flip);
- kmedssl: ``ViewDataset`` (decode + preprocess in ``keras.utils.PyDataset`` workers) feeding
  ``model.predict`` of a model that is either the identity (decode only) or the two-crop augmentation of
  paper 001 written with keras.ops (decode + augment, end to end, as training sees it).
"""

import argparse
import os
import pathlib
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from kmedssl.data.images import preprocess, read_image  # noqa: E402
from kmedssl.data.phantom import ChestCohort  # noqa: E402
from kmedssl.data.pipeline import ViewDataset  # noqa: E402
from kmedssl.views import TwoCropAugmentation  # noqa: E402

SIZE = 224


def write_images(directory, count):
    cohort = ChestCohort(num_subjects=count, seed=0)
    paths = []
    for record in cohort.records[:count]:
        path = pathlib.Path(directory) / f"{record.image_id}.jpg"
        Image.fromarray((cohort.render(record, 512) * 255).astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def baseline(paths, rng):
    """Plain loop: PIL decode -> grey -> centre crop -> resize -> random 0.2-1 crop -> resize -> flip."""
    for path in paths:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        side = min(grey.shape)
        square = Image.fromarray(grey[:side, :side]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        for _ in range(2):
            crop = int(SIZE * np.sqrt(rng.uniform(0.2, 1.0)))
            top, left = rng.integers(0, SIZE - crop + 1, size=2)
            view = np.asarray(square)[top:top + crop, left:left + crop]
            view = np.asarray(Image.fromarray(view).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            if rng.random() < 0.5:
                view = view[:, ::-1]


def kmedssl_pipeline(paths, workers, batch_size, augment):
    load = lambda path: {"image": preprocess(read_image(path), SIZE)[..., None]}  # noqa: E731
    dataset = ViewDataset(paths, load, batch_size=batch_size, shuffle=False, workers=max(workers, 1),
                          use_multiprocessing=workers > 0)
    inputs = {"image": keras.Input((SIZE, SIZE, 1), name="image")}
    outputs = TwoCropAugmentation(SIZE, seed=0)(inputs["image"], training=True) if augment else inputs["image"]
    model = keras.Model(inputs, outputs)
    model.predict(dataset, verbose=0, steps=1)  # warm-up: build and compile
    start = time.perf_counter()
    model.predict(dataset, verbose=0)
    return time.perf_counter() - start, len(dataset) * batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        paths = write_images(directory, args.images)
        start = time.perf_counter()
        baseline(paths, np.random.default_rng(0))
        base_rate = len(paths) / (time.perf_counter() - start)
        print(f"backend={keras.backend.backend()} images={len(paths)} size={SIZE} cpus={os.cpu_count()}")
        print(f"{'pipeline':<44} {'images/s':>9} {'vs baseline':>12}")
        print(f"{'PIL + NumPy loop, 2 views (baseline)':<44} {base_rate:>9.1f} {1.0:>11.2f}x")
        for augment in (False, True):
            for workers in (int(w) for w in args.workers.split(",")):
                seconds, count = kmedssl_pipeline(paths, workers, args.batch_size, augment)
                where = f"{workers} worker processes" if workers else "1 worker thread"
                label = f"kmedssl {'decode + 2 views' if augment else 'decode only'}, {where}"
                print(f"{label:<44} {count / seconds:>9.1f} {count / seconds / base_rate:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
