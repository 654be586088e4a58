"""Training callbacks used by every run."""

import math

import keras
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training at the first non-finite loss, naming the epoch, step and loss terms."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {}
        for key, value in (logs or {}).items():
            if key.endswith("loss"):
                value = float(np.asarray(keras.ops.convert_to_numpy(value)))
                if not math.isfinite(value):
                    bad[key] = value
        if bad:
            self.model.stop_training = True
            terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            raise NonFiniteLossError(
                f"Non-finite loss at epoch {getattr(self, 'epoch', 0) + 1}, step {batch + 1}: {terms}. "
                f"Training stopped; try a lower learning rate or gradient clipping (--set gradient_clip=1.0)."
            )
