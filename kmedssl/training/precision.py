"""Mixed precision of a pretraining run: the recipe's ``precision`` as a Keras dtype policy (SPEC §3).

- ``"fp32"``: everything in float32 (the default).
- ``"bf16"``: Keras's ``"mixed_bfloat16"``: layers compute in bfloat16, variables and optimizer state stay float32.
- ``"fp16"``: ``"mixed_float16"`` the same way, and ``model.compile`` wraps the optimizer in Keras's
  ``LossScaleOptimizer`` (dynamic loss scaling), because float16 gradients underflow.

Every loss casts its inputs to float32 before it reduces (``kmedssl.losses``), so only the layers run in the low
precision. The policy is applied while the encoder and the method are built (a layer keeps the policy it was
built with) and restored afterwards, so a notebook's other models are not affected. The saved
``encoder.keras`` is a float32 copy: evaluation, export and ``--init`` read float32 weights whatever the run's
precision.
"""

import contextlib

import keras

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision in {tuple(PRECISIONS)}. Received: precision={precision!r}")
    return precision


@contextlib.contextmanager
def precision_scope(precision):
    """Layers (and models) built inside compute in ``precision`` (a key of ``PRECISIONS``)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[check_precision(precision)])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(encoder):
    """``encoder`` itself when it computes in float32, else the same architecture built under the float32
    policy with the same (float32) weights."""
    if encoder.dtype_policy.name == "float32":
        return encoder
    with precision_scope("fp32"):
        config = {key: value for key, value in encoder.get_config().items() if key != "dtype"}
        copy = type(encoder).from_config(config)
    copy.set_weights(encoder.get_weights())
    return copy
