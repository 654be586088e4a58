"""Training callbacks used by every run: the non-finite loss guard, and the throughput meter of the input
pipeline and the training step."""

import math
import threading
import time

import keras
import numpy as np

ON_NONFINITE = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop at, or skip, training steps whose loss is NaN or infinite.

    Keras applies a step's update before callbacks see its loss, so:

    - ``"stop"`` (default) raises ``NonFiniteLossError`` naming the epoch, the batch, the run's step and the
      non-finite loss terms. Place this guard before the ``Checkpointer`` so that the bad state is never
      checkpointed: the last good checkpoint stays the newest.
    - ``"skip"`` copies the whole training state (model variables including seed generators, optimizer
      and metric variables) on the device before every step, and after a non-finite step assigns the copy
      back: the step leaves no trace but its count, and training goes on with the next batch (whose masks
      or augmentations then reuse the skipped step's random draws). Costs one device copy of the state per
      step, and on JAX a state sync per step.

    Under "skip", ``logs["skipped_steps"]`` holds the number of steps skipped so far in the run (so the
    training log has a ``skipped_steps`` column).

    Args:
        on_nonfinite: ``"stop"`` or ``"skip"``.
        start: ``(epoch, batch)`` where a resumed run starts (Keras numbers that epoch's batches from 0).
        skipped: steps skipped before ``start``.
    """

    def __init__(self, on_nonfinite="stop", start=(0, 0), skipped=0):
        super().__init__()
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"Expected on_nonfinite in {ON_NONFINITE}. Received: on_nonfinite={on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.start = tuple(start)
        self.skipped = int(skipped)
        self.epoch = self.start[0]
        self.offset = 0
        self.snapshot = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.offset = self.start[1] if epoch == self.start[0] else 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.on_nonfinite == "skip":
            self.snapshot = [keras.ops.copy(keras.ops.stop_gradient(v.value)) for v in self.state()]

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        bad = nonfinite_terms(logs)
        if bad and self.on_nonfinite == "stop":
            terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            raise NonFiniteLossError(
                f"Non-finite loss at epoch {self.epoch + 1}, step {self.offset + batch + 1} of the epoch: {terms}. "
                f"Training stopped; the last good checkpoint is kept. Try a lower learning rate or gradient "
                f"clipping (--set gradient_clip=1.0), or skip such steps (--set on_nonfinite=skip)."
            )
        if self.on_nonfinite == "skip":
            if bad:
                for variable, value in zip(self.state(), self.snapshot, strict=True):
                    variable.assign(value)
                self.skipped += 1
                logs.update(python_logs(self.model.get_metrics_result()))  # the restored running means
            logs["skipped_steps"] = self.skipped

    def on_epoch_end(self, epoch, logs=None):
        if self.on_nonfinite == "skip" and logs is not None:
            logs["skipped_steps"] = self.skipped

    def state(self):
        model = self.model
        return [*model.variables, *model.optimizer.variables, *model.metrics_variables]


def python_logs(values):
    """``values`` with every tensor as a Python number (a NumPy array if not a scalar), as Keras passes logs to
    callbacks: its progress bar averages them with NumPy, which a torch tensor breaks."""
    python = {}
    for key, value in values.items():
        array = np.asarray(keras.ops.convert_to_numpy(value))
        python[key] = array.item() if array.size == 1 else array
    return python


def nonfinite_terms(logs):
    """``{key: value}`` of the logged losses (keys ending in "loss") that are NaN or infinite."""
    bad = {}
    for key, value in logs.items():
        if key.endswith("loss"):
            value = float(np.asarray(keras.ops.convert_to_numpy(value)))
            if not math.isfinite(value):
                bad[key] = value
    return bad


# === Throughput: the input pipeline and the training step ===

INPUT_BOUND = 0.1  # a run whose step waited this fraction of its wall time or more for batches is input-bound


class ThroughputMeter:
    """Times, per epoch, the input pipeline and the training step of this process (``time.perf_counter``
    only: no device work, no change to the batches or the training state).

    ``wrap(batches)`` times every ``batches[i]`` where it runs (the training thread, a worker thread of Keras's
    ``workers`` pool, or TensorFlow's generator thread); ``first`` and ``last`` are callbacks placed first
    and last in the callback list, so that a step is timed from the last ``on_train_batch_begin`` to the
    first ``on_train_batch_end``, once its loss is on the host (JAX dispatches asynchronously). Between
    ``reset()`` and ``record()`` one epoch (one ``fit``) is measured:

    - input: images made per second of batch-making time, per worker (all workers' images over all their
      busy seconds), and times ``input_workers`` for the process (what the pool delivers when all are busy);
    - waited: the time the training thread spent getting its next batch. Keras's torch loop takes the batch
      between steps: from the end of a step's callbacks to the next step's start (making the batch itself
      with ``workers=1``, waiting for a worker otherwise). JAX and TensorFlow take it inside the step: the part
      of the step spent making a batch on the training thread, or waiting for another thread to finish
      the step's batch;
    - step: each step's time minus the waiting inside it;
    - wall: from the epoch's start to the end of its last step's callbacks (epoch-end callbacks excluded).

    Images are counted as the step benchmark counts them: every input image, ``images_per_sample`` per row
    (2 for a frontal/lateral pair). With ``use_multiprocessing`` the workers are other processes, whose
    timings do not come back: the input figures are then NaN (and the waiting too on JAX and TensorFlow).
    """

    def __init__(self, images_per_sample=1):
        self.images_per_sample = int(images_per_sample)
        self.fetch_in_step = keras.backend.backend() != "torch"  # where Keras's fit takes the next batch
        self.lock = threading.Lock()
        self.first = _StepEnd(self)
        self.last = _StepClock(self)
        self.rows = []  # every process's rows of the run (throughput.csv), set by the training loop
        self.own = []  # this process's records of the run
        self.reset()

    def reset(self):
        """Forget the last epoch's timings (call before each ``fit``)."""
        self.productions = []  # (batch index, start, done, thread, images) per batch made
        self.begins, self.ends, self.idles = [], [], []  # per step: begin, end, its callbacks done
        self.started, self.thread, self.workers, self.metered = None, None, 1, False

    def wrap(self, batches):
        """``batches`` (a ``keras.utils.PyDataset``) with each batch timed; unchanged with multiprocessing."""
        self.workers = max(int(batches.workers), 1)
        self.metered = not batches.use_multiprocessing
        return MeteredBatches(batches, self) if self.metered else batches

    def produced(self, index, start, done, batch):
        inputs = batch[0] if isinstance(batch, tuple) else batch
        rows = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
        with self.lock:
            self.productions.append((index, start, done, threading.get_ident(), rows * self.images_per_sample))

    def record(self):
        """This epoch's figures: ``batches``, ``images`` (consumed by the steps), ``input_workers``,
        ``input_images`` and ``input_seconds`` (made, and the workers' busy seconds: Keras may make a batch
        twice, e.g. to learn shapes when a ``fit`` starts), the rates ``input_images_per_s_per_worker`` and
        ``input_images_per_s``, ``step_seconds`` and ``step_images_per_s``, ``input_wait_seconds``,
        ``wall_seconds`` and ``input_wait_fraction`` (of the wall time)."""
        with self.lock:
            productions = list(self.productions)
        steps = list(zip(self.begins, self.ends))
        images_of = {index: images for index, _, _, _, images in productions}
        images = sum(images_of.get(k, math.nan) for k in range(len(steps))) if self.metered else math.nan
        made = sum(p[4] for p in productions) if self.metered else math.nan
        busy = sum(p[2] - p[1] for p in productions) if self.metered else math.nan
        wall = self.idles[-1] - self.started if self.idles else 0.0
        if self.fetch_in_step:
            waited = _overlap(_union(self._waiting_in_steps(productions, steps)), steps)
            waited = waited if self.metered else math.nan
            step = sum(b - a for a, b in steps) - (0.0 if math.isnan(waited) else waited)
        else:
            ready = [self.started, *self.idles[:-1]]
            waited = sum(begin - r for (begin, _), r in zip(steps, ready))
            step = sum(b - a for a, b in steps)
        per_worker = _ratio(made, busy)
        return {
            "batches": len(steps), "images": images, "input_workers": self.workers, "input_images": made,
            "input_seconds": busy, "input_images_per_s_per_worker": per_worker,
            "input_images_per_s": per_worker * self.workers, "step_seconds": step,
            "step_images_per_s": _ratio(images, step), "input_wait_seconds": waited, "wall_seconds": wall,
            "input_wait_fraction": _ratio(waited, wall),
        }

    def totals(self):
        """This process's figures over the run (``throughput_totals`` of ``own``), or None before an epoch."""
        return throughput_totals(self.own) if self.own else None

    def _waiting_in_steps(self, productions, steps):
        """Intervals in which a step taking its batch inside (JAX, TensorFlow) waited for it: the training
        thread making a batch, and step ``k`` from its start (or the start of the making, if later: until then
        nothing was asked for, e.g. while a first step is traced) until another thread finished batch ``k``
        (its last making that finished within the step)."""
        own = [(start, done) for _, start, done, thread, _ in productions if thread == self.thread]
        made = {}  # batch index -> [(done, start), ...] by other threads
        for index, start, done, thread, _ in productions:
            if thread != self.thread:
                made.setdefault(index, []).append((done, start))
        waits = []
        for k, (begin, end) in enumerate(steps):
            finished = [item for item in made.get(k, ()) if item[0] <= end]
            if finished:
                done, start = max(finished)
                waits.append((max(begin, start), done))  # a batch begun after the step began was not late
        return own + [(a, b) for a, b in waits if b > a]


class MeteredBatches(keras.utils.PyDataset):
    """``batches`` (a ``PyDataset``), each ``batches[i]`` timed for a ``ThroughputMeter``; the same batches,
    workers and queue size."""

    def __init__(self, batches, meter):
        super().__init__(workers=batches.workers, use_multiprocessing=batches.use_multiprocessing,
                         max_queue_size=batches.max_queue_size)
        self.batches = batches
        self.meter = meter

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        start = time.perf_counter()
        batch = self.batches[index]
        self.meter.produced(index, start, time.perf_counter(), batch)
        return batch

    def on_epoch_begin(self):
        self.batches.on_epoch_begin()

    def on_epoch_end(self):
        self.batches.on_epoch_end()


class _StepEnd(keras.callbacks.Callback):
    """The first callback: a step ends when its outputs are on the host (JAX returns before computing)."""

    def __init__(self, meter):
        super().__init__()
        self.meter = meter

    def on_train_batch_end(self, batch, logs=None):
        for value in (logs or {}).values():
            keras.ops.convert_to_numpy(value)  # waits for the step's results
            break
        self.meter.ends.append(time.perf_counter())


class _StepClock(keras.callbacks.Callback):
    """The last callback: the epoch's start, each step's start, and when each step's callbacks are done."""

    def __init__(self, meter):
        super().__init__()
        self.meter = meter

    def on_epoch_begin(self, epoch, logs=None):
        self.meter.started = time.perf_counter()
        self.meter.thread = threading.get_ident()

    def on_train_batch_begin(self, batch, logs=None):
        self.meter.begins.append(time.perf_counter())

    def on_train_batch_end(self, batch, logs=None):
        self.meter.idles.append(time.perf_counter())


def _ratio(a, b):
    return a / b if b > 0 else math.nan


def _union(intervals):
    """The sorted, disjoint union of ``intervals`` ``[(a, b), ...]``."""
    merged = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _overlap(a, b):
    """Total length of the intersection of two sorted lists of disjoint intervals."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def throughput_totals(rows):
    """One record (``ThroughputMeter.record``'s keys) for several epochs' ``rows``: sums of the counts and
    seconds, rates recomputed from them; ``input_workers`` of the last row."""
    sums = {key: sum(row[key] for row in rows) for key in
            ("batches", "images", "input_images", "input_seconds", "step_seconds", "input_wait_seconds",
             "wall_seconds")}
    per_worker = _ratio(sums["input_images"], sums["input_seconds"])
    workers = rows[-1]["input_workers"] if rows else 1
    return {**sums, "input_workers": workers, "input_images_per_s_per_worker": per_worker,
            "input_images_per_s": per_worker * workers,
            "step_images_per_s": _ratio(sums["images"], sums["step_seconds"]),
            "input_wait_fraction": _ratio(sums["input_wait_seconds"], sums["wall_seconds"])}


def throughput_line(record):
    """``input 812 img/s/worker ×4 (3248 img/s) · step 2100 img/s · waited 3 %`` for a record."""
    return (f"input {_rate(record['input_images_per_s_per_worker'])} img/s/worker ×{record['input_workers']} "
            f"({_rate(record['input_images_per_s'])} img/s) · step {_rate(record['step_images_per_s'])} img/s · "
            f"waited {_percent(record['input_wait_fraction'])} %")


def input_bound(record):
    """Whether the step waited for batches ``INPUT_BOUND`` of the wall time or more."""
    return record["input_wait_fraction"] >= INPUT_BOUND


def _rate(value):
    return "nan" if not math.isfinite(value) else f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _percent(value):
    return "nan" if not math.isfinite(value) else f"{100 * value:.0f}"
