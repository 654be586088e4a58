"""Throughput of the input pipeline and of the training step (docs/runs.md, "Throughput"), on tiny Keras models
that compile in a second: a step-bound run (a step that sleeps, fast input), an input-bound run (input that
sleeps, a fast step) with 1 and 2 workers, and a resume. Every method's real run is checked for the file in
``tests/training/test_resume.py``.
"""

import math
import shutil
import time

import keras
import numpy as np
import pytest

from kmedssl.data.pipeline import ViewDataset
from kmedssl.training import callbacks, checkpoints, loop, runs

SAMPLES, BATCH, EPOCHS = 24, 4, 2
STEPS = SAMPLES // BATCH  # 6 batches per epoch
STEP_SLEEP, SAMPLE_SLEEP = 0.04, 0.01  # seconds: a slow step; a slow sample (40 ms per batch)


class Sleep(keras.layers.Layer):
    """Identity that sleeps ``seconds`` per call (each step, with ``run_eagerly``)."""

    def __init__(self, seconds, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds

    def call(self, x):
        time.sleep(self.seconds)
        return x


def tiny_model(step_sleep=0.0):
    inputs = keras.Input((4,), name="x")
    hidden = Sleep(step_sleep)(inputs) if step_sleep else inputs
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(1))(hidden)
    model = keras.Model({"x": inputs}, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", run_eagerly=bool(step_sleep))
    return model


def tiny_data(sample_sleep=0.0, workers=1):
    def load(index):
        if sample_sleep:
            time.sleep(sample_sleep)
        x = np.random.default_rng(index).normal(size=4).astype("float32")
        return {"x": x, "y": np.float32([x.sum()])}

    return ViewDataset(list(range(SAMPLES)), load, batch_size=BATCH, target="y", seed=0, workers=workers)


def assert_consistent(row):
    """The figures of one record or row: positive, and each rate its count over its seconds."""
    for key in ("images", "input_images", "input_seconds", "input_images_per_s_per_worker", "input_images_per_s",
                "step_seconds", "step_images_per_s", "wall_seconds"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row["images"] == row["batches"] * BATCH
    assert row["step_images_per_s"] * row["step_seconds"] == pytest.approx(row["images"], rel=1e-4)
    assert row["input_images_per_s_per_worker"] * row["input_seconds"] == pytest.approx(row["input_images"], rel=1e-4)
    assert row["input_images_per_s"] == pytest.approx(row["input_images_per_s_per_worker"] * row["input_workers"],
                                                      rel=1e-4)
    assert 0 <= row["input_wait_fraction"] <= 1
    assert row["input_wait_fraction"] == pytest.approx(row["input_wait_seconds"] / row["wall_seconds"], rel=1e-4)
    assert row["step_seconds"] + row["input_wait_seconds"] <= row["wall_seconds"] * (1 + 1e-4)


@pytest.fixture(scope="module")
def step_bound(tmp_path_factory):
    """2 epochs x 6 steps of a model whose step sleeps 40 ms, on fast input; a checkpoint every 3 steps."""
    run_dir = tmp_path_factory.mktemp("step_bound")
    meter = callbacks.ThroughputMeter()
    loop.train(tiny_model(STEP_SLEEP), tiny_data(), run_dir, EPOCHS, STEPS, checkpoint_every=3, keep_checkpoints=0,
               verbose=0, meter=meter)
    return run_dir, meter


def test_a_run_writes_one_consistent_row_per_epoch(step_bound):
    run_dir, meter = step_bound
    header = (run_dir / runs.THROUGHPUT_FILE).read_text().splitlines()[0]
    assert header == ",".join(runs.THROUGHPUT_COLUMNS)
    rows = runs.read_throughput(run_dir)
    positions = [(row["epoch"], row["process"], row["step"], row["batches"]) for row in rows]
    assert positions == [(1, 0, 6, 6), (2, 0, 12, 6)]
    for row in rows:
        assert_consistent(row)
        assert row["input_workers"] == 1
        assert row["step_seconds"] >= STEPS * STEP_SLEEP  # the sleeping step is step time, not waiting
    totals = meter.totals()
    assert_consistent(totals)
    assert totals["images"] == EPOCHS * STEPS * BATCH
    assert totals["step_images_per_s"] == pytest.approx(callbacks.throughput_totals(rows)["step_images_per_s"],
                                                        rel=1e-4)
    assert totals["input_wait_fraction"] < 0.25 < 0.75 < totals["step_seconds"] / totals["wall_seconds"], totals
    for name in (runs.LOG_FILE, runs.LOG_JSON_FILE):
        assert "input" not in (run_dir / name).read_text()  # the training log stays free of timings


@pytest.mark.parametrize("workers", [1, 2])
def test_a_slow_input_is_reported_as_input_bound(workers, tmp_path, capsys):
    meter = callbacks.ThroughputMeter()
    loop.train(tiny_model(), tiny_data(SAMPLE_SLEEP, workers), tmp_path, EPOCHS, STEPS, verbose=2, meter=meter)
    rows = runs.read_throughput(tmp_path)
    for row in rows:
        assert_consistent(row)
        assert row["input_workers"] == workers
        assert row["input_images_per_s_per_worker"] <= 1 / SAMPLE_SLEEP  # each image sleeps 10 ms
    assert rows[-1]["input_wait_fraction"] > 0.5, rows[-1]  # epoch 1 also holds compilation (JAX, TensorFlow)
    assert callbacks.input_bound(callbacks.throughput_totals(meter.own[1:]))  # the run's verdict skips epoch 1
    printed = capsys.readouterr().out
    assert printed.count(f"img/s/worker ×{workers} (") == EPOCHS + 1  # each epoch, and the run
    assert "input-bound" in printed


def test_a_resumed_run_keeps_the_rows_of_finished_epochs(step_bound, tmp_path):
    run_dir = shutil.copytree(step_bound[0], tmp_path / "run")
    for step, path in checkpoints.list_checkpoints(run_dir):
        if step > 9:
            path.unlink()  # as a kill after the checkpoint at step 9 (batch 3 of epoch 2) leaves it
    before = runs.read_throughput(run_dir)
    start = checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run_dir))
    loop.train(tiny_model(STEP_SLEEP), tiny_data(), run_dir, EPOCHS, STEPS, start=start, checkpoint_every=3,
               keep_checkpoints=0, verbose=0)
    rows = runs.read_throughput(run_dir)
    assert rows[0] == before[0]  # epoch 1, as measured before the kill
    assert [(row["epoch"], row["step"], row["batches"]) for row in rows] == [(1, 6, 6), (2, 12, 3)]
    assert_consistent(rows[1])


def test_intervals():
    assert callbacks._union([(3, 4), (0, 1), (0.5, 2)]) == [(0, 2), (3, 4)]
    assert callbacks._overlap([(0, 2), (3, 4)], [(1, 3.5), (3.8, 5)]) == pytest.approx(1 + 0.5 + 0.2)
