"""Training callbacks used by every run: the non-finite loss guard."""

import math

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
