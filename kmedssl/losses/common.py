"""Building blocks shared by the losses of ``kmedssl.losses``.

- ``l2_normalize``: ``n(x) = x / max(||x||, 1e-12)`` along the last axis (SPEC §3).
- ``EXCLUDED_LOGIT``: the logit given to the pairs a log-sum-exp leaves out.
- ``validate_pair`` / ``validate_positive``: argument checks raising ValueError.
- ``tensor_arguments``: the tensors among some arguments (what ``kmedssl.ops.kernels.use_triton`` inspects).

The contrastive losses' one form and its dispatch are in ``kmedssl.losses.contrastive``.
"""

import numbers

from keras import ops

# Logit given to excluded pairs: finite (no inf - inf), and exp(EXCLUDED_LOGIT - max) underflows to exactly 0.
EXCLUDED_LOGIT = -1e9


def l2_normalize(x):
    """``n(x) = x / max(||x||_2, 1e-12)`` along the last axis, computed in float32.

    Written as ``x / sqrt(max(sum(x^2), 1e-24))`` so that a zero row gives zeros and a finite gradient.
    """
    x = ops.cast(x, "float32")
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared_norm, 1e-24))


def validate_pair(z_a, z_b, names=("z_a", "z_b")):
    """Check that two embedding batches are ``(B, D)`` with the same static shape."""
    shape_a, shape_b = tuple(z_a.shape), tuple(z_b.shape)
    if len(shape_a) != 2 or shape_a != shape_b:
        raise ValueError(
            f"Expected {names[0]} and {names[1]} of the same shape (B, D). "
            f"Received: {names[0]}.shape={shape_a}, {names[1]}.shape={shape_b}"
        )


def validate_positive(**values):
    """Raise ValueError for a Python number that is not > 0 (tensors are passed through unchecked)."""
    for name, value in values.items():
        if isinstance(value, numbers.Real) and not value > 0:
            raise ValueError(f"Expected {name} > 0. Received: {name}={value}")


def tensor_arguments(*values):
    """The values that are not Python numbers, e.g. a ``scale`` that may be a float or a tensor."""
    return [value for value in values if not isinstance(value, numbers.Real)]
